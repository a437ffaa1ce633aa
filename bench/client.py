#!/usr/bin/env python3
"""bench/client.py - the small HTTP clients and the report of bench/run.

Standard library only (any python3). Subcommands:
  seq        N sequential keep-alive requests to one URL; latency percentiles
  idle       open N keep-alive connections, one request each, hold them until SIGTERM
  warm       look up lead<i>@example.com, i = FIRST.., 100 keys a request
  sync-body  write a POST /leads/sync body of COUNT new leads
  post       one POST of a file; wall time and the sync counts of the answer
  direct     POST envelope files straight to the sim, CONC in flight; wall time
  report     read the measurement files, print the table, write the JSON
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
import urllib.parse


def pct(values, p):
    """Nearest-rank percentile p (0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def headers_of(items):
    out = {}
    for h in items or []:
        name, _, value = h.partition(":")
        out[name.strip()] = value.strip()
    return out


def connect(url, timeout=120):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    path = u.path + ("?" + u.query if u.query else "")
    return c, path


def cmd_seq(a):
    body = open(a.post_file, "rb").read() if a.post_file else None
    hdrs = headers_of(a.header)
    conn, path = connect(a.url)
    lat, statuses = [], {}
    method = "POST" if body is not None else "GET"
    for i in range(a.warmup + a.n):
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            lat.append(dt * 1000.0)
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    conn.close()
    print(json.dumps({"n": a.n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                      "mean_ms": statistics.fmean(lat), "statuses": statuses}))


def cmd_idle(a):
    hdrs = "".join("%s\r\n" % h for h in a.header or [])
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (a.path, a.host, a.port, hdrs)).encode()
    socks, ok = [], 0
    for _ in range(a.n):
        s = socket.create_connection((a.host, a.port), timeout=30)
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
        socks.append(s)
    print("READY %d" % ok, flush=True)
    # Hold the connections until SIGTERM (or --hold seconds).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        time.sleep(a.hold)
    finally:
        for s in socks:
            s.close()


