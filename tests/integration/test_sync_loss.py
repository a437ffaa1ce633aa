"""A sync whose connection dies after Marketo got it: reported NOT_SENT with
"may have been applied", and sent exactly once (neither libcurl nor the
engine re-sends it).

libcurl re-sends a request on its own when a reused keep-alive connection
closes before any answer byte; for a sync that Marketo already applied, the
re-send reports a lead it just created as UPDATED. A Marketo that dies with
a batch inside it looks the same from the gateway's side.
"""
import re
import threading
import time
import uuid

import requests

from leadhelpers import demo_email

SYNC_OP = "syncMultipleLeads"
NO_CACHE = {"Cache-Control": "no-cache"}


def metric_sum(gw, name, **labels):
    """Sum of the series of metric name whose labels include labels."""
    text = requests.get(gw.base + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def warm_connection(gw):
    """One lookup, so that the gateway holds an idle keep-alive connection
    to the sim that the next call could reuse."""
    r = gw.leads(email=demo_email(3), headers=NO_CACHE)
    assert r.status_code == 200, r.text


def test_sync_applied_then_connection_lost_is_sent_once(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"marketo.retry_max_attempts": 3})
    warm_connection(gw)
    email = "lost-%s@example.net" % uuid.uuid4().hex[:8]
    # Marketo applies the batch (creates the lead), then the answer is lost.
    fresh_sim.faults({"operation": SYNC_OP, "count": 1, "drop_rate": 1,
                      "drop_after_op": True})
    r = gw.post("/leads/sync", {"leads": [{"email": email, "attributes": {"FirstName": "Ada"}}]})
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["results"]
    assert len(res) == 1 and res[0]["index"] == 0
    # never UPDATED by a re-send of its own creation, never CREATED unheard
    assert res[0]["status"] == "NOT_SENT", res
    assert "may have been applied" in res[0]["error"], res
    assert "could not be reached" not in res[0]["error"], res
    assert res[0]["id"] is None
    assert {k: body[k] for k in ("created", "updated", "failed", "not_sent")} == \
        {"created": 0, "updated": 0, "failed": 0, "not_sent": 1}
    assert fresh_sim.calls(SYNC_OP) == 1, "the sync was re-sent"
    assert metric_sum(gw, "upstream_retries_total", operation=SYNC_OP) == 0
    # It was applied: the lead exists at Marketo.
    got = gw.leads(email=email, headers=NO_CACHE).json()["leads"]
    assert len(got) == 1 and got[0]["attributes"]["FirstName"] == "Ada"


def test_sync_with_dedup_off_applied_then_lost_is_sent_once(fresh_sim, gateway_factory):
    # dedup off: a re-send would have created the lead a second time
    gw = gateway_factory(fresh_sim.endpoint, {"marketo.retry_max_attempts": 3})
    warm_connection(gw)
    email = "lost-nodedup-%s@example.net" % uuid.uuid4().hex[:8]
    fresh_sim.faults({"operation": SYNC_OP, "count": 1, "drop_rate": 1,
                      "drop_after_op": True})
    r = gw.post("/leads/sync", {"leads": [{"email": email}], "dedup": False})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["status"] == "NOT_SENT" and "may have been applied" in res[0]["error"], res
    assert fresh_sim.calls(SYNC_OP) == 1
    assert len(gw.leads(email=email, headers=NO_CACHE).json()["leads"]) == 1


def test_sim_killed_with_a_batch_inside_is_maybe_applied(sim_factory, gateway_factory):
    sim = sim_factory(leads=50)
    gw = gateway_factory(sim.endpoint, {"marketo.retry_max_attempts": 3})
    warm_connection(gw)
    # The batch is applied, then the sim sits on the answer until it dies.
    sim.faults({"operation": SYNC_OP, "latency_after_ms": 60000})
    box = {}
    email = "killed-%s@example.net" % uuid.uuid4().hex[:8]
    t = threading.Thread(target=lambda: box.update(r=gw.post(
        "/leads/sync", {"leads": [{"email": email}, {"email": demo_email(4)}]})), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while sim.calls(SYNC_OP) < 1 or sim.stats().get("in_flight", 0) < 1:
        assert time.monotonic() < deadline, "the sync never reached the sim"
        time.sleep(0.02)
    time.sleep(0.3)
    sim.kill()
    sim.proc.wait(timeout=10)
    t.join(60)
    assert "r" in box, "no answer to the sync"
    r = box["r"]
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["NOT_SENT", "NOT_SENT"], res
    for x in res:
        assert "may have been applied" in x["error"], x
    assert r.json()["not_sent"] == 2
    # one call, no retry: neither libcurl's re-send (which would find the port
    # closed and look like "nothing was sent") nor the engine's backoff
    assert metric_sum(gw, "upstream_calls_total", operation=SYNC_OP) == 1
    assert metric_sum(gw, "upstream_retries_total", operation=SYNC_OP) == 0
