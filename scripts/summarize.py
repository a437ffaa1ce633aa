#!/usr/bin/python3
"""Sums test results over every suite and prints the closing line.

Usage: summarize.py [--strict] [--expect FILE] [--write-expected FILE] LABEL=FILE[@RC] ...

  FILE ending in .json: a meson testlog.json. cmocka programs speak TAP, so
  each "ok N"/"not ok N" line of a test's output is one case; a program with
  no TAP lines counts as one case by its result.
  FILE ending in .xml: a pytest JUnit XML report.
  @RC: the runner's exit status. A runner that exited non-zero without a
  failed case is one failure ("exited RC"): a crash, an internal error, a
  collection error or "no tests ran" never passes quietly.

  --expect FILE: how many cases each test program (meson test) or test module
  (pytest file) runs, per label: "LABEL<TAB>UNIT<TAB>N" lines. Cases a unit
  did not report (a program that skipped itself whole, a module that was not
  collected) count as skipped, one by one, so the summary says how many cases
  did not run rather than "1 skipped" for a whole program.
  --strict: nothing may skip (CI, which has ../shared and Redis): every case
  that did not run is a failure, named.
  --write-expected FILE: writes the counts of this run as the new expectation.

Prints one line per label, then "N passed, N failed, N skipped".
Exit status: 1 if anything failed or a file is missing, else 0.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET

TAP = re.compile(r"^(not ok|ok)\b[^#]*(#\s*(SKIP|skip|Skip)\b)?")


class Unit:
    """Counts of one test program or test module."""

    def __init__(self):
        self.p = self.f = self.s = 0
        self.failed = []

    def reported(self):
        return self.p + self.f + self.s


def from_meson(path):
    """{unit name: Unit} from a meson testlog.json."""
    units = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            t = json.loads(line)
            name = t["name"].split(":", 1)[-1].strip()
            u = units.setdefault(name, Unit())
            out = t.get("stdout") or t.get("stdo") or ""
            cases = [m for m in (TAP.match(l) for l in out.splitlines()) if m]
            result = t.get("result", "")
            if cases:
                for m in cases:
                    if m.group(3):
                        u.s += 1
                    elif m.group(1) == "ok":
                        u.p += 1
                    else:
                        u.f += 1
                        u.failed.append(name)
                # a crash after some cases passed still fails the program
                if result not in ("OK", "SKIP", "EXPECTEDFAIL") and not any(
                        m.group(1) == "not ok" for m in cases):
                    u.f += 1
                    u.failed.append(name + " (exit)")
            elif result == "OK":
                u.p += 1
            elif result == "SKIP":
                u.s += 1
            else:
                u.f += 1
                u.failed.append(name)
    return units


def from_junit(path):
    """{unit (test module) name: Unit} from a pytest JUnit XML report."""
    units = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        # tests.server.test_server.TestX -> tests/server/test_server
        parts = classname.split(".")
        mod = [p for p in parts if p.startswith("test_")]
        unit = "/".join(parts[:parts.index(mod[0]) + 1]) if mod else classname
        u = units.setdefault(unit, Unit())
        kinds = {c.tag for c in case}
        if "failure" in kinds or "error" in kinds:
            u.f += 1
            u.failed.append(classname + "::" + case.get("name", ""))
        elif "skipped" in kinds:
            u.s += 1
        else:
            u.p += 1
    return units


def read_expected(path):
    exp = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            label, unit, n = line.split("\t")
            exp.setdefault(label, {})[unit] = int(n)
    return exp


def main(argv):
    strict = False
    expect_path = write_path = None
    args = []
    it = iter(argv)
    for a in it:
        if a == "--strict":
            strict = True
        elif a == "--expect":
            expect_path = next(it)
        elif a == "--write-expected":
            write_path = next(it)
        else:
            args.append(a)
    expected = read_expected(expect_path) if expect_path else {}

    tp = tf = ts = 0
    bad = False
    observed = []
    for arg in args:
        label, _, spec = arg.partition("=")
        path, _, rc = spec.partition("@")
        try:
            units = (from_junit if path.endswith(".xml") else from_meson)(path)
        except (OSError, ValueError, ET.ParseError) as e:
            print(f"{label}: no results ({e})")
            bad = True
            continue
        p = f = s = 0
        failed = []
        not_run = []
        for name in sorted(set(units) | set(expected.get(label, {}))):
            u = units.get(name, Unit())
            want = expected.get(label, {}).get(name, 0)
            missing = max(0, want - u.reported())
            if u.s or missing:
                not_run.append(f"{name}: {u.s + missing} of {max(want, u.reported())} did not run")
            p, f, s = p + u.p, f + u.f, s + u.s + missing
            failed += u.failed
            if name in units:
                observed.append((label, name, u.reported()))
        if rc not in ("", "0") and f == 0:
            f += 1
            failed.append(f"the runner exited {rc} with no failed case")
        if strict and s:
            failed += [f"did not run (nothing may skip here): {n}" for n in not_run]
            f, s = f + s, 0
            not_run = []
        print(f"{label}: {p} passed, {f} failed, {s} skipped")
        for name in failed[:30]:
            print(f"    failed: {name}")
        for line in not_run:
            print(f"    skipped: {line}")
        tp, tf, ts = tp + p, tf + f, ts + s
    if write_path:
        with open(write_path, "w", encoding="utf-8") as fh:
            fh.write("# Cases each test program (meson) or module (pytest) runs, per stage:\n"
                     "# LABEL<TAB>UNIT<TAB>N. Written by scripts/summarize.py --write-expected\n"
                     "# from a full run; raise a count when you add cases, lower it only\n"
                     "# when you remove them on purpose.\n")
            for label, name, n in observed:
                fh.write(f"{label}\t{name}\t{n}\n")
    print(f"{tp} passed, {tf} failed, {ts} skipped")
    return 1 if (tf or bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
