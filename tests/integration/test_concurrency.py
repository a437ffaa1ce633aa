"""Slow upstream calls never starve cache hits; the outbound rate limit holds; SIGTERM drains."""
import signal
import socket
import threading
import time

import requests

from leadhelpers import demo_email, is_problem
from mgw_harness import max_in_window  # noqa: E402


def run_threads(fn, args_list):
    results = [None] * len(args_list)

    def worker(i, a):
        try:
            results[i] = fn(*a)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            results[i] = e
    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    return threads, results


def test_no_starvation(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.threads": 2,
                                              "ratelimit.max_concurrent": 10})
    warm = demo_email(1)
    assert gw.leads(email=warm).status_code == 200
    fresh_sim.faults({"operation": "getMultipleLeads", "latency_ms": 2000})

    def slow(i):
        with requests.Session() as s:
            return s.get(gw.base + "/leads", params={"email": demo_email(100 + i)},
                         headers={"X-API-Key": "test-key"}, timeout=60).status_code
    threads, results = run_threads(slow, [(i,) for i in range(50)])
    time.sleep(0.3)  # let them all arrive and suspend
    durations = []
    with requests.Session() as s:
        s.headers["X-API-Key"] = "test-key"
        for _ in range(500):
            t0 = time.perf_counter()
            r = s.get(gw.base + "/leads", params={"email": warm}, timeout=10)
            durations.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.headers.get("X-Cache") == "HIT"
    in_flight = sum(1 for t in threads if t.is_alive())
    for t in threads:
        t.join(60)
    assert in_flight > 0, "the slow lookups were supposed to overlap the fast ones"
    durations.sort()
    # A hit that waited behind a suspended lookup would take the sim's 2 s;
    # the bound is that property, not a latency goal (bench/ measures p99:
    # a 50 ms bound here failed on a loaded 2-core machine).
    print("cache hits beside 50 slow lookups: p50 %.1f ms, max %.1f ms"
          % (durations[len(durations) // 2] * 1000, durations[-1] * 1000))
    assert durations[-1] < 1.0, "slowest cache hit took %.3f s" % durations[-1]
    assert all(code == 200 for code in results), results


def test_rate_limit_429(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"ratelimit.calls_per_window": 5,
                                              "ratelimit.window_seconds": 2,
                                              "ratelimit.queue_timeout_ms": 1500})

    # a distinct field set per request, so coalescing cannot merge them:
    # this test is about the outbound budget, one SOAP call per lookup
    def one(i):
        return requests.get(gw.base + "/leads", params={"email": demo_email(200 + i),
                                                         "fields": "Company,X%d" % i},
                            headers={"X-API-Key": "test-key"}, timeout=30)
    threads, results = run_threads(one, [(i,) for i in range(30)])
    for t in threads:
        t.join(40)
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 5 and codes.count(429) >= 1, codes
    for r in results:
        if r.status_code == 429:
            is_problem(r, 429)
            assert int(r.headers["Retry-After"]) >= 1
    times = fresh_sim.times("getMultipleLeads")
    assert len(times) == codes.count(200)
    assert max_in_window(times, 2000) <= 5


def test_sigterm_drains(sim_factory, gateway_factory):
    sim = sim_factory(leads=50, latency_ms=1000)
    gw = gateway_factory(sim.endpoint)

    def one(i):
        return requests.get(gw.base + "/leads", params={"email": demo_email(1 + i)},
                            headers={"X-API-Key": "test-key"}, timeout=30).status_code
    threads, results = run_threads(one, [(i,) for i in range(5)])
    time.sleep(0.4)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # a request that starts during the drain is answered at once, 503
    # shutting-down with Retry-After (retry on another replica), not queued
    t0 = time.monotonic()
    late = requests.get(gw.base + "/leads", params={"email": demo_email(40)},
                        headers={"X-API-Key": "test-key"}, timeout=10)
    assert late.status_code == 503, late.text
    assert late.json()["type"].endswith("shutting-down")
    assert late.headers["Retry-After"] == "1"
    assert time.monotonic() - t0 < 0.9, "answered at once, not after the 1 s upstream call"
    for t in threads:
        t.join(30)
    assert results == [200] * 5, results
    assert gw.proc.wait(timeout=30) == 0
    # and then nobody listens
    try:
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused, "still accepting connections after exit"
