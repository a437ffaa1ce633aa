"""What the replicas owe Marketo and their clients when Redis fails: the
outbound budget stays inside Marketo's limits across a Redis loss or a Redis
restart (issue 12 item 6), and a sync answered during a Redis stall never
leaves another replica serving the pre-sync entry (item 7).

Calls are counted where Marketo counts them: at the sim (its /_sim/stats
arrival times and faults). List pages are used to spend the budget: one
request is exactly one getMultipleLeads call (never paced, never merged,
never cached).
"""
import time
from concurrent.futures import ThreadPoolExecutor
from mgw_harness import max_in_window  # noqa: E402

LOOKUP_OP = "getMultipleLeads"


def list_page(g, timeout=60):
    """One list lookup: exactly one getMultipleLeads call when it goes out."""
    return g.session.get(g.base + "/leads", params={"staticListId": "6926"}, timeout=timeout)


def spend(g, n):
    """n list lookups one after the other; each must succeed."""
    for _ in range(n):
        r = list_page(g)
        assert r.status_code == 200, r.text


def company(resp):
    leads = resp.json()["leads"]
    assert len(leads) == 1, resp.text
    return leads[0]["attributes"].get("Company")


# ---- item 6: the outbound budget around Redis failures ----------------------

WINDOW_S = 8
PER_WINDOW = 30


def window_settings(**extra):
    s = {"ratelimit.calls_per_window": PER_WINDOW, "ratelimit.window_seconds": WINDOW_S,
         "ratelimit.max_concurrent": 10, "ratelimit.daily_quota": 100000,
         "ratelimit.queue_timeout_ms": 25000, "marketo.retry_max_attempts": 1,
         "redis.command_timeout_ms": 300, "redis.connect_timeout_ms": 300}
    s.update(extra)
    return s


