"""What the replicas owe Marketo and their clients when Redis fails: the
outbound budget stays inside Marketo's limits across a Redis loss or a Redis
restart (issue 12 item 6).

Calls are counted where Marketo counts them: at the sim (its /_sim/stats
arrival times and faults). List pages are used to spend the budget: one
request is exactly one getMultipleLeads call (never paced, never merged,
never cached).
"""
from concurrent.futures import ThreadPoolExecutor

LOOKUP_OP = "getMultipleLeads"


def max_in_window(times, window_ms):
    """Most arrivals in any rolling window (t - window, t]."""
    worst, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_ms:
            lo += 1
        worst = max(worst, hi - lo + 1)
    return worst


def list_page(g, timeout=60):
    """One list lookup: exactly one getMultipleLeads call when it goes out."""
    return g.session.get(g.base + "/leads", params={"staticListId": "6926"}, timeout=timeout)


def spend(g, n):
    """n list lookups one after the other; each must succeed."""
    for _ in range(n):
        r = list_page(g)
        assert r.status_code == 200, r.text


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
