"""Soak of marketo-gateway: MINUTES of mixed load under faults and Redis restarts.

Started by tests/soak/run. One redis-server, one marketo-sim (5,000 leads,
Marketo's limits opened to 1000 calls / 20 s) and one gateway with redis.url
set, all on 127.0.0.1 with free ports, in a temp dir. The sim fails 10% of
accepted calls with fault 20011 and adds 0..300 ms of jitter, with a latency
spike episode (1.5-2.5 s) every 90 s. Redis is killed (-9) at 1/3 and 2/3 of
the run and restarted on the same port 5 s later, and stopped (SIGSTOP) for
2 s at half time. From 0.35 to 0.7 of the run, 40 slowloris clients send a
header byte every 3 s (the gateway must cut them at its header deadline while
everything else goes on).

Load: 8 lookup threads (mostly cache hits on a hot set, some misses with
distinct e-mails, some by id, some staticList page walks with cursors) and
2 sync threads (batches of 1-50: updates of lead<i>@example.com, each thread
owning its own half of the leads, and creates of new soak<n>@example.com,
every write carrying a unique Company "soak-<seq>").

Accounting: every sync result is recorded per e-mail. CREATED/UPDATED: the
e-mail's expected Company becomes exactly that value (and its id that id);
FAILED or NOT_SENT: unchanged; NOT_SENT "may have been applied": either.
At the end, with faults cleared, every touched e-mail is looked up through
the gateway with Cache-Control: no-cache and compared.

Pass criteria (each printed; exit 1 if any fails): gateway RSS at the end
within 10% of its level after warm-up, no growth in open fds (+8), no crash
(gateway and sim alive throughout, both exit 0 on SIGTERM, no sanitizer
report in their stderr), the slow clients cut (at least once each when their
window is 30 s or longer), every sync result accounted for, every confirmed
write visible to the next lookup, and the error answers (Soak.error_verdicts,
where each bound is derived): no 500 and no connection error, 502s under a
bound derived from the injected fault rate, no 503/504, and reads after
writes that got no 200 only as backpressure (429/503) during a latency spike
or Redis outage (a few outside) or as an injected 502.

Processes are started and stopped by tests/pylib/mgw_harness.py.
"""
import argparse
import collections
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import mgw_harness as harness  # noqa: E402

USER_ID = "bigcorp1_461839624B16E06BA2D663"
ENC_KEY = "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66"
API_KEY = "soak-key"
SIM_LEADS = 5000
LOOKUP_THREADS = 8
SYNC_THREADS = 2
SAMPLE_EVERY_S = 10.0
FD_TOLERANCE = 8
RSS_TOLERANCE = 0.10
# Requests per second that need Marketo (misses, pages, by-id), shared by the
# lookup threads; syncs come on top. Below the 50 calls/s budget, so 429s
# mostly come from the Redis outages (fallback share) and the latency spikes.
UPSTREAM_RPS = 25.0
HOT_SET = 300
ORIG = "<original>"      # the lead's seeded Company (never a soak- value)
ABSENT = "<absent>"      # no such lead
# The sim fails this share of accepted calls with fault 20011 (a Marketo-side
# internal error), which the gateway retries; after RETRY_ATTEMPTS faulted
# attempts in a row a lookup answers 502.
FAULT_RATE = 0.1
RETRY_ATTEMPTS = 3
QUEUE_TIMEOUT_MS = 10000          # ratelimit.queue_timeout_ms (the default, made explicit)
SPIKE_S = 10.0                    # length of one latency spike episode
REDIS_DOWN_S = 5.0                # Redis is restarted this long after its kill -9
REDIS_PAUSE_S = 2.0               # Redis is stopped (SIGSTOP) this long at half time
SLOW_CLIENTS = 40                 # slowloris connections, from 0.35 to 0.7 of the run
SLOW_BYTE_EVERY_S = 3.0           # one header byte this often
FRESH_TRIES = 3                   # reads of a confirmed write before it counts as unreadable


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def proc_sample(pid):
    """(VmRSS in kB, open fd count) of a live process, or (None, None)."""
    rss = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None, None
    return rss, fds


class Redis(harness.Redis):
    """A redis-server without persistence on a fixed port; kill -9 and restart."""

    def __init__(self, tmp):
        super().__init__(workdir=tmp, log_name="redis.log")

    def kill9(self):
        self.kill()


class Sim(harness.Sim):
    """marketo-sim and its admin API."""

    def __init__(self, binary, tmp):
        super().__init__(USER_ID, ENC_KEY, leads=SIM_LEADS, binary=binary, workdir=tmp,
                         log_name="sim.log",
                         extra=["--calls-per-window", "1000", "--window-seconds", "20",
                                "--max-concurrent", "10", "--daily-quota", "0"])

    def admin_json(self, path, body=None):
        r = self.admin(path, body)
        return r.json() if r.text.strip() else None

    def set_faults(self, latency_ms, jitter_ms, seed):
        for i, op in enumerate(("getLead", "getMultipleLeads", "syncLead", "syncMultipleLeads")):
            self.admin("/_sim/faults", {"operation": op, "error_rate": FAULT_RATE,
                                        "fault_code": 20011,
                                        "latency_ms": latency_ms, "jitter_ms": jitter_ms,
                                        "seed": seed * 10 + i})

