"""GET /leads and GET /leads/{id} end to end: key types, lists, updated-at ranges, fields, cache."""
import datetime as dt

import pytest

from leadhelpers import demo_email, is_problem

KEY_PARAMS = {
    # query parameter -> (lead attribute carrying the key, how many sim leads share a value)
    "cookie": "Cookies",
    "leadOwnerEmail": "LeadOwnerEmail",
    "sfdcAccountId": "SFDCAccountId",
    "sfdcContactId": "SFDCContactId",
    "sfdcLeadId": "SFDCLeadId",
    "sfdcLeadOwnerId": "SFDCLeadOwnerId",
    "sfdcOpptyId": "SFDCOpptyId",
}


def one_by_email(gw, email, **extra):
    r = gw.leads(email=email, **extra)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["leads"]) == 1, body
    return body["leads"][0]


def test_docs_example_leads_typed(gw):
    r = gw.leads(email="formtest1@marketo.com,joe@marketo.com")
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json()
    assert body["remaining"] == 0 and body["next_cursor"] is None
    by_id = {lead["id"]: lead for lead in body["leads"]}
    assert set(by_id) == {65835, 67508}
    assert [lead["id"] for lead in body["leads"]] == [65835, 67508]  # request order
    joe = by_id[67508]
    assert joe["email"] == "joe@marketo.com"
    assert joe["foreignSysPersonId"] is None
    assert joe["attributes"]["LeadScore"] == 11 and type(joe["attributes"]["LeadScore"]) is int
    assert joe["attributes"]["Date_of_purchase"] == "2012-04-04"
    assert by_id[65835]["email"] == "formtest1@marketo.com"


def test_email_case_insensitive_and_repeated_param(gw):
    r = gw.get("/leads?email=JOE@Marketo.com&email=lead7@example.com")
    assert r.status_code == 200, r.text
    emails = [lead["email"].lower() for lead in r.json()["leads"]]
    assert emails == ["joe@marketo.com", "lead7@example.com"]


def test_id_lookup_and_lead_by_id(gw):
    joe = one_by_email(gw, "joe@marketo.com")
    r = gw.leads(id="67508,65835")
    assert r.status_code == 200
    assert [lead["id"] for lead in r.json()["leads"]] == [67508, 65835]
    r = gw.get("/leads/67508")
    assert r.status_code == 200, r.text
    assert r.json() == joe
    lead7 = one_by_email(gw, demo_email(7))
    r = gw.get("/leads/%d" % lead7["id"])
    assert r.status_code == 200 and r.json()["email"] == demo_email(7)


def test_lead_by_id_missing_and_invalid(gw):
    body = is_problem(gw.get("/leads/2147000000"), 404)
    assert "not found" in body.get("detail", "").lower()
    # the negative answer is cached: a second time is a HIT
    r = gw.get("/leads/2147000000")
    assert r.status_code == 404 and r.headers.get("X-Cache") == "HIT"
    for bad in ("0", "-5", "abc", "2147483648", "12a", "99999999999999999999"):
        is_problem(gw.get("/leads/" + bad), 400)


@pytest.mark.parametrize("param", sorted(KEY_PARAMS))
def test_each_key_type(gw, param):
    i = 42
    lead = one_by_email(gw, demo_email(i))
    attr = KEY_PARAMS[param]
    value = lead["attributes"][attr]
    assert value
    r = gw.leads(**{param: value})
    assert r.status_code == 200, r.text
    leads = r.json()["leads"]
    assert lead["id"] in [x["id"] for x in leads]
    for x in leads:  # every lead returned carries the key
        got = x["attributes"][attr]
        assert (got.lower() == value.lower()) if param == "leadOwnerEmail" else got == value
    if param in ("leadOwnerEmail", "sfdcLeadOwnerId"):
        assert len(leads) == 250  # 2,500 leads, one owner in ten
    else:
        assert len(leads) == 1


def test_many_keys_of_one_type_matched_back(gw, fresh_sim):
    ids = ["001A%d" % i for i in range(1, 121)]
    r = gw.leads(sfdcAccountId=",".join(ids), fields="FirstName")
    assert r.status_code == 200, r.text
    leads = r.json()["leads"]
    assert len(leads) == 120
    # the mapping attribute was only fetched for matching: not shown
    assert all(set(x["attributes"]) <= {"FirstName"} for x in leads)
    assert fresh_sim.calls("getMultipleLeads") == 2
    # each key was cached with its own lead
    r = gw.leads(sfdcAccountId="001A5", fields="FirstName")
    assert r.headers.get("X-Cache") == "HIT"
    assert r.json()["leads"] == [leads[4]]
    assert fresh_sim.calls("getMultipleLeads") == 2


def test_150_emails_two_calls_merged(gw, fresh_sim):
    emails = [demo_email(i) for i in range(1, 151)]
    r = gw.get("/leads", params={"email": ",".join(emails)})
    assert r.status_code == 200, r.text
    leads = r.json()["leads"]
    assert [x["email"] for x in leads] == emails
    assert len({x["id"] for x in leads}) == 150
    assert fresh_sim.calls("getMultipleLeads") == 2


