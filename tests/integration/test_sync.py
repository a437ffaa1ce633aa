"""POST /leads/sync end to end: batching, statuses, partial failures, freshness, escaping."""
import threading
import time
import uuid

from leadhelpers import demo_email

NO_CACHE = {"Cache-Control": "no-cache"}


def check_results(body, n):
    res = body["results"]
    assert [x["index"] for x in res] == list(range(n))
    counts = {s: sum(1 for x in res if x["status"] == s)
              for s in ("CREATED", "UPDATED", "FAILED", "NOT_SENT")}
    assert body["created"] == counts["CREATED"]
    assert body["updated"] == counts["UPDATED"]
    assert body["failed"] == counts["FAILED"]
    assert body["not_sent"] == counts["NOT_SENT"]
    for x in res:
        if x["status"] in ("FAILED", "NOT_SENT"):
            assert x.get("error")
    return counts


def test_sync_700_three_calls_mixed(gw, fresh_sim):
    tag = uuid.uuid4().hex[:8]
    leads = []
    for i in range(700):
        if i % 2 == 0:  # existing lead
            leads.append({"email": demo_email(i + 1), "attributes": {"Title": "T-" + tag}})
        else:           # new lead
            leads.append({"email": "new%d-%s@example.net" % (i, tag),
                          "attributes": {"FirstName": "New%d" % i, "Title": "T-" + tag}})
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    counts = check_results(body, 700)
    assert counts["CREATED"] == 350 and counts["UPDATED"] == 350
    assert fresh_sim.calls("syncMultipleLeads") == 3
    for i in (0, 1, 298, 299, 300, 301, 699):
        assert body["results"][i]["status"] == ("UPDATED" if i % 2 == 0 else "CREATED")
        assert isinstance(body["results"][i]["id"], int)
    # confirmed at the sim, through the gateway without cache
    for i in (1, 301, 699):
        r = gw.leads(email=leads[i]["email"], headers=NO_CACHE)
        found = r.json()["leads"]
        assert len(found) == 1 and found[0]["id"] == body["results"][i]["id"]
        assert found[0]["attributes"]["FirstName"] == "New%d" % i
    r = gw.get("/leads/%d" % body["results"][2]["id"], headers=NO_CACHE)
    assert r.status_code == 200 and r.json()["attributes"]["Title"] == "T-" + tag


def test_sync_one_batch_faulted(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.sync_batch_size": 100,
                                              "marketo.retry_max_attempts": 1})
    fresh_sim.faults({"operation": "syncMultipleLeads", "skip": 1, "count": 1,
                      "error_rate": 1, "fault_code": 20011})
    leads = [{"email": demo_email(i), "attributes": {"City": "Faultville"}}
             for i in range(1, 251)]
    r = gw.post("/leads/sync", {"leads": leads})
    assert r.status_code == 200, r.text
    body = r.json()
    check_results(body, 250)
    res = body["results"]
    # batches run concurrently: exactly one of the three was faulted, whole
    bad = [b for b in range(3) if res[b * 100]["status"] in ("FAILED", "NOT_SENT")]
    assert len(bad) == 1
    b = bad[0]
    lo, hi = b * 100, min(250, b * 100 + 100)
    assert all(x["status"] in ("FAILED", "NOT_SENT") for x in res[lo:hi])
    assert all(x["status"] == "UPDATED" for i, x in enumerate(res) if not lo <= i < hi)
    if res[lo]["status"] == "FAILED":
        assert "20011" in res[lo]["error"]