def burst(gws, per_replica):
    """per_replica list lookups on each replica at once; their statuses."""
    jobs = [g for g in gws for _ in range(per_replica)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        return [r.status_code for r in ex.map(lambda g: list_page(g, timeout=60), jobs)]


def assert_inside_window(sim):
    st = sim.op(LOOKUP_OP)
    times = sorted(st.get("times_ms", []))
    worst = max_in_window(times, WINDOW_S * 1000)
    print("calls %d, faults %d, busiest %d s window %d (limit %d)"
          % (st.get("calls", 0), st.get("faults", 0), WINDOW_S, worst, PER_WINDOW))
    assert st.get("faults", 0) == 0, "Marketo (the sim) refused calls: the budget overshot"
    assert worst <= PER_WINDOW


def test_fallback_window_starts_from_the_calls_already_made(gateways, sim, redis):
    # Marketo's window, scaled down: 30 calls per 8 s at the sim and in the
    # gateways (fallback share 1/3: 10 per replica while Redis is away).
    sim.limits({"calls_per_window": PER_WINDOW, "window_seconds": WINDOW_S,
                "max_concurrent": 10, "daily_quota": 100000})
    a, b = gateways(2, window_settings())
    spend(a, 26)          # most of the window, through Redis, by one replica
    spend(b, 1)           # the other replica has heard from Redis since
    assert sim.calls(LOOKUP_OP) == 27
    redis.kill()
    # Both replicas, on their own shares now, get work at once; what they
    # send in the same window must keep the sim's window within its limit.
    statuses = burst([a, b], 10)
    assert_inside_window(sim)
    assert all(s == 200 for s in statuses), statuses
    assert sum(g.metric("limiter_fallback_total") for g in (a, b)) >= 1


def test_window_survives_a_redis_restart(gateways, sim, redis):
    sim.limits({"calls_per_window": PER_WINDOW, "window_seconds": WINDOW_S,
                "max_concurrent": 10, "daily_quota": 100000})
    (a,) = gateways(1, window_settings())
    spend(a, 27)
    redis.restart()       # empty: the shared window is gone
    statuses = burst([a], 10)
    assert_inside_window(sim)
    assert all(s == 200 for s in statuses), statuses


def test_daily_count_survives_a_redis_restart(gateways, sim, redis):
    quota = 20
    sim.limits({"calls_per_window": 1000, "window_seconds": 20, "max_concurrent": 10,
                "daily_quota": quota})
    a, b = gateways(2, {"ratelimit.calls_per_window": 1000, "ratelimit.daily_quota": quota,
                        "marketo.retry_max_attempts": 1,
                        "redis.command_timeout_ms": 300, "redis.connect_timeout_ms": 300})
    spend(a, 9)
    spend(b, 9)           # 18 of the day's 20 spent, b saw the latest count
    redis.restart()       # empty: the day's count is gone
    got = [list_page(b).status_code for _ in range(4)]
    # a last heard 9 from Redis: its report must not lower the count
    got += [list_page(a).status_code for _ in range(2)]
    print("after the restart:", got)
    st = sim.op(LOOKUP_OP)
    assert st.get("faults", 0) == 0, "Marketo (the sim) refused calls with 20015"
    assert got == [200, 200, 429, 429, 429, 429]
    assert st.get("calls", 0) == quota


# ---- item 7: no stale hit after a sync answered during a Redis stall ---------

def test_sync_during_redis_stall_is_confirmed_before_it_answers(gateways, sim, redis):
    a, b = gateways(2)
    email = "lead41@example.com"
    r = a.lookup(email)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS", r.text
    old = company(r)
    r = b.lookup(email)
    assert r.headers.get("X-Cache") == "HIT" and company(r) == old

    pause_ms = 2000
    t_pause = time.monotonic()
    assert redis.command("CLIENT", "PAUSE", str(pause_ms), "ALL") == "+OK"
    s = a.sync([{"email": email, "attributes": {"Company": "StallCo"}}])
    t_answer = time.monotonic()
    assert s.status_code == 200, s.text
    body = s.json()
    assert body["updated"] == 1, body
    print("sync answered %.2f s after the pause began (pause %.1f s), X-Cache-Invalidation: %s"
          % (t_answer - t_pause, pause_ms / 1000, s.headers.get("X-Cache-Invalidation")))

    # From A's answer on, B never serves the old value as a hit.
    seen = []
    deadline = max(t_answer, t_pause + pause_ms / 1000) + 4.0
    while time.monotonic() < deadline:
        r = b.lookup(email, timeout=10)
        assert r.status_code == 200, r.text
        seen.append((r.headers.get("X-Cache"), company(r)))
        time.sleep(0.1)
    print("B after the sync:", sorted(set(seen)))
    assert all(c == "StallCo" for _, c in seen), seen
    assert any(x == "HIT" for x, _ in seen), seen  # the cache works again
    # Redis came back within the wait: the answer says the invalidation is
    # confirmed.
    assert s.headers.get("X-Cache-Invalidation") == "confirmed"
    assert "cache_invalidation" not in body


def test_unconfirmed_sync_says_so_and_is_replayed_without_traffic(gateways, sim, redis):
    # The sync's whole deadline is shorter than the stall: it must answer
    # before Redis is back, and say that the cache may be stale.
    a, b = gateways(2, {"gateway.request_timeout_ms": 1500})
    email = "lead42@example.com"
    r = a.lookup(email)
    assert r.status_code == 200, r.text
    old = company(r)
    assert b.lookup(email).headers.get("X-Cache") == "HIT"

    pause_ms = 4000
    t_pause = time.monotonic()
    assert redis.command("CLIENT", "PAUSE", str(pause_ms), "ALL") == "+OK"
    s = a.sync([{"email": email, "attributes": {"Company": "LateCo"}}])
    assert s.status_code == 200, s.text
    assert time.monotonic() - t_pause < pause_ms / 1000, "answered after the stall: nothing tested"
    body = s.json()
    assert body["updated"] == 1, body

    # No request goes through A from here on: its kept invalidation must be
    # replayed by itself once Redis answers, and B must then stop serving
    # the old entry.
    while time.monotonic() < t_pause + pause_ms / 1000:
        time.sleep(0.05)
    t_resume = time.monotonic()
    seen = []
    fresh_at = None
    while time.monotonic() < t_resume + 8.0:
        r = b.lookup(email, timeout=10)
        assert r.status_code == 200, r.text
        c = company(r)
        seen.append((round(time.monotonic() - t_resume, 2), r.headers.get("X-Cache"), c))
        if c == "LateCo" and fresh_at is None:
            fresh_at = time.monotonic() - t_resume
        if fresh_at is not None:
            assert c == "LateCo", seen  # never the old value again
        if fresh_at is not None and time.monotonic() - t_resume > fresh_at + 1.0:
            break
        time.sleep(0.1)
    print("B after Redis resumed:", seen)
    assert fresh_at is not None, "B kept serving %r" % old
    assert fresh_at < 6.0, seen
    # And the answer said that the cache might still be stale.
    assert s.headers.get("X-Cache-Invalidation") == "pending"
    assert body.get("cache_invalidation") == "pending"
