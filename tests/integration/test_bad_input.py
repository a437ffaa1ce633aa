"""Bad input: each is a 4xx problem+json and sends nothing to Marketo (sim stats unchanged)."""
import json

import pytest

from leadhelpers import demo_email, is_problem

BAD_QUERIES = [
    "/leads",                                                   # no selector
    "/leads?colour=blue",                                       # unknown parameter
    "/leads?email=a@x.com&colour=blue",
    "/leads?email=a@x.com&staticList=Demo.All",                 # two selectors
    "/leads?email=a@x.com&id=5",
    "/leads?staticList=Demo.All&updatedSince=2024-01-01T00:00:00Z",
    "/leads?updatedSince=yesterday",                            # bad RFC 3339
    "/leads?updatedSince=2024-13-01T00:00:00Z",
    "/leads?updatedSince=2024-01-01T00:00:00Z&updatedUntil=2024-02-30T00:00:00Z",
    "/leads?staticList=Demo.All&limit=0",                       # limit out of range
    "/leads?staticList=Demo.All&limit=1000000",
    "/leads?staticList=Demo.All&limit=ten",
    "/leads?staticList=Demo.All&limit=-1",
    "/leads?email=%FF%FE@x.com",                                # invalid UTF-8
    "/leads?staticList=%FF",
    "/leads?email=",                                            # empty value
    "/leads?staticListId=abc",
    "/leads?staticListId=0",
    "/leads?id=abc",
    "/leads?email=a%00b@x.com",                                 # control character
    "/leads?cursor=garbage",
]


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_bad_query(gw, fresh_sim, path):
    before = fresh_sim.total_calls()
    r = gw.get_raw(path)
    body = is_problem(r, 400)
    assert body.get("detail")
    assert fresh_sim.total_calls() == before
    assert gw.alive()


def test_huge_email_value(gw, fresh_sim):
    before = fresh_sim.total_calls()
    r = gw.get("/leads", params={"email": "a" * 100000 + "@x.com"})
    assert 400 <= r.status_code < 500
    if r.status_code != 414 and r.status_code != 431:
        is_problem(r, r.status_code)
    assert fresh_sim.total_calls() == before
    # the detail never echoes the key value
    assert "aaaaaaaaaa" not in r.text
    assert gw.alive()


GOOD = {"leads": [{"email": "x@example.com"}]}
BAD_BODIES = [
    b"{not json",
    b"",
    b"[]",
    b'{"leads": []}',                                    # empty leads
    b'{"leads": {}}',
    b'{"leads": [{}]}',                                  # no key field
    b'{"leads": [{"attributes": {"FirstName": "x"}}]}',
    b'{"leads": [{"email": 5}]}',                        # wrong types
    b'{"leads": [{"id": "12"}]}',
    b'{"leads": [{"email": "a@x.com", "attributes": []}]}',
    b'{"leads": [{"email": "a@x.com", "attributes": {"A": {"b": 1}}}]}',
    b'{"leads": [{"email": "a@x.com"}], "dedup": "yes"}',
    b'{"leads": [{"email": "a@x.com", "colour": "blue"}]}',   # unknown member
    b'{"leads": [{"email": "a\xff@x.com"}]}',                 # invalid UTF-8
    b'{"leads": [{"email": "a@x.com", "attributes": {"City": "\xc3\x28"}}]}',
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_sync_body(gw, fresh_sim, body):
    before = fresh_sim.total_calls()
    r = gw.post("/leads/sync", data=body)
    problem = is_problem(r, 400)
    assert problem.get("detail")
    assert fresh_sim.total_calls() == before


def test_sync_body_too_large(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.max_body_bytes": 1024})
    leads = [{"email": demo_email(i), "attributes": {"City": "x" * 50}} for i in range(1, 40)]
    data = json.dumps({"leads": leads})
    assert len(data) > 1024
    before = fresh_sim.total_calls()
    r = gw.post("/leads/sync", data=data)
    is_problem(r, 413)
    assert fresh_sim.total_calls() == before
    assert gw.post("/leads/sync", GOOD).status_code == 200


def test_sync_too_many_leads(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"gateway.max_sync_leads": 10})
    before = fresh_sim.total_calls()
    r = gw.post("/leads/sync", {"leads": [{"email": demo_email(i)} for i in range(11)]})
    is_problem(r, 400)
    assert fresh_sim.total_calls() == before


def test_no_api_key(gw, fresh_sim):
    before = fresh_sim.total_calls()
    import requests
    r = requests.get(gw.base + "/leads", params={"email": "joe@marketo.com"}, timeout=10)
    is_problem(r, 401)
    r = requests.post(gw.base + "/leads/sync", json=GOOD, timeout=10)
    is_problem(r, 401)
    assert fresh_sim.total_calls() == before