def test_sync_dropped_batch_not_sent(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.sync_batch_size": 2,
                                              "marketo.retry_max_attempts": 1})
    fresh_sim.faults({"operation": "syncMultipleLeads", "drop_rate": 1, "count": 1})
    r = gw.post("/leads/sync", {"leads": [{"email": demo_email(1)}, {"email": demo_email(2)},
                                          {"email": demo_email(3)}]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    statuses = [x["status"] for x in res]
    assert statuses.count("UPDATED") in (1, 2)
    failed = [x for x in res if x["status"] != "UPDATED"]
    assert all(x["status"] in ("NOT_SENT", "FAILED") and x["error"] for x in failed)


def test_sync_then_lookup_is_fresh(gw, fresh_sim):
    email = demo_email(77)
    before = gw.leads(email=email).json()["leads"][0]
    by_id = gw.get("/leads/%d" % before["id"]).json()
    acct = before["attributes"]["SFDCAccountId"]
    gw.leads(sfdcAccountId=acct)
    assert gw.leads(email=email).headers.get("X-Cache") == "HIT"
    new_company = "Fresh Co " + uuid.uuid4().hex[:6]
    r = gw.post("/leads/sync", {"leads": [{"email": email.upper(),
                                           "attributes": {"Company": new_company}}]})
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    after = gw.leads(email=email)
    assert after.headers.get("X-Cache") != "HIT"
    assert after.json()["leads"][0]["attributes"]["Company"] == new_company
    assert gw.get("/leads/%d" % by_id["id"]).json()["attributes"]["Company"] == new_company
    assert gw.leads(sfdcAccountId=acct).json()["leads"][0]["attributes"]["Company"] == new_company


def wait_in_flight(sim, n, timeout=10.0):
    """Waits until n SOAP calls are in flight at the sim."""
    deadline = time.monotonic() + timeout
    while sim.stats().get("in_flight", 0) < n:
        assert time.monotonic() < deadline, "no call in flight at the sim"
        time.sleep(0.02)


def company_of(resp):
    assert resp.status_code == 200, resp.text
    leads = resp.json()["leads"]
    assert len(leads) == 1, resp.text
    return leads[0]["attributes"].get("Company")


def test_lookup_after_sync_never_shares_an_older_call(gw, fresh_sim):
    # Read-your-writes under single flight: lookup A's call reads the store
    # at once and answers late; a sync goes through and answers meanwhile.
    # Lookup B, started after that answer, must not ride on A's call (sent
    # before the sync): it gets its own call and the new value, and what it
    # caches is the new value too (C, a HIT).
    email = demo_email(321)
    before = company_of(gw.leads(email=email, headers=NO_CACHE))
    fresh_sim.faults({"operation": "getMultipleLeads", "latency_after_ms": 3000, "count": 1})
    box = {}
    a = threading.Thread(target=lambda: box.update(a=gw.leads(email=email)), daemon=True)
    a.start()
    try:
        wait_in_flight(fresh_sim, 1)
        time.sleep(0.5)  # A's call has read the store; its answer waits
        new_company = "After Co " + uuid.uuid4().hex[:6]
        s = gw.post("/leads/sync", {"leads": [{"email": email,
                                               "attributes": {"Company": new_company}}]})
        assert s.status_code == 200, s.text
        assert s.json()["results"][0]["status"] == "UPDATED", s.text
        b = gw.leads(email=email)
        assert company_of(b) == new_company, "a lookup after the sync got the old value"
        assert b.headers.get("X-Cache") == "MISS"
    finally:
        a.join(30)
    assert company_of(box["a"]) == before  # A read the store before the sync
    assert fresh_sim.calls("getMultipleLeads") == 3  # before, A, B: B did not share A's call
    c = gw.leads(email=email)
    assert company_of(c) == new_company, "the old value was cached after the sync"
    assert c.headers.get("X-Cache") == "HIT"


def test_sync_new_lead_clears_negative_entry(gw):
    email = "late-%s@example.net" % uuid.uuid4().hex[:8]
    assert gw.leads(email=email).json()["leads"] == []
    r = gw.post("/leads/sync", {"leads": [{"email": email}]})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "CREATED"
    new_id = r.json()["results"][0]["id"]
    assert [x["id"] for x in gw.leads(email=email).json()["leads"]] == [new_id]


def test_sync_xml_metacharacters_round_trip(gw):
    tricky = "<b>&amp;]]>\"'"
    email = "xml-%s@example.net" % uuid.uuid4().hex[:8]
    r = gw.post("/leads/sync", {"leads": [{"email": email, "attributes": {
        "Company": tricky, "Title": "a < b && c > d"}}]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "CREATED"
    lead = gw.leads(email=email, headers=NO_CACHE).json()["leads"][0]
    assert lead["attributes"]["Company"] == tricky
    assert lead["attributes"]["Title"] == "a < b && c > d"


def test_sync_by_id_updates(gw):
    joe = gw.get("/leads/67508").json()
    r = gw.post("/leads/sync", {"leads": [{"id": 67508, "attributes": {"LeadScore": 42}}]})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res == {"index": 0, "id": 67508, "status": "UPDATED"}
    assert joe["attributes"]["LeadScore"] == 11
    assert gw.get("/leads/67508").json()["attributes"]["LeadScore"] == 42


def test_sync_all_rate_limited_is_429(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"ratelimit.calls_per_window": 1,
                                              "ratelimit.window_seconds": 60,
                                              "ratelimit.queue_timeout_ms": 200})
    assert gw.leads(email=demo_email(5)).status_code == 200  # spends the window
    calls = fresh_sim.total_calls()
    r = gw.post("/leads/sync", {"leads": [{"email": demo_email(5), "attributes": {"City": "X"}}]})
    assert r.status_code == 429, r.text
    assert r.headers.get("Retry-After")
    assert fresh_sim.total_calls() == calls
