/* tests/redis/test_redis_limiter.c - the Redis limiter and the fallback limiter
 * against a real redis-server, with several instances standing for replicas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/redis.h"
#include "tests/redis/harness.h"

static rh_server *srv;

static int setup(void **state)
{
    (void)state;
    if (srv != NULL && srv->proc.pid > 0)
        rh_command_int(srv, "FLUSHALL");
    return 0;
}

#define NEED_SERVER()                                                               \
    do {                                                                            \
        if (srv == NULL) {                                                          \
            print_message("# REDIS_SERVER not set or redis-server did not start\n"); \
            skip();                                                                 \
        }                                                                           \
    } while (0)

/* A Redis limiter on its own connection manager (like one replica). */
static gw_limiter *new_limiter(const char *prefix, const gw_limit_params *p, int64_t lease_ms)
{
    gw_redis *r = rh_client(srv, prefix, 500);
    assert_non_null(r);
    gw_limiter *l = gw_limiter_redis_new(r, p, lease_ms);
    gw_redis_unref(r);
    assert_non_null(l);
    return l;
}

/* ---- window exactness across replicas ---------------------------------------- */

#define MAX_CALLS 4096

/* One hammering replica. */
typedef struct hammer {
    gw_limiter *l;               /* its own limiter (own connections) */
    int64_t run_ms;              /* how long to hammer */
    int64_t hold_ms;             /* how long each call holds its slot */
    int64_t before[MAX_CALLS];   /* wall ms just before each successful acquire call */
    int64_t after[MAX_CALLS];    /* wall ms just after it returned */
    size_t n;                    /* successful acquires */
    size_t errors;               /* GW_LIMIT_ERROR answers */
} hammer;

static _Atomic int held_now;  /* slots held across every replica */
static _Atomic int held_peak; /* highest held_now seen */

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    int64_t end = rh_mono_ms() + h->run_ms;
    while (rh_mono_ms() < end && h->n < MAX_CALLS) {
        gw_slot slot;
        int64_t retry = 0;
        int64_t t0 = rh_now_ms();
        gw_limit_result res = h->l->ops->try_acquire(h->l, t0, &slot, &retry);
        int64_t t1 = rh_now_ms();
        if (res == GW_LIMIT_OK) {
            int now = atomic_fetch_add(&held_now, 1) + 1;
            int peak = atomic_load(&held_peak);
            while (now > peak && !atomic_compare_exchange_weak(&held_peak, &peak, now))
                ;
            h->before[h->n] = t0;
            h->after[h->n] = t1;
            h->n++;
            if (h->hold_ms > 0)
                rh_sleep_ms(h->hold_ms);
            atomic_fetch_sub(&held_now, 1);
            h->l->ops->release(h->l, &slot, rh_now_ms());
        } else if (res == GW_LIMIT_WAIT) {
            rh_sleep_ms(retry < 20 ? retry : 20);
        } else {
            h->errors++;
            rh_sleep_ms(5);
        }
    }
    return NULL;
}

/* Runs three replicas for run_ms; fills h[3]. */
static void run_three(hammer h[3], const gw_limit_params *p, int64_t run_ms, int64_t hold_ms)
{
    pthread_t th[3];
    atomic_store(&held_now, 0);
    atomic_store(&held_peak, 0);
    for (int i = 0; i < 3; i++) {
        memset(&h[i], 0, sizeof h[i]);
        h[i].l = new_limiter("rl:", p, 5000);
        h[i].run_ms = run_ms;
        h[i].hold_ms = hold_ms;
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        h[i].l->ops->destroy(h[i].l);
        assert_int_equal(h[i].errors, 0);
    }
}

