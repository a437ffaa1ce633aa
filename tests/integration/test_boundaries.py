"""Boundaries the other suites leave loose.

Key lookups: a SOAP LeadKeySelector takes at most 100 keys (Marketo, and the
sim, silently ignore the rest), so the gateway splits a lookup's misses into
calls of at most 100 keys. Exactly 100, 200 and 300 keys (and their
neighbours) must each be answered once, in ceil(n / 100) calls.

Sync accounting: a batch Marketo answers with a fault is FAILED with the
fault's code (Marketo said no, nothing applied); a batch that never got an
answer is NOT_SENT. Exactly which indexes get which status is asserted, with
the gateway's outbound concurrency at 1 so that the batches reach the sim in
submit order and the sim's skip/count rule hits a known batch.
"""
import math
import uuid

import pytest

from leadhelpers import demo_email

LOOKUP_OP = "getMultipleLeads"
SYNC_OP = "syncMultipleLeads"
NO_CACHE = {"Cache-Control": "no-cache"}
FIRST_ID = 1000000  # the sim's generated lead i has id FIRST_ID + i


# ---- key lookups at the 100-key boundaries ----------------------------------

def check_answer(r, emails, first):
    """Every key answered exactly once, in request order, with its own lead."""
    assert r.status_code == 200, (r.status_code, r.text[:500])
    body = r.json()
    leads = body["leads"]
    assert [x["email"] for x in leads] == emails
    assert [x["id"] for x in leads] == [FIRST_ID + first + k for k in range(len(emails))]
    assert body["next_cursor"] is None


@pytest.mark.parametrize("n", [99, 100, 101, 200, 300])
def test_key_lookup_split_at_100(n, fresh_sim, gateway_factory):
    # A gateway of its own: a cold cache, and nothing else to coalesce with.
    gw = gateway_factory(fresh_sim.endpoint)
    first = 1000 + n  # a different key range per case
    emails = [demo_email(first + k) for k in range(n)]
    calls = math.ceil(n / 100)
    query = ",".join(emails)  # about 7 KB for 300 keys: fits a URL
    assert len(query) < 8000

    # cold cache: every key is a miss, sent in ceil(n/100) calls
    r = gw.leads(email=query)
    check_answer(r, emails, first)
    assert r.headers.get("X-Cache") == "MISS"
    assert fresh_sim.calls(LOOKUP_OP) == calls

    # every key was cached on its own: the same lookup costs nothing
    r = gw.leads(email=query)
    check_answer(r, emails, first)
    assert r.headers.get("X-Cache") == "HIT"
    assert fresh_sim.calls(LOOKUP_OP) == calls

    # bypassing the cache splits the same way again; repeated email= form
    r = gw.get("/leads", params=[("email", e) for e in emails], headers=NO_CACHE)
    check_answer(r, emails, first)
    assert r.headers.get("X-Cache") == "BYPASS"
    assert fresh_sim.calls(LOOKUP_OP) == 2 * calls
    assert fresh_sim.stats()["operations"][LOOKUP_OP]["faults"] == 0


def test_key_lookup_split_counts_misses_only(fresh_sim, gateway_factory):
    """100 cached keys plus 100 new ones: only the 100 misses are sent, in one call."""
    gw = gateway_factory(fresh_sim.endpoint)
    emails = [demo_email(2001 + k) for k in range(200)]
    r = gw.leads(email=",".join(emails[:100]))
    check_answer(r, emails[:100], 2001)
    assert fresh_sim.calls(LOOKUP_OP) == 1
    r = gw.leads(email=",".join(emails))
    check_answer(r, emails, 2001)
    assert r.headers.get("X-Cache") == "PARTIAL"
    assert fresh_sim.calls(LOOKUP_OP) == 2


# ---- sync: faulted batch FAILED, dropped batch NOT_SENT -----------------------

def sync_leads(tag):
    """Five leads in batches of two: [0, 1], [2, 3], [4]. Even indexes are
    existing leads (UPDATED when applied), odd ones new (CREATED)."""
    leads = []
    for i in range(5):
        if i % 2 == 0:
            leads.append({"email": demo_email(50 + i), "attributes": {"Title": "T-" + tag}})
        else:
            leads.append({"email": "b%d-%s@example.net" % (i, tag),
                          "attributes": {"FirstName": "B%d" % i}})
    return leads


def applied_status(i):
    return "UPDATED" if i % 2 == 0 else "CREATED"


