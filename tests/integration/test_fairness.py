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