static void test_window_exact_across_replicas(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 20, .window_ms = 1000, .max_concurrent = 100,
                         .daily_quota = 0};
    static hammer h[3];
    int64_t start = rh_now_ms();
    run_three(h, &p, 3000, 5);
    int64_t span = rh_now_ms() - start;

    size_t total = 0;
    for (int i = 0; i < 3; i++)
        total += h[i].n;
    /* Every call i was taken (in Redis's clock) somewhere in [before_i,
     * after_i]. For each x = after_j, the calls with before_i > x - W and
     * after_i <= x were all taken inside (x - W, x]: never more than 20. */
    size_t worst = 0;
    for (int a = 0; a < 3; a++) {
        for (size_t j = 0; j < h[a].n; j++) {
            int64_t x = h[a].after[j];
            size_t in = 0;
            for (int b = 0; b < 3; b++)
                for (size_t i = 0; i < h[b].n; i++)
                    if (h[b].before[i] > x - p.window_ms && h[b].after[i] <= x)
                        in++;
            if (in > worst)
                worst = in;
        }
    }
    /* The budget over the run: 20 per window of the span, sustained. */
    size_t budget = (size_t)(20 * span / 1000);
    print_message("# %zu calls in %lld ms (budget %zu), busiest window %zu\n", total,
                  (long long)span, budget, worst);
    assert_true(worst <= 20);
    assert_true(worst >= 18);
    assert_true(total * 10 >= budget * 8);
    /* Every replica got some. */
    for (int i = 0; i < 3; i++)
        assert_true(h[i].n > 0);
}

static void test_concurrency_across_replicas(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 100000, .window_ms = 1000, .max_concurrent = 2,
                         .daily_quota = 0};
    static hammer h[3];
    run_three(h, &p, 1500, 30);
    size_t total = h[0].n + h[1].n + h[2].n;
    print_message("# %zu calls, peak held %d\n", total, atomic_load(&held_peak));
    assert_int_equal(atomic_load(&held_peak), 2);
    /* 1.5 s of 30 ms holds with 2 slots: about 100 calls when slots are reused quickly. */
    assert_true(total >= 50);
}

static void test_dead_holder_lease_expires(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 1000, .window_ms = 1000, .max_concurrent = 1,
                         .daily_quota = 0};
    gw_limiter *dead = new_limiter("lease:", &p, 600);
    gw_limiter *alive = new_limiter("lease:", &p, 600);
    gw_slot s;
    int64_t retry = 0;
    assert_int_equal(dead->ops->try_acquire(dead, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
    int64_t t0 = rh_mono_ms();
    dead->ops->destroy(dead); /* dies holding its slot */

    assert_int_equal(alive->ops->try_acquire(alive, rh_now_ms(), &s, &retry), GW_LIMIT_WAIT);
    assert_true(retry >= 1 && retry <= 10);
    gw_limit_result res;
    while ((res = alive->ops->try_acquire(alive, rh_now_ms(), &s, &retry)) == GW_LIMIT_WAIT &&
           rh_mono_ms() - t0 < 3000)
        rh_sleep_ms(retry);
    int64_t took = rh_mono_ms() - t0;
    print_message("# slot back after %lld ms (lease 600 ms)\n", (long long)took);
    assert_int_equal(res, GW_LIMIT_OK);
    assert_true(took >= 500 && took < 1500);
    alive->ops->release(alive, &s, rh_now_ms());
    /* Released: free at once for the next one. */
    assert_int_equal(alive->ops->try_acquire(alive, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
    alive->ops->release(alive, &s, rh_now_ms());
    alive->ops->destroy(alive);
}

static void test_window_wait_hint(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 2, .window_ms = 800, .max_concurrent = 10,
                         .daily_quota = 0};
    gw_limiter *l = new_limiter("hint:", &p, 5000);
    gw_slot s1, s2, s3;
    int64_t retry = 0;
    assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s1, &retry), GW_LIMIT_OK);
    assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s2, &retry), GW_LIMIT_OK);
    l->ops->release(l, &s1, rh_now_ms());
    l->ops->release(l, &s2, rh_now_ms());
    int64_t t0 = rh_mono_ms();
    assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s3, &retry), GW_LIMIT_WAIT);
    assert_true(retry > 600 && retry <= 800);
    rh_sleep_ms(retry);
    gw_limit_result res;
    while ((res = l->ops->try_acquire(l, rh_now_ms(), &s3, &retry)) == GW_LIMIT_WAIT)
        rh_sleep_ms(retry);
    assert_int_equal(res, GW_LIMIT_OK);
    assert_true(rh_mono_ms() - t0 >= 600);
    l->ops->release(l, &s3, rh_now_ms());
    l->ops->destroy(l);
}