def counts_of(body):
    return {k: body[k] for k in ("created", "updated", "failed", "not_sent")}


def sync_gateway(gateway_factory, sim, attempts):
    return gateway_factory(sim.endpoint, {"gateway.sync_batch_size": 2,
                                          "ratelimit.max_concurrent": 1,
                                          "marketo.retry_max_attempts": attempts})


def test_sync_faulted_batch_is_failed_with_code(fresh_sim, gateway_factory):
    gw = sync_gateway(gateway_factory, fresh_sim, 1)
    fresh_sim.faults({"operation": SYNC_OP, "skip": 1, "count": 1, "fault_code": 20011})
    tag = uuid.uuid4().hex[:8]
    leads = sync_leads(tag)
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3, 4]
    assert [x["status"] for x in res] == ["UPDATED", "CREATED", "FAILED", "FAILED", "UPDATED"]
    for i in (2, 3):
        assert "20011" in res[i]["error"], res[i]
        assert res[i]["id"] is None  # given by e-mail, Marketo assigned none
    for i in (0, 1, 4):
        assert "error" not in res[i]
        assert isinstance(res[i]["id"], int)
    assert counts_of(body) == {"created": 1, "updated": 2, "failed": 2, "not_sent": 0}
    assert fresh_sim.calls(SYNC_OP) == 3  # one call a batch, no retry
    # the faulted batch was not applied: the new lead of batch 1 does not exist
    found = gw.leads(email=leads[3]["email"], headers=NO_CACHE).json()["leads"]
    assert found == []
    found = gw.leads(email=leads[1]["email"], headers=NO_CACHE).json()["leads"]
    assert [x["id"] for x in found] == [res[1]["id"]]


def test_sync_20011_is_retried(fresh_sim, gateway_factory):
    # 20011 is retryable (mkto_code_retryable in marketo/codes.h; README: "10001/20011 ...
    # after waiting"): a fault is an answer, so resending is not blind.
    gw = sync_gateway(gateway_factory, fresh_sim, 3)
    fresh_sim.faults({"operation": SYNC_OP, "skip": 1, "count": 1, "fault_code": 20011})
    leads = sync_leads(uuid.uuid4().hex[:8])
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == [applied_status(i) for i in range(5)]
    assert counts_of(body) == {"created": 2, "updated": 3, "failed": 0, "not_sent": 0}
    assert fresh_sim.calls(SYNC_OP) == 4  # batch 1 twice
    assert fresh_sim.stats()["operations"][SYNC_OP]["faults"] == 1


def test_sync_20011_retries_spent_is_failed(fresh_sim, gateway_factory):
    gw = sync_gateway(gateway_factory, fresh_sim, 2)
    fresh_sim.faults({"operation": SYNC_OP, "fault_code": 20011})
    leads = sync_leads(uuid.uuid4().hex[:8])[:2]
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["FAILED", "FAILED"]
    assert all("20011" in x["error"] for x in body["results"])
    assert counts_of(body) == {"created": 0, "updated": 0, "failed": 2, "not_sent": 0}
    assert fresh_sim.calls(SYNC_OP) == 2  # retry_max_attempts


def test_sync_dropped_batch_is_not_sent(fresh_sim, gateway_factory):
    # Retries allowed: a sync that may have reached Marketo is never resent.
    # The dropped call is the gateway's first, on a fresh connection (a sync
    # on a reused keep-alive connection that dies: test_sync_loss.py).
    gw = sync_gateway(gateway_factory, fresh_sim, 3)
    fresh_sim.faults({"operation": SYNC_OP, "count": 1, "drop_rate": 1})
    leads = sync_leads(uuid.uuid4().hex[:8])
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3, 4]
    assert [x["status"] for x in res] == ["NOT_SENT", "NOT_SENT", "UPDATED", "CREATED",
                                          "UPDATED"]
    for i in (0, 1):
        assert res[i]["error"], res[i]
        # it was sent and never answered: it may have been applied
        assert "may have been applied" in res[i]["error"], res[i]
        assert "20011" not in res[i]["error"]
        assert res[i]["id"] is None
    assert counts_of(body) == {"created": 1, "updated": 2, "failed": 0, "not_sent": 2}
    assert fresh_sim.calls(SYNC_OP) == 3  # the dropped batch was not resent
    # (the sim drops before applying: the new lead of batch 0 does not exist)
    assert gw.leads(email=leads[1]["email"], headers=NO_CACHE).json()["leads"] == []
