"""Cursors: paging Demo.All (2,500 leads), and tampered, expired and mismatched cursors."""
import time

from leadhelpers import is_problem


def test_page_demo_all(gw, fresh_sim):
    seen, pages, cursor = [], [], None
    while True:
        params = {"cursor": cursor} if cursor else {"staticList": "Demo.All", "limit": "1000"}
        r = gw.leads(**params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        seen += [x["id"] for x in body["leads"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and len(cursor) < 4096
        assert all(c.isalnum() or c in "-_." for c in cursor)  # URL-safe
        assert len(pages) < 10
    assert [len(p["leads"]) for p in pages] == [1000, 1000, 500]
    assert [p["remaining"] for p in pages] == [1500, 500, 0]
    assert len(seen) == 2500 and len(set(seen)) == 2500
    assert fresh_sim.calls("getMultipleLeads") == 3


def test_cursor_with_repeated_parameters(gw):
    r = gw.leads(staticListId="1", limit="700")
    assert r.status_code == 200
    cur = r.json()["next_cursor"]
    r2 = gw.leads(staticListId="1", limit="700", cursor=cur)
    assert r2.status_code == 200, r2.text
    assert len(r2.json()["leads"]) == 700
    assert not {x["id"] for x in r.json()["leads"]} & {x["id"] for x in r2.json()["leads"]}


def first_cursor(gw, **params):
    r = gw.leads(**params)
    assert r.status_code == 200, r.text
    cur = r.json()["next_cursor"]
    assert cur
    return cur


def test_tampered_cursor(gw, fresh_sim):
    cur = first_cursor(gw, staticList="Demo.All", limit="100")
    calls = fresh_sim.total_calls()
    payload, _, mac = cur.partition(".")
    flipped = ("A" if payload[5] != "A" else "B")
    bad = [payload[:5] + flipped + payload[6:] + "." + mac,
           payload + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"),
           "not-a-cursor", cur + "x", ""]
    for token in bad[:-1]:
        body = is_problem(gw.leads(cursor=token), 400)
        assert "cursor" in body.get("detail", "")
    assert fresh_sim.total_calls() == calls


def test_expired_cursor(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"cursor.ttl_seconds": 1})
    cur = first_cursor(gw, staticList="Demo.All", limit="100")
    time.sleep(2.2)
    body = is_problem(gw.leads(cursor=cur), 400)
    assert "expired" in body.get("detail", "")


def test_cursor_of_another_gateway_secret(fresh_sim, gateway_factory):
    a = gateway_factory(fresh_sim.endpoint, {"cursor.secret": "one-secret-for-a"})
    b = gateway_factory(fresh_sim.endpoint, {"cursor.secret": "another-secret-b"})
    cur = first_cursor(a, staticList="Demo.All", limit="100")
    is_problem(b.leads(cursor=cur), 400)
    c = gateway_factory(fresh_sim.endpoint, {"cursor.secret": "one-secret-for-a"})
    assert c.leads(cursor=cur).status_code == 200  # shared secret: any replica pages on


def test_mismatched_cursor(gw, fresh_sim):
    cur = first_cursor(gw, staticList="Demo.All", limit="100")
    calls = fresh_sim.total_calls()
    for params in ({"staticList": "SMSProgram.listForTesting"}, {"staticListId": "6926"},
                   {"staticList": "Demo.All", "limit": "200"},
                   {"staticList": "Demo.All", "fields": "FirstName"},
                   {"updatedSince": "2024-01-01T00:00:00Z"}):
        body = is_problem(gw.leads(cursor=cur, **params), 400)
        assert "cursor" in body.get("detail", "")
    # key lookups take no cursor
    is_problem(gw.leads(email="joe@marketo.com", cursor=cur), 400)
    assert fresh_sim.total_calls() == calls