static void test_daily_quota(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 100, .window_ms = 1000, .max_concurrent = 10,
                         .daily_quota = 3};
    gw_limiter *a = new_limiter("quota:", &p, 5000);
    gw_limiter *b = new_limiter("quota:", &p, 5000);
    gw_slot s;
    int64_t retry = 0;
    for (int i = 0; i < 3; i++) {
        gw_limiter *l = i % 2 ? b : a;
        assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
        l->ops->release(l, &s, rh_now_ms());
    }
    int64_t now = rh_now_ms();
    assert_int_equal(b->ops->try_acquire(b, now, &s, &retry), GW_LIMIT_QUOTA);
    int64_t expect = gw_next_central_midnight(now / 1000) * 1000 - now;
    print_message("# retry %lld ms, midnight in %lld ms\n", (long long)retry, (long long)expect);
    assert_true(retry > expect - 2000 && retry < expect + 2000);
    assert_int_equal(a->ops->try_acquire(a, rh_now_ms(), &s, &retry), GW_LIMIT_QUOTA);
    /* The day counter expires just after that midnight. */
    assert_int_equal(rh_command_int(srv, "DBSIZE") >= 1, 1);
    a->ops->destroy(a);
    b->ops->destroy(b);
}

/* Whether the metrics text has a counter line "name N" with N >= 1. */
static bool counter_positive(const char *name)
{
    size_t len = 0;
    char *m = gw_metrics_render(&len);
    bool ok = false;
    char needle[128];
    snprintf(needle, sizeof needle, "\n%s ", name);
    const char *p = m ? strstr(m, needle) : NULL;
    if (p)
        ok = strtoll(p + strlen(needle), NULL, 10) >= 1;
    free(m);
    return ok;
}

/* A fallback limiter on its own connection manager (like one replica). */
static gw_limiter *new_fallback(const char *prefix, const gw_limit_params *p, double share,
                                gw_redis **r_out)
{
    gw_redis *r = rh_client(srv, prefix, 300);
    assert_non_null(r);
    gw_limiter *fb = gw_limiter_fallback_new(gw_limiter_redis_new(r, p, 5000), share);
    assert_non_null(fb);
    if (r_out != NULL)
        *r_out = r;
    else
        gw_redis_unref(r);
    return fb;
}

/* n acquire+release pairs that must all be granted; by Redis when shared. */
static void spend(gw_limiter *l, int n, bool shared)
{
    gw_slot s;
    int64_t retry = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
        assert_int_equal(gw_limiter_fallback_active(l), !shared);
        l->ops->release(l, &s, rh_now_ms());
    }
}

/* Acquires until Redis grants again (at most limit_ms); returns the result. */
static gw_limit_result until_redis(gw_limiter *l, gw_slot *s, int64_t limit_ms)
{
    int64_t t0 = rh_mono_ms(), retry = 0;
    gw_limit_result res;
    do {
        res = l->ops->try_acquire(l, rh_now_ms(), s, &retry);
        if (!gw_limiter_fallback_active(l))
            break;
        if (res == GW_LIMIT_OK)
            l->ops->release(l, s, rh_now_ms());
        rh_sleep_ms(20);
    } while (rh_mono_ms() - t0 < limit_ms);
    print_message("# back on Redis after %lld ms\n", (long long)(rh_mono_ms() - t0));
    return res;
}

