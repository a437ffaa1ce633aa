"""Per-client fairness: auth.key_calls_per_minute.

One noisy frontend cannot eat the whole Marketo budget: requests that need
Marketo are counted per API key; past the share, 429 with RateLimit,
RateLimit-Policy and Retry-After, and nothing reaches Marketo. Cache hits cost
nothing, and other keys are not affected.
"""
import requests


def _get(gw, key, email):
    return requests.get(gw.base + "/leads", params={"email": email},
                        headers={"X-API-Key": key}, timeout=30)


def test_noisy_key_gets_429_others_unaffected(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"auth.api_keys": "noisy-key,quiet-key",
                                              "auth.key_calls_per_minute": 3})
    codes = []
    for i in range(3):
        r = _get(gw, "noisy-key", "lead%d@example.com" % (10 + i))
        codes.append(r.status_code)
        assert r.headers["RateLimit-Policy"] == '"marketo";q=3;w=60'
        assert r.headers["RateLimit"].startswith('"marketo";r=%d;' % (2 - i))
    assert codes == [200, 200, 200]
    calls = fresh_sim.calls("getMultipleLeads")
    assert calls == 3

    r = _get(gw, "noisy-key", "lead20@example.com")
    assert r.status_code == 429
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["RateLimit"].startswith('"marketo";r=0;t=')
    assert fresh_sim.calls("getMultipleLeads") == calls, "a refused request sends nothing"

    # a cache hit needs no Marketo: still served to the noisy key
    hit = _get(gw, "noisy-key", "lead10@example.com")
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT"
    # the other key has its own share
    assert _get(gw, "quiet-key", "lead21@example.com").status_code == 200
    # Authorization: Bearer counts against the same key
    r = requests.get(gw.base + "/leads", params={"email": "lead22@example.com"},
                     headers={"Authorization": "Bearer noisy-key"}, timeout=30)
    assert r.status_code == 429


def test_sync_counts_once_per_request(fresh_sim, gateway_factory):
    gw = gateway_factory(fresh_sim.endpoint, {"auth.api_keys": "k1",
                                              "auth.key_calls_per_minute": 1,
                                              "gateway.sync_batch_size": 2})
    body = {"leads": [{"email": "fair%d@example.com" % i} for i in range(5)]}
    r = requests.post(gw.base + "/leads/sync", json=body, headers={"X-API-Key": "k1"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 5  # three batches, one request
    r = requests.post(gw.base + "/leads/sync", json=body, headers={"X-API-Key": "k1"}, timeout=30)
    assert r.status_code == 429
    assert fresh_sim.calls("syncMultipleLeads") == 3


def test_off_by_default(fresh_sim, gw):
    for i in range(5):
        r = gw.leads(email="lead%d@example.com" % (30 + i))
        assert r.status_code == 200
        assert "RateLimit" not in r.headers


EMPTY_PAST = {"updatedSince": "1970-01-01T00:00:00Z", "updatedUntil": "2000-01-01T00:00:00Z",
              "limit": "1"}


def test_empty_range_walk_is_bounded_per_request(fresh_sim, gw):
    """An updated-at range of 30 years with nothing in it: one request walks
    at most 1 + 8 windows (not 65), then answers an empty page with a cursor
    that goes on where it stopped."""
    r = gw.leads(**EMPTY_PAST)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["leads"] == [] and page["next_cursor"], page
    assert fresh_sim.calls("getMultipleLeads") == 9
    r = gw.leads(cursor=page["next_cursor"])
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"], r.text
    assert fresh_sim.calls("getMultipleLeads") == 18


def test_window_walk_charged_per_call(fresh_sim, gateway_factory):
    """Each further window is one more Marketo call on the key's budget:
    with 5 calls a minute the walk stops after 5 calls with a cursor, and
    the key's next request needing Marketo is refused without a call."""
    gw = gateway_factory(fresh_sim.endpoint, {"auth.api_keys": "walker,other",
                                              "auth.key_calls_per_minute": 5})
    r = requests.get(gw.base + "/leads", params=EMPTY_PAST, headers={"X-API-Key": "walker"},
                     timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["leads"] == [] and r.json()["next_cursor"]
    assert fresh_sim.calls("getMultipleLeads") == 5
    r = _get(gw, "walker", "lead30@example.com")
    assert r.status_code == 429, r.text
    assert r.json()["status"] == 429
    assert fresh_sim.calls("getMultipleLeads") == 5, "a refused request sends nothing"
    assert _get(gw, "other", "lead30@example.com").status_code == 200
