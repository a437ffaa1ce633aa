"""Upstream failures map to statuses; no hang, no crash."""
import socket
import time

import pytest

from leadhelpers import demo_email, is_problem

FAST = {"marketo.retry_max_attempts": 2, "gateway.request_timeout_ms": 8000,
        "marketo.timeout_ms": 3000}


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sim_down_is_502(gateway_factory):
    gw = gateway_factory("http://127.0.0.1:%d/soap/mktows/2_3" % closed_port(), FAST)
    r = gw.leads(email="joe@marketo.com", timeout=20)
    is_problem(r, 502)
    r = gw.post("/leads/sync", {"leads": [{"email": "joe@marketo.com"}]}, timeout=20)
    assert r.status_code == 200
    assert r.json()["results"][0]["status"] == "NOT_SENT"
    assert gw.alive()


def test_slow_sim_is_504(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"marketo.timeout_ms": 500,
                                              "marketo.retry_max_attempts": 1,
                                              "gateway.request_timeout_ms": 2000})
    fresh_sim.faults({"operation": "getMultipleLeads", "latency_ms": 3000})
    t0 = time.monotonic()
    r = gw.leads(email=demo_email(3), timeout=20)
    is_problem(r, 504)
    assert time.monotonic() - t0 < 5
    assert gw.alive()


@pytest.mark.parametrize("spec", [
    {"http_503": True},
    {"truncate_rate": 1},
    {"drop_rate": 1},
], ids=["html503", "truncated", "dropped"])
def test_bad_answers_are_502(fresh_sim, gateway_factory, spec):
    gw = gateway_factory(fresh_sim.endpoint, FAST)
    fresh_sim.faults(dict(spec, operation="getMultipleLeads"))
    r = gw.leads(email=demo_email(4), timeout=30)
    is_problem(r, 502)
    if "http_503" in spec:  # retried: more than one call
        assert fresh_sim.calls("getMultipleLeads") >= 2
    assert gw.alive()
    fresh_sim.reset()
    assert gw.leads(email=demo_email(4)).status_code == 200


@pytest.mark.parametrize("code,status", [(20014, 502), (20122, 400), (20023, 429)])
def test_fault_codes(fresh_sim, gateway_factory, code, status):
    gw = gateway_factory(fresh_sim.endpoint, dict(FAST, **{"marketo.retry_max_attempts": 1}))
    fresh_sim.faults({"operation": "getMultipleLeads", "fault_code": code})
    r = gw.leads(email=demo_email(9), timeout=30)
    body = is_problem(r, status)
    assert body.get("marketo_code") == code
    if status == 429:
        assert r.headers.get("Retry-After")
    assert gw.alive()


def test_missing_lead_by_id_404(gw):
    body = is_problem(gw.get("/leads/2000000001"), 404)
    assert "not found" in body["detail"]


def test_unknown_static_list_404(gw):
    r = gw.leads(staticList="No.Such.List")
    body = is_problem(r, 404)
    assert body.get("marketo_code") == 20111
    r = gw.leads(staticListId="987654")
    is_problem(r, 404)