static void test_fallback_share_and_recovery(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 300, .window_ms = 1000, .max_concurrent = 30,
                         .daily_quota = 0};
    gw_limit_params share = gw_limit_params_scaled(&p, 1.0 / 3.0);
    assert_int_equal(share.max_concurrent, 10);
    gw_redis *r = NULL;
    gw_limiter *fb = new_fallback("fb:", &p, 1.0 / 3.0, &r);

    gw_slot s;
    int64_t retry = 0;
    spend(fb, 1, true);

    rh_kill(srv);
    gw_slot held[12];
    int ok = 0;
    for (int i = 0; i < 12; i++) {
        gw_limit_result res = fb->ops->try_acquire(fb, rh_now_ms(), &held[ok], &retry);
        assert_true(res == GW_LIMIT_OK || res == GW_LIMIT_WAIT);
        if (res == GW_LIMIT_OK)
            ok++;
    }
    assert_int_equal(ok, 10); /* the concurrency share, never more */
    assert_true(gw_limiter_fallback_active(fb));
    assert_true(counter_positive("limiter_fallback_total"));
    assert_true(counter_positive("limiter_redis_errors_total"));
    /* Local slots go back to the local share: one frees a local slot. */
    fb->ops->release(fb, &held[0], rh_now_ms());
    assert_int_equal(fb->ops->try_acquire(fb, rh_now_ms(), &held[0], &retry), GW_LIMIT_OK);

    assert_int_equal(rh_restart(srv), 0);
    assert_int_equal(until_redis(fb, &s, 7000), GW_LIMIT_OK);
    assert_false(gw_limiter_fallback_active(fb));
    /* Redis was told of the calls still in flight it never granted. */
    assert_int_equal(rh_command_int(srv, "ZCARD fb:rl:lease"), ok + 1);
    fb->ops->release(fb, &s, rh_now_ms());
    for (int i = 0; i < ok; i++)
        fb->ops->release(fb, &held[i], rh_now_ms());
    assert_int_equal(rh_command_int(srv, "ZCARD fb:rl:lease"), 0);
    fb->ops->destroy(fb);
    gw_redis_unref(r);
}

/* Issue 12 item 6: when Redis goes away, the local share starts from what
 * was already spent (this replica's calls exactly, the others' as Redis
 * last reported them), not from an empty window. */
static void test_fallback_counts_calls_already_made(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 30, .window_ms = 1500, .max_concurrent = 10,
                         .daily_quota = 0};
    gw_limiter *a = new_fallback("seed:", &p, 1.0 / 3.0, NULL);
    gw_limiter *b = new_fallback("seed:", &p, 1.0 / 3.0, NULL);
    spend(a, 26, true);
    spend(b, 1, true); /* b heard from Redis after a's calls */
    int64_t t_last = rh_mono_ms();
    rh_kill(srv);

    gw_slot s;
    int64_t retry = 0;
    /* 27 spent: floor((30 - 27) / 3) = 1 more each in this window */
    int granted_a = 0, granted_b = 0;
    for (int i = 0; i < 5; i++) {
        if (a->ops->try_acquire(a, rh_now_ms(), &s, &retry) == GW_LIMIT_OK) {
            granted_a++;
            a->ops->release(a, &s, rh_now_ms());
        }
        if (b->ops->try_acquire(b, rh_now_ms(), &s, &retry) == GW_LIMIT_OK) {
            granted_b++;
            b->ops->release(b, &s, rh_now_ms());
        }
    }
    print_message("# right after the loss: a %d, b %d granted\n", granted_a, granted_b);
    assert_true(gw_limiter_fallback_active(a) && gw_limiter_fallback_active(b));
    assert_int_equal(granted_a, 1);
    assert_int_equal(granted_b, 1);
    /* The wait hint points at the moment the Redis-era calls age out. */
    assert_int_equal(a->ops->try_acquire(a, rh_now_ms(), &s, &retry), GW_LIMIT_WAIT);
    assert_true(retry >= 1 && retry <= 250); /* then asks Redis again */
    /* Once they have, the whole share (10 a window) is there again. */
    int64_t left = t_last + p.window_ms + 100 - rh_mono_ms();
    if (left > 0)
        rh_sleep_ms(left);
    while (a->ops->try_acquire(a, rh_now_ms(), &s, &retry) == GW_LIMIT_WAIT &&
           rh_mono_ms() - t_last < 4000)
        rh_sleep_ms(retry < 50 ? retry : 50);
    a->ops->release(a, &s, rh_now_ms());
    spend(a, 9, false);
    assert_int_equal(a->ops->try_acquire(a, rh_now_ms(), &s, &retry), GW_LIMIT_WAIT);
    a->ops->destroy(a);
    b->ops->destroy(b);
    assert_int_equal(rh_restart(srv), 0);
}