class Gateway(harness.Gateway):
    """marketo-gateway with the settings of the soak."""

    def __init__(self, binary, tmp, endpoint, redis_port):
        super().__init__({
            "marketo.soap_endpoint": endpoint, "marketo.user_id": USER_ID,
            "marketo.encryption_key": ENC_KEY,
            "marketo.retry_max_attempts": RETRY_ATTEMPTS,
            "gateway.listen": "127.0.0.1:0", "gateway.threads": "4",
            "auth.api_keys": API_KEY,
            "redis.url": "redis://127.0.0.1:%d/0" % redis_port,
            "ratelimit.calls_per_window": "1000", "ratelimit.window_seconds": "20",
            "ratelimit.max_concurrent": "10", "ratelimit.daily_quota": "10000000",
            "ratelimit.queue_timeout_ms": QUEUE_TIMEOUT_MS,
        }, binary=binary, workdir=tmp, log_name="gateway.log")

    def session(self):
        s = requests.Session()
        s.headers["X-API-Key"] = API_KEY
        return s


class Stats:
    """Thread-safe counters: status per request kind, X-Cache, latencies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.defaultdict(collections.Counter)
        self.xcache = collections.Counter()
        self.lat = collections.defaultdict(list)
        self.errors = collections.Counter()

    def record(self, kind, status, seconds, xcache=None):
        with self.lock:
            self.status[kind][status] += 1
            if xcache:
                self.xcache[xcache] += 1
            lat = self.lat[kind]
            if len(lat) < 200000:
                lat.append(seconds)

    def error(self, what):
        with self.lock:
            self.errors[what] += 1


class Ledger:
    """What the gateway reported for every lead written, per lower-cased e-mail."""

    def __init__(self):
        self.lock = threading.Lock()
        self.expect = {}          # email -> set of acceptable Company values
        self.ids = {}             # email -> id the gateway reported
        self.results = collections.Counter()   # sync result status -> count
        self.errors = collections.Counter()    # error text of FAILED/NOT_SENT -> count
        self.anomalies = []       # result-shape problems (index order, count, id changes)
        self.maybe = 0            # leads left "either" by a may-have-been-applied NOT_SENT
        self.whole_failures = collections.Counter()  # non-200 sync replies by status
        self.created_ok = 0       # CREATED results
        self.creates_maybe = 0    # creates sent whose outcome is "either"

    def touch(self, email, initial):
        if email not in self.expect:
            self.expect[email] = {initial}

    def apply(self, batch, status_code, body):
        """Records one sync reply; batch is [(email, company, is_create)].
        Returns [(email, company)] confirmed by this reply."""
        confirmed = []
        with self.lock:
            for email, _, create in batch:
                self.touch(email, ABSENT if create else ORIG)
            if status_code == 429:
                # every batch refused by the outbound budget: nothing sent
                self.whole_failures[429] += 1
                self.results["NOT_SENT(429)"] += len(batch)
                return confirmed
            if status_code != 200 or not isinstance(body, dict) or "results" not in body:
                self.whole_failures[status_code] += 1
                for email, company, create in batch:
                    self.expect[email].add(company)
                    self.maybe += 1
                    if create:
                        self.creates_maybe += 1
                return confirmed
            results = body["results"]
            if len(results) != len(batch):
                self.anomalies.append("reply has %d results for %d leads"
                                      % (len(results), len(batch)))
            for i, (email, company, create) in enumerate(batch):
                res = results[i] if i < len(results) else {}
                if res.get("index") != i:
                    self.anomalies.append("result %d has index %r" % (i, res.get("index")))
                st = res.get("status")
                self.results[st] += 1
                if st in ("CREATED", "UPDATED"):
                    rid = res.get("id")
                    if not isinstance(rid, int) or rid <= 0:
                        self.anomalies.append("%s without an id" % st)
                    old = self.ids.get(email)
                    if old is not None and rid != old:
                        self.anomalies.append("id of one e-mail changed %r -> %r" % (old, rid))
                    self.ids[email] = rid
                    if st == "CREATED":
                        self.created_ok += 1
                        if not create:
                            self.anomalies.append("update of an existing lead reported CREATED")
                    self.expect[email] = {company}
                    confirmed.append((email, company))
                elif st == "NOT_SENT":
                    err = res.get("error", "")
                    self.errors["NOT_SENT: " + err] += 1
                    if "may have been applied" in err:
                        self.expect[email].add(company)
                        self.maybe += 1
                        if create:
                            self.creates_maybe += 1
                else:
                    self.errors["%s: %s" % (st, res.get("error", ""))] += 1
        return confirmed


class Soak:
    def __init__(self, args):
        self.args = args
        self.duration = args.minutes * 60.0
        self.warmup = min(120.0, 0.2 * self.duration)
        self.slow_lock = threading.Lock()
        self.slow_cuts = 0        # slow connections the gateway closed
        self.slow_408 = 0         # ... of which with a 408 answer
        self.stop_load = threading.Event()
        self.stats = Stats()
        self.ledger = Ledger()
        self.samples = []         # (t, rss_kb, fds, sim_rss_kb, sim_fds)
        self.traffic = []         # per sample: (requests, HIT, BYPASS, 429s, 5xx) so far
        self.crashes = []
        self.stale = []           # confirmed writes a following lookup did not see
        self.fresh_checks = 0
        self.fresh_non200 = []    # (t, status) of every non-200 read-after-write answer
        self.fresh_unread = []    # (t, e-mail, last status): no 200 in FRESH_TRIES reads
        self.disturbed = []       # [start, end] (s): a latency spike or Redis outage and
        #                           the queue timeout after it, when a 429 is legitimate
        self.seq_lock = threading.Lock()
        self.seq = 0
        self.create_n = 0
        self.bucket_lock = threading.Lock()
        self.bucket = 0.0
        self.bucket_t = time.monotonic()
        self.events = []
        self.t0 = None

    # ---- helpers -------------------------------------------------------------
    def next_seq(self):
        with self.seq_lock:
            self.seq += 1
            return self.seq

    def next_create(self):
        with self.seq_lock:
            self.create_n += 1
            return self.create_n

    def take_upstream_token(self):
        """Token bucket for lookups that need Marketo (UPSTREAM_RPS, burst 5)."""
        with self.bucket_lock:
            now = time.monotonic()
            self.bucket = min(5.0, self.bucket + (now - self.bucket_t) * UPSTREAM_RPS)
            self.bucket_t = now
            if self.bucket >= 1.0:
                self.bucket -= 1.0
                return True
            return False

    def elapsed(self):
        return time.monotonic() - self.t0

    def event(self, msg):
        self.events.append((round(self.elapsed(), 1), msg))
        log(msg)

    def timed(self, sess, kind, method, url, **kw):
        """One request; records its status (or the exception) and returns the response."""
        t = time.monotonic()
        try:
            r = sess.request(method, url, timeout=kw.pop("timeout", 90), **kw)
        except requests.RequestException as e:
            self.stats.record(kind, "conn-error", time.monotonic() - t)
            self.stats.error("%s: %s" % (kind, type(e).__name__))
            return None
        self.stats.record(kind, r.status_code, time.monotonic() - t, r.headers.get("X-Cache"))
        return r

    # ---- load ----------------------------------------------------------------
    def lookup_worker(self, idx):
        rng = random.Random(1000 + idx)
        sess = self.gw.session()
        base = self.gw.base
        miss_i = idx
        while not self.stop_load.is_set():
            p = rng.random()
            if p < 0.12 and self.take_upstream_token():
                if rng.random() < 0.15:
                    # a page walk of Demo.All with cursors (1-4 pages)
                    r = self.timed(sess, "page", "GET", base + "/leads",
                                   params={"staticList": "Demo.All",
                                           "limit": rng.choice((50, 100, 200)),
                                           "fields": "Company,FirstName"})
                    pages = rng.randint(1, 4)
                    while r is not None and r.status_code == 200 and pages > 1 \
                            and not self.stop_load.is_set():
                        cur = r.json().get("next_cursor")
                        if not cur:
                            break
                        self.take_upstream_token()
                        r = self.timed(sess, "page", "GET", base + "/leads",
                                       params={"cursor": cur})
                        pages -= 1
                elif rng.random() < 0.2:
                    i = rng.randint(1, SIM_LEADS)
                    self.timed(sess, "by-id", "GET", base + "/leads/%d" % (1000000 + i))
                else:
                    # misses: distinct e-mails, some of them not in the store
                    emails = []
                    for _ in range(rng.randint(1, 5)):
                        miss_i += LOOKUP_THREADS
                        if rng.random() < 0.2:
                            emails.append("nobody%d@example.com" % miss_i)
                        else:
                            emails.append("lead%d@example.com"
                                          % (HOT_SET + 1 + miss_i % (SIM_LEADS - HOT_SET)))
                    self.timed(sess, "miss", "GET", base + "/leads",
                               params={"email": ",".join(emails)})
            else:
                n = rng.randint(1, 3)
                emails = ",".join("lead%d@example.com" % rng.randint(1, HOT_SET)
                                  for _ in range(n))
                self.timed(sess, "hot", "GET", base + "/leads", params={"email": emails})
            time.sleep(0.01)
        sess.close()

    def sync_worker(self, idx):
        rng = random.Random(2000 + idx)
        sess = self.gw.session()
        base = self.gw.base
        mine_created = []   # e-mails of soak leads this thread created (confirmed)
        while not self.stop_load.is_set():
            size = rng.randint(1, 50)
            batch = []
            seen = set()
            for _ in range(size):
                p = rng.random()
                if p < 0.3:
                    email = "soak%d@example.com" % self.next_create()
                    create = True
                elif p < 0.38 and mine_created:
                    email = rng.choice(mine_created)
                    create = False
                else:
                    # this thread's half of the seeded leads: no two threads write one lead
                    i = rng.randrange(1 + idx, SIM_LEADS + 1, SYNC_THREADS)
                    email = "lead%d@example.com" % i
                    create = False
                if email in seen:
                    continue
                seen.add(email)
                batch.append((email, "soak-%d" % self.next_seq(), create))
            body = {"leads": [{"email": e, "attributes": {"Company": c}} for e, c, _ in batch],
                    "dedup": True}
            r = self.timed(sess, "sync", "POST", base + "/leads/sync", json=body, timeout=120)
            if r is None:
                code, js = "conn-error", None
            else:
                code = r.status_code
                try:
                    js = r.json()
                except ValueError:
                    js = None
            confirmed = self.ledger.apply(batch, code, js)
            created = {e for e, _, c in batch if c}
            for e, _ in confirmed:
                if e in created:
                    mine_created.append(e)
            # freshness: a confirmed write must be what the next lookup returns
            for e, c in rng.sample(confirmed, min(2, len(confirmed))):
                # Every answer other than 200 is counted (fresh_non200) and
                # judged in the report; a transient one (429, 502, 503) is
                # read again, since the write must still be what any later
                # read returns (this thread is the only writer of e).
                for attempt in range(FRESH_TRIES):
                    rr = self.timed(sess, "fresh", "GET", base + "/leads",
                                    params={"email": e, "fields": "Company"})
                    code = rr.status_code if rr is not None else "conn-error"
                    if code == 200:
                        break
                    with self.stats.lock:
                        self.fresh_non200.append((round(self.elapsed(), 1), code))
                    if code not in (429, 502, 503):
                        break
                    time.sleep(min(2.0, 0.5 * (attempt + 1)))
                if code != 200:
                    with self.stats.lock:
                        self.fresh_unread.append((round(self.elapsed(), 1), e, code))
                    continue
                leads = rr.json().get("leads", [])
                got = leads[0].get("attributes", {}).get("Company") if leads else ABSENT
                self.fresh_checks += 1
                if got != c:
                    self.stale.append((round(self.elapsed(), 1), e, c, got,
                                       rr.headers.get("X-Cache")))
            time.sleep(rng.uniform(0.05, 0.3))
        sess.close()

    # ---- monitors ------------------------------------------------------------
    def sampler(self):
        next_t = 0.0
        while not self.stop_load.is_set():
            t = self.elapsed()
            if t >= next_t:
                for name, p in (("gateway", self.gw.proc), ("sim", self.sim.proc)):
                    if p.poll() is not None and not any(c[1] == name for c in self.crashes):
                        self.crashes.append((round(t, 1), name, p.returncode))
                        self.event("CRASH: %s exited with %s" % (name, p.returncode))
                rss, fds = proc_sample(self.gw.proc.pid)
                srss, sfds = proc_sample(self.sim.proc.pid)
                with self.stats.lock:
                    snap = (sum(sum(c.values()) for c in self.stats.status.values()),
                            self.stats.xcache["HIT"], self.stats.xcache["BYPASS"],
                            sum(c[429] for c in self.stats.status.values()),
                            sum(n for c in self.stats.status.values() for k, n in c.items()
                                if isinstance(k, int) and k >= 500))
                if rss is not None:
                    self.samples.append((round(t, 1), rss, fds, srss, sfds))
                    self.traffic.append(snap)
                next_t += SAMPLE_EVERY_S
            self.stop_load.wait(0.5)

    def chaos(self):
        """Redis kills at 1/3 and 2/3, a Redis stall at 1/2, latency spikes
        every 90 s."""
        plan = [(self.duration / 3, "redis"), (self.duration / 2, "pause"),
                (2 * self.duration / 3, "redis")]
        t = 45.0
        while t < self.duration - 20:
            plan.append((t, "spike"))
            t += 90.0
        plan.sort()
        episode = 1
        for at, what in plan:
            while self.elapsed() < at:
                if self.stop_load.wait(0.2):
                    return
            window = [self.elapsed(), None]
            self.disturbed.append(window)
            try:
                if what == "redis":
                    self.redis.kill9()
                    self.event("redis killed (-9)")
                    if self.stop_load.wait(REDIS_DOWN_S):
                        self.redis.restart()
                        return
                    self.redis.restart()
                    self.event("redis restarted on port %d" % self.redis.port)
                elif what == "pause":
                    os.kill(self.redis.proc.pid, signal.SIGSTOP)
                    self.event("redis stopped (SIGSTOP) for %.0f s" % REDIS_PAUSE_S)
                    self.stop_load.wait(REDIS_PAUSE_S)
                    os.kill(self.redis.proc.pid, signal.SIGCONT)
                    self.event("redis continued")
                else:
                    episode += 1
                    self.sim.set_faults(1500, 1000, episode)
                    self.event("latency spike on (1500 + 0..1000 ms)")
                    if self.stop_load.wait(SPIKE_S):
                        return
                    self.sim.set_faults(0, 300, episode * 7)
                    self.event("latency spike off")
            finally:
                # requests queued during the episode may still time out in
                # the queue up to ratelimit.queue_timeout_ms after it
                window[1] = self.elapsed() + QUEUE_TIMEOUT_MS / 1000.0

    def slow_client(self, idx):
        """A slowloris: one header byte every SLOW_BYTE_EVERY_S on its own
        connection, between 0.35 and 0.7 of the run; counts the times the
        gateway cut it (gateway.header_timeout_ms) and reconnects."""
        start = max(0.35 * self.duration, self.warmup + 4 * SAMPLE_EVERY_S)
        end = 0.7 * self.duration
        while self.elapsed() < start:
            if self.stop_load.wait(0.5):
                return
        line = b"GET /healthz HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 4096
        while self.elapsed() < end and not self.stop_load.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.gw.port), timeout=30)
            except OSError:
                self.stop_load.wait(1.0)
                continue
            with sock:
                sock.settimeout(SLOW_BYTE_EVERY_S)
                for i in range(len(line)):
                    if self.elapsed() >= end or self.stop_load.is_set():
                        break
                    try:
                        sock.sendall(line[i:i + 1])
                        data = sock.recv(4096)  # waits up to SLOW_BYTE_EVERY_S
                    except socket.timeout:
                        continue
                    except OSError:
                        data = b""
                    with self.slow_lock:
                        self.slow_cuts += 1
                        if data.startswith(b"HTTP/1.1 408"):
                            self.slow_408 += 1
                    break

    # ---- verification --------------------------------------------------------
    def verify(self):
        """Compares every expectation with the store; returns (ok, lines)."""
        sess = self.gw.session()
        emails = sorted(self.ledger.expect)
        found = {}
        bad_dup = []
        for k in range(0, len(emails), 100):
            chunk = emails[k:k + 100]
            for attempt in range(20):
                r = self.timed(sess, "verify", "GET", self.gw.base + "/leads",
                               params={"email": ",".join(chunk), "fields": "Company"},
                               headers={"Cache-Control": "no-cache"}, timeout=60)
                if r is not None and r.status_code == 200:
                    break
                if r is not None and r.status_code == 400:
                    return False, ["verification lookup refused: 400 %s" % r.text[:300]]
                time.sleep(min(5, 0.5 * (attempt + 1)))
            else:
                return False, ["verification lookups kept failing (last %s)"
                               % (r.status_code if r is not None else "conn-error")]
            got = collections.defaultdict(list)
            for lead in r.json().get("leads", []):
                got[(lead.get("email") or "").lower()].append(lead)
            for e in chunk:
                leads = got.get(e, [])
                if len(leads) > 1:
                    bad_dup.append((e, [x.get("id") for x in leads]))
                found[e] = leads[0] if leads else None
        sess.close()
        mismatches = []
        id_mismatch = []
        n_either = 0
        for e in emails:
            lead = found.get(e)
            if lead is None:
                actual = ABSENT
            else:
                comp = (lead.get("attributes") or {}).get("Company")
                actual = comp if isinstance(comp, str) and comp.startswith("soak-") else ORIG
            exp = self.ledger.expect[e]
            if len(exp) > 1:
                n_either += 1
            if actual not in exp:
                mismatches.append((e, sorted(exp), actual))
            rid = self.ledger.ids.get(e)
            if lead is not None and rid is not None and lead.get("id") != rid:
                id_mismatch.append((e, rid, lead.get("id")))
        lines = ["leads written: %d distinct e-mails (%d with an 'either' expectation)"
                 % (len(emails), n_either),
                 "mismatches: %d, id mismatches: %d, duplicate leads per e-mail: %d"
                 % (len(mismatches), len(id_mismatch), len(bad_dup))]
        for m in mismatches[:15]:
            lines.append("  MISMATCH %s expected %s got %s" % m)
        for m in id_mismatch[:10]:
            lines.append("  ID %s reported %s store %s" % m)
        for m in bad_dup[:10]:
            lines.append("  DUPLICATE %s ids %s" % m)
        ok = not mismatches and not id_mismatch and not bad_dup
        return ok, lines

    # ---- run -----------------------------------------------------------------
    def run(self):
        tmp = tempfile.mkdtemp(prefix="soak-")
        self.tmp = tmp
        log("soak for %.1f min, warm-up %.0f s, temp dir %s" % (self.args.minutes, self.warmup, tmp))
        log("commit %s" % git(self.args.root, "rev-parse", "HEAD").strip())
        for b in (self.args.gateway, self.args.sim):
            log("binary %s sha256 %s" % (os.path.relpath(b, self.args.root), sha256(b)[:16]))
        dirty = git(self.args.root, "status", "--short", "--", "gateway", "sim", "soap", "marketo",
                    "config").strip()
        if dirty:
            log("uncommitted changes in sources built:\n" + dirty)
        self.redis = Redis(tmp)
        self.sim = Sim(self.args.sim, tmp)
        self.gw = Gateway(self.args.gateway, tmp, self.sim.endpoint, self.redis.port)
        log("redis :%d  sim :%d  gateway :%d (pid %d)"
            % (self.redis.port, self.sim.port, self.gw.port, self.gw.proc.pid))
        self.sim.set_faults(0, 300, 1)
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.sampler, daemon=True),
                   threading.Thread(target=self.chaos, daemon=True)]
        threads += [threading.Thread(target=self.lookup_worker, args=(i,), daemon=True)
                    for i in range(LOOKUP_THREADS)]
        threads += [threading.Thread(target=self.sync_worker, args=(i,), daemon=True)
                    for i in range(SYNC_THREADS)]
        threads += [threading.Thread(target=self.slow_client, args=(i,), daemon=True)
                    for i in range(SLOW_CLIENTS)]
        for t in threads:
            t.start()
        last_report = 0.0
        while self.elapsed() < self.duration:
            time.sleep(1.0)
            if self.elapsed() - last_report >= 60:
                last_report = self.elapsed()
                s = self.samples[-1] if self.samples else None
                with self.stats.lock:
                    total = sum(sum(c.values()) for c in self.stats.status.values())
                log("t=%.0fs requests=%d rss=%s kB fds=%s syncs=%s"
                    % (last_report, total, s and s[1], s and s[2],
                       dict(self.ledger.results)))
            if self.crashes:
                break
        self.stop_load.set()
        for t in threads:
            t.join(timeout=150)
        load_end = self.elapsed()
        log("load stopped at %.0f s; clearing faults, verifying" % load_end)
        verdicts = []
        if not self.redis.ping():
            self.redis.restart()
        alive_before = self.gw.proc.poll() is None and self.sim.proc.poll() is None
        if alive_before:
            self.sim.clear_faults()
            time.sleep(1.0)
            ok_sync, vlines = self.verify()
            sim_stats = self.sim.admin_json("/_sim/stats")
        else:
            ok_sync, vlines, sim_stats = False, ["processes dead: cannot verify"], {}
        alive_after = self.gw.proc.poll() is None and self.sim.proc.poll() is None
        # SIGTERM, then the captured stderr of each is scanned for sanitizer
        # reports (tests/pylib/mgw_harness.py); Redis was only killed by the
        # chaos thread, the redis-server running now gets SIGTERM as well.
        stopped = [self.gw.stop(), self.sim.stop(), self.redis.stop()]
        self.report(load_end, verdicts, ok_sync, vlines, sim_stats,
                    alive_before and alive_after, stopped)
        failed = [v for v in verdicts if not v[1]]
        print()
        for name, ok, detail in verdicts:
            print("%-28s %s  %s" % (name, "PASS" if ok else "FAIL", detail))
        if failed or self.args.keep:
            print("logs kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print("SOAK %s" % ("FAILED" if failed else "PASSED"))
        return 1 if failed else 0

    def in_disturbed(self, t):
        return any(a <= t <= (b if b is not None else float("inf")) for a, b in self.disturbed)

    def error_verdicts(self, verdicts, grand):
        """Verdicts on the error answers of the whole run (load and verification).

        - 500 (and any 5xx the gateway never maps a fault to, e.g. 501):
          none. A 500 is the gateway's own failure, never an upstream one.
        - connection errors / resets / client timeouts (90 s; 120 s for a
          sync): none. The gateway answers every request it accepted, also
          while Redis is down and during latency spikes.
        - 502 (upstream fault, unreachable or bad answer): at most
          ceil(3 * p * N) + 10, where p = FAULT_RATE ** RETRY_ATTEMPTS (the
          sim fails each call with fault 20011 with probability FAULT_RATE,
          independently, and the gateway answers 502 only after
          RETRY_ATTEMPTS faulted attempts in a row: 0.1^3 = 0.001) and N is
          the number of answered requests that could reach Marketo (every
          answer without X-Cache: HIT). Each such request makes one call
          (key lookups of <= 5 e-mails, one page, one id, sync batches of
          <= 50), so the expected count is p * N; x3 covers the Poisson
          spread and single-flight fan-out (one failed call answers every
          identical lookup waiting for it), +10 the small-N regime of short
          runs. A 15-minute run saw 11 against p * N ~ 20. A gateway that
          turns one answer in a hundred into a 502 exceeds it by far.
        - 503 and 504: none. The gateway answers 503 only without an
          upstream configured or while shutting down (load ends before the
          SIGTERM), and 504 only when Marketo does not answer within
          marketo.timeout_ms (30 s) or a request exceeds
          gateway.request_timeout_ms (60 s); the slowest sim call here takes
          1.5 + 1.0 s (spike) + 0.3 s (jitter), and the longest legitimate
          request RETRY_ATTEMPTS * (queue timeout 10 s + 2.8 s) + backoffs
          (1 s + 2 s) ~ 41 s < 60 s.
        - read after a confirmed write that got no 200: each is counted.
          429 and 503 are backpressure: allowed inside a latency spike or a
          Redis outage plus the queue timeout after it (when the outbound
          budget is legitimately short: spike calls take 1.5-2.8 s, and
          without Redis the limiter falls back to its 1/3 share), and at
          most max(3, 1% of the fresh reads) outside those windows (the
          demand, ~45 calls/s at most, is below the 50 calls/s budget; the
          15-minute run had no 429 at all). 502 is an injected fault (in
          the 502 bound above; the read is retried). Anything else (500,
          504, 400, 404, a connection error) fails.
        """
        print()
        print("== error answers")
        answered = sum(n for k, n in grand.items() if isinstance(k, int))
        hits = self.stats.xcache["HIT"]
        n_up = max(0, answered - hits)
        p = FAULT_RATE ** RETRY_ATTEMPTS
        lam = p * n_up
        bound502 = int(math.ceil(3 * lam)) + 10
        n500 = grand[500]
        odd5xx = {k: n for k, n in grand.items()
                  if isinstance(k, int) and k >= 500 and k not in (500, 502, 503, 504)}
        conn = grand["conn-error"]
        for kind in sorted(self.stats.status):
            c = self.stats.status[kind]
            bad = {k: n for k, n in c.items() if k == "conn-error" or (isinstance(k, int) and k >= 500)}
            if bad:
                print("  %-7s %s" % (kind, bad))
        print("  502 bound: p = %.0e per upstream-bound request, %d of them (%d answers - %d"
              " cache hits): expected %.1f, bound %d" % (p, n_up, answered, hits, lam, bound502))
        verdicts.append(("no 500", n500 == 0 and not odd5xx,
                         "500 x %d%s" % (n500, ", other 5xx %s" % odd5xx if odd5xx else "")))
        verdicts.append(("no connection errors", conn == 0,
                         "%d%s" % (conn, " %s" % dict(self.stats.errors) if self.stats.errors else "")))
        verdicts.append(("502 within bound", grand[502] <= bound502,
                         "502 x %d, bound %d (expected %.1f from %d upstream-bound requests)"
                         % (grand[502], bound502, lam, n_up)))
        verdicts.append(("no 503/504", grand[503] + grand[504] == 0,
                         "503 x %d, 504 x %d" % (grand[503], grand[504])))
        fresh = collections.Counter(code for _, code in self.fresh_non200)
        backp_in = sum(1 for t, code in self.fresh_non200
                       if code in (429, 503) and self.in_disturbed(t))
        backp_out = sum(1 for t, code in self.fresh_non200
                        if code in (429, 503) and not self.in_disturbed(t))
        other = {k: n for k, n in fresh.items() if k not in (429, 502, 503)}
        out_bound = max(3, int(0.01 * self.fresh_checks))
        print("  reads after writes without a 200: %s (429/503 inside spike/outage windows %d,"
              " outside %d, bound outside %d); writes never read back: %d"
              % (dict(fresh), backp_in, backp_out, out_bound, len(self.fresh_unread)))
        for t, e, code in self.fresh_unread[:10]:
            print("  UNREAD t=%s %s last %s" % (t, e, code))
        print("  disturbed windows (s): %s"
              % ", ".join("%.0f-%.0f" % (a, b if b is not None else -1) for a, b in self.disturbed))
        verdicts.append(("read-after-write answers", not other and backp_out <= out_bound,
                         "%d non-200 (%s), 429/503 outside windows %d (bound %d), "
                         "never read back %d" % (len(self.fresh_non200), dict(fresh) or "none",
                                                 backp_out, out_bound, len(self.fresh_unread))))

    def report(self, load_end, verdicts, ok_sync, vlines, sim_stats, alive, stopped):
        print()
        print("== gateway RSS (kB) / open fds, every %.0f s (t, rss, fds | sim rss, fds |"
              " in the interval before: requests, X-Cache HIT, BYPASS, 429, 5xx)"
              % SAMPLE_EVERY_S)
        prev = (0, 0, 0, 0, 0)
        for s, tr in zip(self.samples, self.traffic):
            d = tuple(a - b for a, b in zip(tr, prev))
            prev = tr
            print("  t=%6.1f  rss=%7d  fds=%4d  | sim rss=%s fds=%s" % s
                  + " | req %5d hit %5d bypass %4d 429 %3d 5xx %2d" % d)
        after = [s for s in self.samples if s[0] >= self.warmup][:3]
        last = self.samples[-3:]
        if len(after) >= 3 and len(last) >= 3 and after[0][0] < last[0][0]:
            rss0 = statistics.median(s[1] for s in after)
            rss1 = statistics.median(s[1] for s in last)
            fd0 = statistics.median(s[2] for s in after)
            fd1 = statistics.median(s[2] for s in last)
            peak = max(s[1] for s in self.samples)
            verdicts.append(("rss within 10%", rss1 <= rss0 * (1 + RSS_TOLERANCE),
                             "after warm-up %d kB, end %d kB (%+.1f%%), peak %d kB"
                             % (rss0, rss1, 100.0 * (rss1 - rss0) / rss0, peak)))
            verdicts.append(("no fd growth", fd1 <= fd0 + FD_TOLERANCE,
                             "after warm-up %d, end %d (tolerance +%d), max %d"
                             % (fd0, fd1, FD_TOLERANCE, max(s[2] for s in self.samples))))
        else:
            verdicts.append(("rss within 10%", False, "too few samples after warm-up"))
            verdicts.append(("no fd growth", False, "too few samples after warm-up"))
        print()
        print("== requests by kind and status (load %.0f s)" % load_end)
        grand = collections.Counter()
        for kind in sorted(self.stats.status):
            c = self.stats.status[kind]
            grand.update(c)
            lat = sorted(self.stats.lat[kind])
            p50 = lat[len(lat) // 2] * 1000 if lat else 0
            p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0
            print("  %-7s %7d  %s  p50 %.1f ms p99 %.1f ms"
                  % (kind, sum(c.values()), dict(sorted(c.items(), key=str)), p50, p99))
        print("  total   %7d  %s" % (sum(grand.values()), dict(sorted(grand.items(), key=str))))
        print("  X-Cache %s" % dict(self.stats.xcache))
        if self.stats.errors:
            print("  client errors %s" % dict(self.stats.errors))
        ops = sim_stats.get("operations", {})
        print("  sim: %s, leads in store %s, peak concurrency %s"
              % ({k: (v.get("calls"), v.get("faults")) for k, v in ops.items() if v.get("calls")},
                 sim_stats.get("leads"), sim_stats.get("peak_concurrency")))
        print()
        print("== sync accounting")
        led = self.ledger
        print("  results %s" % dict(led.results))
        print("  non-200 sync replies %s" % dict(led.whole_failures))
        for err, n in led.errors.most_common(8):
            print("  %6d x %s" % (n, err))
        for line in vlines:
            print("  " + line)
        # the store's lead count: seeded + confirmed creates (+ some "either")
        count_ok = True
        if sim_stats.get("leads") is not None:
            extra = sim_stats["leads"] - (SIM_LEADS + 2)
            count_ok = led.created_ok <= extra <= led.created_ok + led.creates_maybe
            print("  leads created in the store %d; gateway reported CREATED %d (+%d either)"
                  % (extra, led.created_ok, led.creates_maybe))
        for a in led.anomalies[:10]:
            print("  ANOMALY " + a)
        verdicts.append(("sync results accounted", ok_sync and count_ok and not led.anomalies,
                         "%d results, %d confirmed, %d either, %d anomalies"
                         % (sum(led.results.values()),
                            led.results["CREATED"] + led.results["UPDATED"],
                            led.maybe, len(led.anomalies))))
        print("  freshness: %d checks, %d stale" % (self.fresh_checks, len(self.stale)))
        for s in self.stale[:10]:
            print("  STALE t=%s %s wrote %s read %s (X-Cache %s)" % s)
        verdicts.append(("read-your-write", not self.stale,
                         "%d lookups after confirmed writes, %d stale"
                         % (self.fresh_checks, len(self.stale))))
        self.error_verdicts(verdicts, grand)
        print()
        print("== events")
        for t, msg in self.events:
            print("  t=%6.1f %s" % (t, msg))
        gwlog = ""
        try:
            with open(self.gw.log_path, "rb") as f:
                gwlog = f.read().decode("utf-8", "replace")
        except OSError:
            pass
        levels = collections.Counter()
        msgs = collections.Counter()
        for line in gwlog.splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                levels["(not json)"] += 1
                continue
            lvl = j.get("level", "?")
            levels[lvl] += 1
            if lvl in ("warn", "error"):
                msgs["%s %s" % (lvl, j.get("msg", j.get("message", "?")))] += 1
        print("== gateway log: %s" % dict(levels))
        for m, n in msgs.most_common(10):
            print("  %6d x %s" % (n, m))
        problems = [p for st in stopped if st is not None for p in st.problems]
        for p in problems:
            print("  STOP PROBLEM " + p[:3000])
        for st in stopped:
            for w in (st.warnings if st is not None else []):
                print("  STOP WARNING " + w)
        gw_rc, sim_rc = stopped[0].returncode, stopped[1].returncode
        san = sum(len(st.reports) for st in stopped if st is not None)
        slow_window = 0.35 * self.duration
        want_cuts = SLOW_CLIENTS if slow_window >= 30 else 0
        verdicts.append(("slow clients cut", self.slow_cuts >= want_cuts,
                         "%d slowloris connections closed by the gateway (%d with 408), "
                         "%d clients, at least %d expected"
                         % (self.slow_cuts, self.slow_408, SLOW_CLIENTS, want_cuts)))
        verdicts.append(("no crash", alive and not self.crashes and not problems,
                         "crashes %s, gateway exit %s, sim exit %s, sanitizer reports %d"
                         % (self.crashes or "none", gw_rc, sim_rc, san)))
        verdicts.append(("no non-JSON log lines", levels["(not json)"] == 0,
                         "%d lines" % sum(levels.values())))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def git(root, *args):
    try:
        return subprocess.run(["git", "-C", root] + list(args), capture_output=True,
                              text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--sim", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--keep", action="store_true", default=os.environ.get("SOAK_KEEP") == "1")
    args = ap.parse_args()
    soak = Soak(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        rc = soak.run()
    except BaseException:
        # stop every child (the drivers' threads are daemons and die with us)
        for name in ("gw", "sim", "redis"):
            obj = getattr(soak, name, None)
            if obj is not None and getattr(obj, "proc", None) is not None:
                obj.kill()
        raise
    sys.exit(rc)


if __name__ == "__main__":
    main()