def cmd_warm(a):
    hdrs = headers_of(a.header)
    conn, path = connect(a.url)
    statuses, leads = {}, 0
    i = a.first
    end = a.first + a.count
    while i < end:
        keys = ",".join("lead%d@example.com" % k for k in range(i, min(end, i + a.per)))
        conn.request("GET", path + "?email=" + urllib.parse.quote(keys, safe=","), headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        if r.status == 200:
            leads += len(json.loads(body)["leads"])
        i += a.per
    conn.close()
    print(json.dumps({"statuses": statuses, "leads": leads}))


def cmd_sync_body(a):
    # Same leads as `translate envelope-sync` builds for the direct path.
    leads = [{"email": "%s%d@example.com" % (a.prefix, i),
              "attributes": {"FirstName": "First%d" % i, "LastName": "Last%d" % i,
                             "Company": "Company %d" % (i % 100)}}
             for i in range(a.first, a.first + a.count)]
    json.dump({"leads": leads, "dedup": True}, sys.stdout, separators=(",", ":"))


def cmd_post(a):
    body = open(a.file, "rb").read()
    hdrs = headers_of(a.header)
    hdrs.setdefault("Content-Type", "application/json")
    conn, path = connect(a.url, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    out = {"status": r.status, "seconds": dt}
    try:
        j = json.loads(data)
        for k in ("created", "updated", "failed", "not_sent"):
            if k in j:
                out[k] = j[k]
    except ValueError:
        pass
    print(json.dumps(out))


def cmd_direct(a):
    bodies = [open(f, "rb").read() for f in a.files]
    lat, statuses, lock = [], {}, threading.Lock()
    todo = list(range(len(bodies)))

    def worker():
        conn, path = connect(a.url, timeout=600)
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop(0)
            t0 = time.perf_counter()
            conn.request("POST", path, body=bodies[i],
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(min(a.concurrency, len(bodies)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    print(json.dumps({"calls": len(bodies), "concurrency": a.concurrency, "wall_s": wall,
                      "mean_call_s": statistics.fmean(lat), "max_call_s": max(lat),
                      "statuses": statuses}))


# ---- report -----------------------------------------------------------------

def load(res, name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        try:
            return json.load(f)
        except ValueError:
            return None


def reason(res, name):
    p = os.path.join(res, name + ".skip")
    if os.path.exists(p):
        return open(p).read().strip() or "not run"
    return "not run"


def fmt_rps(x):
    return "{:,.0f} req/s".format(x)


def cmd_report(a):
    res = a.res
    rows = []   # (measure, value, reference, ratio/target, verdict)
    data = {"meta": load(res, "meta") or {}, "raw": {}, "rows": []}
    for f in sorted(os.listdir(res)):
        if f.endswith(".json") and f != "meta.json":
            data["raw"][f[:-5]] = load(res, f[:-5])

    def row(measure, value, reference, target, verdict, **extra):
        rows.append((measure, value, reference, target, verdict))
        d = {"measure": measure, "value": value, "reference": reference,
             "ratio_target": target, "verdict": verdict}
        d.update(extra)
        data["rows"].append(d)

    def lat(w):
        return "p50 %.2f ms, p99 %.2f ms" % (w["p50_us"] / 1000.0, w["p99_us"] / 1000.0)

    mhd, ngx = load(res, "hits_mhd"), load(res, "hits_nginx")
    ref = []
    if mhd:
        ref.append("mhd %s (%s)" % (fmt_rps(mhd["rps"]), lat(mhd)))
    if ngx:
        ref.append("nginx %s (%s)" % (fmt_rps(ngx["rps"]), lat(ngx)))
    for mode, key, floor in (("in-process", "hits_gw_mem", 0.8), ("Redis", "hits_gw_redis", 0.5)):
        w = load(res, key)
        if not w:
            row("1. cache hits, %s" % mode, "not run: " + reason(res, key), "; ".join(ref) or "-",
                ">= %.1fx mhd" % floor, "not run")
            continue
        errs = sum(w["errors"].values())
        value = "%s (%s%s)" % (fmt_rps(w["rps"]), lat(w), ", %d errors" % errs if errs else "")
        if mhd:
            r = w["rps"] / mhd["rps"]
            row("1. cache hits, %s vs mhd" % mode, value, "mhd " + fmt_rps(mhd["rps"]),
                "%.2fx (>= %.1fx)" % (r, floor), "met" if r >= floor and errs == 0 else "missed",
                ratio=r)
        else:
            row("1. cache hits, %s vs mhd" % mode, value, "mhd not run: " + reason(res, "hits_mhd"),
                ">= %.1fx" % floor, "not run")
        if ngx:
            r = w["rps"] / ngx["rps"]
            row("1. cache hits, %s vs nginx" % mode, fmt_rps(w["rps"]), "nginx " + fmt_rps(ngx["rps"]),
                "%.2fx (no target)" % r, "info", ratio=r)
        p99 = w["p99_us"] / 1000.0
        row("1. cache-hit p99, %s" % mode, "%.2f ms" % p99,
            "mhd p99 %.2f ms" % (mhd["p99_us"] / 1000.0) if mhd else "-",
            "< 5 ms", "met" if p99 < 5.0 else "missed")
    if ngx and mhd:
        row("1. ceilings: mhd vs nginx", fmt_rps(mhd["rps"]), fmt_rps(ngx["rps"]),
            "%.2fx (no target)" % (mhd["rps"] / ngx["rps"]), "info")

    u = load(res, "uncached")
    if u:
        per_s = u["n200"] / (u["duration_us"] / 1e6)
        row("2. uncached distinct-key lookups, 200 clients",
            "%.1f answered/s (%d x 200, %d x 429, %d other, %d timeouts in %.0f s; %d SOAP calls)"
            % (per_s, u["n200"], u["n429"], u["nother"], u["errors"]["timeout"],
               u["duration_us"] / 1e6, u.get("soap_calls", -1)),
            "500 keys/s ceiling (100 keys x 100 calls / 20 s)",
            "%.2fx (>= 400/s)" % (per_s / 500.0), "met" if per_s >= 400 else "missed", per_s=per_s)
    else:
        row("2. uncached distinct-key lookups", "not run: " + reason(res, "uncached"),
            "500 keys/s", ">= 400/s", "not run")

    gm, dm = load(res, "miss_gw"), load(res, "miss_direct")
    if gm and dm:
        add50 = gm["p50_ms"] - dm["p50_ms"]
        add99 = gm["p99_ms"] - dm["p99_ms"]
        row("3. miss latency added, p50", "+%.3f ms (gateway p50 %.3f ms)" % (add50, gm["p50_ms"]),
            "sim direct p50 %.3f ms" % dm["p50_ms"], "< 1 ms", "met" if add50 < 1.0 else "missed",
            added_ms=add50)
        row("3. miss latency added, p99", "+%.3f ms (gateway p99 %.3f ms)" % (add99, gm["p99_ms"]),
            "sim direct p99 %.3f ms" % dm["p99_ms"], "(no target)", "info", added_ms=add99)
    else:
        row("3. miss latency added", "not run: " + reason(res, "miss_gw" if not gm else "miss_direct"),
            "sim direct", "< 1 ms p50", "not run")

    t = load(res, "translate")
    if t:
        r = t["ratio_median"]
        row("4. translation, 1000 leads (%d attrs, %.1f MB)" % (t["attributes"], t["bytes"] / 1e6),
            "%.2f ms/run (median of %d)" % (t["translate_ms_median"], t["iterations"]),
            "libxml2 parse %.2f ms/run" % t["parse_ms_median"], "%.2fx (<= 2.5x)" % r,
            "met" if r <= 2.5 else "missed", ratio=r)
    else:
        row("4. translation", "not run: " + reason(res, "translate"), "libxml2 parse", "<= 2.5x",
            "not run")
    ti = load(res, "translate_ir")
    if ti:
        r = ti["translate_ir"] / ti["parse_ir"]
        row("4. translation, instructions/run (callgrind)", "{:,} Ir".format(ti["translate_ir"]),
            "libxml2 parse {:,} Ir".format(ti["parse_ir"]), "%.2fx (<= 2.5x)" % r,
            "met" if r <= 2.5 else "missed", ratio=r)
    else:
        row("4. translation, instructions/run", "not run: " + reason(res, "translate_ir"),
            "libxml2 parse", "<= 2.5x", "not run")

    ci = load(res, "hit_ir")
    if ci:
        per = (ci["total_n"] - ci["total_0"]) / ci["n"]
        row("5. instructions per cache-hit request",
            "{:,.0f} Ir/request (total {:,} with {} hits, {:,} with 0)".format(
                per, ci["total_n"], ci["n"], ci["total_0"]),
            "mhd ceiling {:,.0f} Ir/request".format((ci["mhd_n"] - ci["mhd_0"]) / ci["n"])
            if ci.get("mhd_n") else "-",
            "%.2fx mhd (no target)" % (per / ((ci["mhd_n"] - ci["mhd_0"]) / ci["n"]))
            if ci.get("mhd_n") else "(no target)", "info", ir_per_request=per)
    else:
        row("5. instructions per cache-hit request", "not run: " + reason(res, "hit_ir"), "-",
            "(no target)", "not run")
    rss = load(res, "rss")
    if rss:
        def mb(kb):
            return "%.1f MB" % (kb / 1024.0)
        row("5. RSS idle", "VmRSS %s, VmHWM %s" % (mb(rss["idle"]["VmRSS"]), mb(rss["idle"]["VmHWM"])),
            "mhd ceiling idle VmRSS %s" % mb(rss["mhd_idle"]["VmRSS"]) if rss.get("mhd_idle") else "-",
            "(no target)", "info")
        c = rss.get("conns")
        if c:
            hwm = c["VmHWM"] / 1024.0
            row("5. RSS, %d idle keep-alive connections" % c["n"],
                "VmRSS %s, VmHWM %s (%d answered 200)" % (mb(c["VmRSS"]), mb(c["VmHWM"]), c["ok"]),
                "mhd ceiling VmHWM %s" % mb(rss["mhd_conns"]["VmHWM"]) if rss.get("mhd_conns") else "-",
                "<= 60 MB", "met" if hwm <= 60 and c["ok"] == c["n"] else "missed", mb=hwm)
        k = rss.get("keys")
        if k:
            row("5. RSS, %d cached keys" % k["n"],
                "VmRSS %s, VmHWM %s (%d leads cached)" % (mb(k["VmRSS"]), mb(k["VmHWM"]), k["leads"]),
                "-", "(no target)", "info")
    else:
        row("5. RSS", "not run: " + reason(res, "rss"), "-", "<= 60 MB with 5,000 conns", "not run")

    for key, label in (("sync", "sim at full speed"), ("sync_slow", "sim +%s ms a call")):
        s = load(res, key)
        if s:
            r = s["seconds"] / s["floor_s"]
            row("6. sync of %d leads, %s (%d calls of <= %d)"
                % (s["leads"], label % s["sim_latency_ms"] if "%" in label else label, s["calls"],
                   s["batch"]),
                "%.2f s (HTTP %d; created %s, updated %s, failed %s, not_sent %s; peak %s in flight)"
                % (s["seconds"], s["status"], s.get("created"), s.get("updated"), s.get("failed"),
                   s.get("not_sent"), s.get("sim_peak_concurrency")),
                "floor %.2f s = %s" % (s["floor_s"], s["floor_formula"]),
                "%.2fx (<= 1.10x)" % r, "met" if r <= 1.10 and s["status"] == 200 else "missed",
                ratio=r)
        else:
            row("6. sync of 10,000 leads, %s" % (label % "500" if "%" in label else label),
                "not run: " + reason(res, key), "rate-limit floor", "<= 1.10x", "not run")

    heads = ("measure", "value", "reference", "ratio/target", "verdict")
    if a.markdown:
        print("| " + " | ".join(heads) + " |")
        print("|" + "---|" * len(heads))
        for r in rows:
            print("| " + " | ".join(x.replace("|", "/") for x in r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        w = [min(x, 70) for x in w]
        line = "  ".join(h.ljust(w[i]) for i, h in enumerate(heads))
        print(line)
        print("-" * len(line))
        for r in rows:
            print("  ".join(x.ljust(w[i]) for i, x in enumerate(r)))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seq")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, default=500)
    s.add_argument("--warmup", type=int, default=20)
    s.add_argument("--header", action="append")
    s.add_argument("--post-file")
    s.set_defaults(fn=cmd_seq)
    s = sub.add_parser("idle")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--n", type=int, default=5000)
    s.add_argument("--path", default="/healthz")
    s.add_argument("--hold", type=float, default=600.0)
    s.add_argument("--header", action="append")
    s.set_defaults(fn=cmd_idle)
    s = sub.add_parser("warm")
    s.add_argument("--url", required=True)
    s.add_argument("--first", type=int, default=1)
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--per", type=int, default=100)
    s.add_argument("--header", action="append")
    s.set_defaults(fn=cmd_warm)
    s = sub.add_parser("sync-body")
    s.add_argument("--prefix", required=True)
    s.add_argument("--first", type=int, default=1)
    s.add_argument("--count", type=int, default=10000)
    s.set_defaults(fn=cmd_sync_body)
    s = sub.add_parser("post")
    s.add_argument("--url", required=True)
    s.add_argument("--file", required=True)
    s.add_argument("--header", action="append")
    s.set_defaults(fn=cmd_post)
    s = sub.add_parser("direct")
    s.add_argument("--url", required=True)
    s.add_argument("--concurrency", type=int, default=10)
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_direct)
    s = sub.add_parser("report")
    s.add_argument("--res", required=True)
    s.add_argument("--out")
    s.add_argument("--markdown", action="store_true")
    s.set_defaults(fn=cmd_report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