/* A Redis restart without persistence: each replica tells the new Redis its
 * calls that still count and the day's count it last saw. */
static void test_restart_forgets_neither_window_nor_day(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 30, .window_ms = 60000, .max_concurrent = 10,
                         .daily_quota = 20};
    gw_limiter *a = new_fallback("rs:", &p, 1.0 / 3.0, NULL);
    spend(a, 18, true);
    assert_int_equal(rh_command_int(srv, "ZCARD rs:rl:win"), 18);
    assert_int_equal(rh_restart(srv), 0);

    gw_slot s;
    int64_t retry = 0;
    gw_limit_result res = until_redis(a, &s, 7000);
    assert_false(gw_limiter_fallback_active(a));
    assert_int_equal(res, GW_LIMIT_OK);
    a->ops->release(a, &s, rh_now_ms());
    /* 18 told, then 19 and 20 granted, and the day is spent. */
    assert_int_equal(a->ops->try_acquire(a, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
    a->ops->release(a, &s, rh_now_ms());
    assert_int_equal(a->ops->try_acquire(a, rh_now_ms(), &s, &retry), GW_LIMIT_QUOTA);
    assert_int_equal(rh_command_int(srv, "ZCARD rs:rl:win"), 20);

    /* Another replica that last saw fewer calls does not lower the count. */
    gw_limiter *b = new_limiter("rs:", &p, 5000);
    assert_int_equal(b->ops->try_acquire(b, rh_now_ms(), &s, &retry), GW_LIMIT_QUOTA);
    b->ops->destroy(b);
    a->ops->destroy(a);
}

/* Calls granted by the local share while Redis did not answer are added to
 * the shared day and window once it answers again. */
static void test_outage_calls_told_to_redis(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_limit_params p = {.calls_per_window = 100, .window_ms = 60000, .max_concurrent = 10,
                         .daily_quota = 20};
    gw_limiter *a = new_fallback("out:", &p, 1.0 / 3.0, NULL);
    spend(a, 5, true);
    /* CLIENT PAUSE, not SIGSTOP: a stopped server would still run the
     * commands that timed out once it continues (a call counted that never
     * went out: safe, but not the exact count checked here). */
    int64_t t_pause = rh_mono_ms();
    assert_int_equal(rh_command_int(srv, "CLIENT PAUSE 2500 ALL"), 0);
    gw_slot s;
    int64_t retry = 0;
    int granted = 0;
    gw_limit_result res;
    /* the share of what is left of the day: floor((20 - 5) / 3) = 5; then
     * not "quota spent" (the fleet may have more left): wait for Redis */
    while ((res = a->ops->try_acquire(a, rh_now_ms(), &s, &retry)) == GW_LIMIT_OK) {
        assert_true(gw_limiter_fallback_active(a));
        a->ops->release(a, &s, rh_now_ms());
        granted++;
    }
    assert_int_equal(res, GW_LIMIT_WAIT);
    assert_true(retry >= 1 && retry <= 250);
    assert_int_equal(granted, 5);
    assert_true(rh_mono_ms() - t_pause < 2500);
    rh_sleep_ms(t_pause + 2600 - rh_mono_ms());
    res = until_redis(a, &s, 7000);
    assert_int_equal(res, GW_LIMIT_OK);
    a->ops->release(a, &s, rh_now_ms());
    assert_int_equal(rh_command_int(srv, "ZCARD out:rl:win"), 11);
    /* Another replica finds 11 of the day's 20 spent. */
    gw_limiter *b = new_limiter("out:", &p, 5000);
    granted = 0;
    while (b->ops->try_acquire(b, rh_now_ms(), &s, &retry) == GW_LIMIT_OK) {
        b->ops->release(b, &s, rh_now_ms());
        granted++;
    }
    assert_int_equal(granted, 9);
    b->ops->destroy(b);
    a->ops->destroy(a);
}

/* ---- URL parsing (no server needed) ------------------------------------------- */

static void test_url_parsing(void **state)
{
    (void)state;
    gw_redis_addr a;
    assert_int_equal(gw_redis_parse_url("redis://localhost", NULL, &a), 0);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.password, "");

    assert_int_equal(gw_redis_parse_url("redis://:s3cret@10.0.0.5:7000/3", NULL, &a), 0);
    assert_string_equal(a.host, "10.0.0.5");
    assert_int_equal(a.port, 7000);
    assert_int_equal(a.db, 3);
    assert_string_equal(a.password, "s3cret");
    assert_string_equal(a.username, "");

    assert_int_equal(gw_redis_parse_url("redis://app:pw@redis.svc/2", NULL, &a), 0);
    assert_string_equal(a.username, "app");
    assert_string_equal(a.password, "pw");
    assert_string_equal(a.host, "redis.svc");
    assert_int_equal(a.db, 2);

    /* Password from the setting when the URL has none; the URL's wins. */
    assert_int_equal(gw_redis_parse_url("redis://h:6380/0", "fromenv", &a), 0);
    assert_string_equal(a.password, "fromenv");
    assert_int_equal(a.port, 6380);
    assert_int_equal(gw_redis_parse_url("redis://:inurl@h", "fromenv", &a), 0);
    assert_string_equal(a.password, "inurl");

    assert_int_equal(gw_redis_parse_url("redis://[::1]:6379/1", NULL, &a), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.db, 1);

    const char *bad[] = {"",           "http://h:6379",  "redis://",      "redis://h:0",
                         "redis://h:70000", "redis://h:12x", "redis://h/abc", "redis://h:/1",
                         "redis://h/1/2", "redis://pw@h",  NULL};
    for (int i = 0; bad[i]; i++) {
        if (gw_redis_parse_url(bad[i], NULL, &a) != -1)
            fail_msg("accepted bad URL %d", i);
    }
    assert_int_equal(gw_redis_parse_url(NULL, NULL, &a), -1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    gw_log_min_level = GW_LOG_ERROR;
    srv = rh_start();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parsing),
        cmocka_unit_test_setup(test_window_exact_across_replicas, setup),
        cmocka_unit_test_setup(test_concurrency_across_replicas, setup),
        cmocka_unit_test_setup(test_dead_holder_lease_expires, setup),
        cmocka_unit_test_setup(test_window_wait_hint, setup),
        cmocka_unit_test_setup(test_daily_quota, setup),
        cmocka_unit_test_setup(test_fallback_share_and_recovery, setup),
        cmocka_unit_test_setup(test_fallback_counts_calls_already_made, setup),
        cmocka_unit_test_setup(test_restart_forgets_neither_window_nor_day, setup),
        cmocka_unit_test_setup(test_outage_calls_told_to_redis, setup),
    };
    int rc = cmocka_run_group_tests_name("redis_limiter", tests, NULL, NULL);
    rh_stop(srv);
    gw_metrics_reset();
    return rc;
}
