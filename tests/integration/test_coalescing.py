"""Lookup coalescing against the real sim: waiting key lookups share getMultipleLeads calls.

The sims here answer slowly (--latency-ms) and the gateway allows one outbound call at
a time, so that lookups arriving while a call is out wait for a slot and get merged
into the next call (up to 100 keys), or ride on the call in flight when it already asks
for their key (single flight).
"""
import threading

import pytest
import requests

from leadhelpers import demo_email, is_problem

API_HEADERS = {"X-API-Key": "test-key"}


def run_together(n, fn):
    """Runs fn(i) for i in 0..n-1 on n threads released at once; returns the results."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            results[i] = e
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def lookup(gw, email):
    with requests.Session() as s:
        return s.get(gw.base + "/leads", params={"email": email}, headers=API_HEADERS,
                     timeout=90)


SLOW_ONE_AT_A_TIME = {
    "ratelimit.calls_per_window": 5,
    "ratelimit.window_seconds": 2,
    "ratelimit.max_concurrent": 1,
    "ratelimit.queue_timeout_ms": 20000,
    "gateway.threads": 4,
}


def test_300_distinct_lookups_few_calls(sim_factory, gateway_factory):
    sim = sim_factory(latency_ms=1000)
    gw = gateway_factory(sim.endpoint, SLOW_ONE_AT_A_TIME)
    n = 300
    results = run_together(n, lambda i: lookup(gw, demo_email(i + 1)))
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        assert r.status_code == 200, (i, r.status_code, r.text[:300])
        leads = r.json()["leads"]
        assert len(leads) == 1, (i, leads)
        assert leads[0]["email"] == demo_email(i + 1)
        assert leads[0]["id"] == 1000000 + i + 1
    calls = sim.calls("getMultipleLeads")
    assert calls <= 5, "%d SOAP calls for %d distinct keys" % (calls, n)
    metrics = gw.get("/metrics").text
    assert "upstream_coalesced_jobs_total" in metrics
    assert "upstream_keys_per_call_bucket" in metrics


def test_identical_lookups_single_flight(sim_factory, gateway_factory):
    sim = sim_factory(latency_ms=500)
    gw = gateway_factory(sim.endpoint, {"ratelimit.queue_timeout_ms": 20000})
    email = demo_email(42)
    results = run_together(50, lambda i: lookup(gw, email))
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.status_code == 200, r.text[:300]
        leads = r.json()["leads"]
        assert len(leads) == 1 and leads[0]["email"] == email
    assert sim.calls("getMultipleLeads") == 1


@pytest.mark.parametrize("code,status", [(20014, 502), (20023, 429)])
def test_merged_fault_each_member(sim_factory, gateway_factory, code, status):
    sim = sim_factory(latency_ms=500)
    gw = gateway_factory(sim.endpoint, dict(SLOW_ONE_AT_A_TIME,
                                            **{"marketo.retry_max_attempts": 1}))
    sim.faults({"operation": "getMultipleLeads", "fault_code": code})
    n = 20
    results = run_together(n, lambda i: lookup(gw, demo_email(500 + i)))
    for r in results:
        assert not isinstance(r, Exception), r
        body = is_problem(r, status)
        assert body.get("marketo_code") == code
        if status == 429:
            assert r.headers.get("Retry-After")
    calls = sim.calls("getMultipleLeads")
    assert calls < n, "the members were not merged: %d calls" % calls
    assert gw.alive()
    # nothing was cached: once the fault is gone the same keys are served
    sim.reset()
    r = lookup(gw, demo_email(500))
    assert r.status_code == 200 and r.json()["leads"][0]["email"] == demo_email(500)