def test_unknown_email_is_empty_and_cached(gw, fresh_sim):
    r = gw.leads(email="nobody@nowhere.example")
    assert r.status_code == 200 and r.json()["leads"] == []
    assert r.headers.get("X-Cache") == "MISS"
    r = gw.leads(email="nobody@nowhere.example")
    assert r.json()["leads"] == [] and r.headers.get("X-Cache") == "HIT"
    assert fresh_sim.calls("getMultipleLeads") == 1


def test_max_keys(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.max_keys": 50})
    ok = gw.leads(email=",".join(demo_email(i) for i in range(1, 51)))
    assert ok.status_code == 200 and len(ok.json()["leads"]) == 50
    calls = fresh_sim.total_calls()
    is_problem(gw.leads(email=",".join(demo_email(i) for i in range(1, 52))), 400)
    assert fresh_sim.total_calls() == calls


def test_fields_restrict_attributes(gw):
    lead = one_by_email(gw, "joe@marketo.com", fields="LeadScore,Company")
    assert set(lead["attributes"]) <= {"LeadScore", "Company"}
    assert lead["attributes"]["LeadScore"] == 11
    full = one_by_email(gw, "joe@marketo.com")
    assert len(full["attributes"]) > 2


def test_cache_hit_miss_partial_bypass(gw, fresh_sim):
    a, b = demo_email(11), demo_email(12)
    r1 = gw.leads(email=a)
    assert r1.headers.get("X-Cache") == "MISS"
    r2 = gw.leads(email=a)
    assert r2.headers.get("X-Cache") == "HIT" and r2.json() == r1.json()
    assert fresh_sim.calls("getMultipleLeads") == 1
    r3 = gw.leads(email=a + "," + b)
    assert r3.headers.get("X-Cache") == "PARTIAL"
    assert [x["email"] for x in r3.json()["leads"]] == [a, b]
    assert fresh_sim.calls("getMultipleLeads") == 2
    r4 = gw.leads(email=a + "," + b, headers={"Cache-Control": "no-cache"})
    assert r4.headers.get("X-Cache") == "BYPASS"
    assert fresh_sim.calls("getMultipleLeads") == 3
    # a different field set is a different cache entry
    r5 = gw.leads(email=a, fields="FirstName")
    assert r5.headers.get("X-Cache") == "MISS"
    assert fresh_sim.calls("getMultipleLeads") == 4


def test_static_list_by_name_and_id(gw):
    r = gw.leads(staticList="SMSProgram.listForTesting")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(x["id"] for x in body["leads"]) == [65835, 67508]
    assert body["next_cursor"] is None and body["remaining"] == 0
    r = gw.leads(staticListId="6926", fields="LeadScore")
    assert r.status_code == 200, r.text
    leads = r.json()["leads"]
    assert sorted(x["id"] for x in leads) == [65835, 67508]
    assert all(set(x["attributes"]) <= {"LeadScore"} for x in leads)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def walk(gw, params, limit, sizes=None, repeat=False):
    """Follows next_cursor to the end; returns (leads, pages). sizes collects
    each page's length; repeat sends the original parameters with the cursor."""
    out, pages = [], 0
    p = dict(params, limit=str(limit))
    while True:
        r = gw.leads(**p)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS"
        body = r.json()
        pages += 1
        assert len(body["leads"]) <= limit
        if sizes is not None:
            sizes.append(len(body["leads"]))
        out += body["leads"]
        if body["next_cursor"] is None:
            return out, pages
        p = dict(params, cursor=body["next_cursor"]) if repeat else {"cursor": body["next_cursor"]}
        assert pages < 50


def test_updated_range_and_windows(gw, fresh_sim):
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    # 10 days, one window
    since, until = now - dt.timedelta(days=20), now - dt.timedelta(days=10)
    leads, _ = walk(gw, {"updatedSince": iso(since), "updatedUntil": iso(until)}, 1000)
    assert leads, "the sim spreads its leads over 60 days"
    ids = [x["id"] for x in leads]
    assert len(ids) == len(set(ids))
    for x in leads:
        t = dt.datetime.fromisoformat(x["attributes"]["LastActivityDate"])
        assert since <= t <= until
    # 65 days: three windows behind one cursor, every generated lead once
    sizes = []
    leads, pages = walk(gw, {"updatedSince": iso(now - dt.timedelta(days=65))}, 1000, sizes)
    ids = [x["id"] for x in leads]
    assert len(ids) == len(set(ids))
    generated = {x["email"] for x in leads if x["email"].endswith("@example.com")}
    assert len(generated) == 2500
    assert pages >= 3
    # pages that end a window early are filled from the next window
    assert all(n == 1000 for n in sizes[:-1]), sizes
    # the same walk, repeating updatedSince (without updatedUntil) beside each cursor
    again, _ = walk(gw, {"updatedSince": iso(now - dt.timedelta(days=65))}, 1000, repeat=True)
    assert {x["id"] for x in again} >= set(ids) - {65835, 67508}
    # no call ever asked Marketo for more than 30 days (the sim would fault 20022)
    assert fresh_sim.stats()["operations"]["getMultipleLeads"].get("faults", 0) == 0


def test_updated_limit_pages(gw):
    now = dt.datetime.now(dt.timezone.utc)
    since = iso(now - dt.timedelta(days=3))
    leads, pages = walk(gw, {"updatedSince": since}, 40)
    ids = [x["id"] for x in leads]
    assert len(ids) == len(set(ids)) and len(ids) > 40
    assert pages == -(-len(ids) // 40) or pages == -(-len(ids) // 40) + 1
