#!/usr/bin/python3
"""Sums test results over every suite and prints the closing line.

Usage: summarize.py LABEL=FILE ...
  FILE ending in .json: a meson testlog.json. cmocka programs speak TAP, so
  each "ok N"/"not ok N" line of a test's output is one case; a test program
  with no TAP lines counts as one case by its exit status.
  FILE ending in .xml: a pytest JUnit XML report.
Prints one line per label, then "N passed, N failed, N skipped".
Exit status: 1 if anything failed or a file is missing, else 0.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET

TAP = re.compile(r"^(not ok|ok)\b[^#]*(#\s*(SKIP|skip|Skip)\b)?")


def from_meson(path):
    p = f = s = 0
    failed = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            t = json.loads(line)
            out = t.get("stdout") or t.get("stdo") or ""
            cases = [TAP.match(l) for l in out.splitlines()]
            cases = [m for m in cases if m]
            result = t.get("result", "")
            if cases:
                for m in cases:
                    if m.group(3):
                        s += 1
                    elif m.group(1) == "ok":
                        p += 1
                    else:
                        f += 1
                        failed.append(t["name"])
                # a crash after some cases passed still fails the program
                if result not in ("OK", "SKIP", "EXPECTEDFAIL") and not any(
                        m.group(1) == "not ok" for m in cases):
                    f += 1
                    failed.append(t["name"] + " (exit)")
            elif result == "OK":
                p += 1
            elif result == "SKIP":
                s += 1
            else:
                f += 1
                failed.append(t["name"])
    return p, f, s, failed


def from_junit(path):
    p = f = s = 0
    failed = []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        kinds = {c.tag for c in case}
        if "failure" in kinds or "error" in kinds:
            f += 1
            failed.append(case.get("classname", "") + "::" + case.get("name", ""))
        elif "skipped" in kinds:
            s += 1
        else:
            p += 1
    return p, f, s, failed


def main(args):
    tp = tf = ts = 0
    bad = False
    for arg in args:
        label, _, path = arg.partition("=")
        try:
            p, f, s, failed = (from_junit if path.endswith(".xml") else from_meson)(path)
        except (OSError, ValueError, ET.ParseError) as e:
            print(f"{label}: no results ({e})")
            bad = True
            continue
        print(f"{label}: {p} passed, {f} failed, {s} skipped")
        for name in failed[:20]:
            print(f"    failed: {name}")
        tp, tf, ts = tp + p, tf + f, ts + s
    print(f"{tp} passed, {tf} failed, {ts} skipped")
    return 1 if (tf or bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
