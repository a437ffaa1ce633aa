/* tests/gateway/test_ratelimit.c - the in-process limiter and US-Central midnights. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/store/ratelimit.h"

/* Epoch seconds of a UTC date-time. */
static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm);
}

static gw_limiter *new_limiter(int64_t calls, int64_t window_ms, int64_t conc, int64_t quota)
{
    gw_limit_params p = {calls, window_ms, conc, quota};
    gw_limiter *l = gw_limiter_local_new(&p);
    assert_non_null(l);
    return l;
}

static gw_limit_result acquire(gw_limiter *l, int64_t now, gw_slot *s, int64_t *retry)
{
    return l->ops->try_acquire(l, now, s, retry);
}

/* N calls acquired and released at t: the N+1th waits until exactly
 * release + window, not a millisecond less. */
static void test_window_exact(void **state)
{
    (void)state;
    const int64_t t = 1700000000000LL, rel = t + 100, w = 20000;
    gw_limiter *l = new_limiter(5, w, 10, 0);
    gw_slot s[5];
    int64_t retry = -1;
    for (int i = 0; i < 5; i++)
        assert_int_equal(acquire(l, t, &s[i], &retry), GW_LIMIT_OK);
    for (int i = 0; i < 5; i++)
        l->ops->release(l, &s[i], rel);
    gw_slot x;
    assert_int_equal(acquire(l, rel, &x, &retry), GW_LIMIT_WAIT);
    assert_int_equal(retry, w);
    assert_int_equal(acquire(l, rel + w - 1, &x, &retry), GW_LIMIT_WAIT);
    assert_int_equal(retry, 1);
    assert_int_equal(acquire(l, rel + w, &x, &retry), GW_LIMIT_OK);
    l->ops->release(l, &x, rel + w);
    l->ops->destroy(l);
}

/* Calls in flight count in the window; staggered releases free entries one by one. */
static void test_window_rolling(void **state)
{
    (void)state;
    gw_limiter *l = new_limiter(3, 1000, 10, 0);
    gw_slot s[3], x;
    int64_t retry;
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(l, 0 + i, &s[i], &retry), GW_LIMIT_OK);
    /* All in flight, window full: a guess, at least 1 ms. */
    assert_int_equal(acquire(l, 5000, &x, &retry), GW_LIMIT_WAIT);
    assert_true(retry >= 1);
    l->ops->release(l, &s[1], 100);
    l->ops->release(l, &s[0], 300);
    assert_int_equal(acquire(l, 500, &x, &retry), GW_LIMIT_WAIT);
    assert_int_equal(retry, 600); /* s[1] stops counting at 1100 */
    assert_int_equal(acquire(l, 1100, &x, &retry), GW_LIMIT_OK);
    gw_slot y;
    assert_int_equal(acquire(l, 1100, &y, &retry), GW_LIMIT_WAIT);
    assert_int_equal(retry, 200); /* s[0] at 1300 */
    assert_int_equal(acquire(l, 1300, &y, &retry), GW_LIMIT_OK);
    /* A double release is ignored: in-flight does not go negative. */
    l->ops->release(l, &s[1], 1400);
    l->ops->release(l, &s[2], 1400);
    l->ops->release(l, &x, 1400);
    l->ops->release(l, &y, 1400);
    l->ops->destroy(l);
}

static void test_concurrency_cap(void **state)
{
    (void)state;
    gw_limiter *l = new_limiter(100, 20000, 3, 0);
    gw_slot s[3], x;
    int64_t retry;
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(l, 1000, &s[i], &retry), GW_LIMIT_OK);
    assert_int_equal(acquire(l, 1000, &x, &retry), GW_LIMIT_WAIT);
    assert_true(retry >= 1 && retry <= 100);
    l->ops->release(l, &s[0], 1001);
    assert_int_equal(acquire(l, 1002, &x, &retry), GW_LIMIT_OK);
    assert_int_equal(acquire(l, 1002, &s[0], &retry), GW_LIMIT_WAIT);
    l->ops->release(l, &x, 1003);
    l->ops->release(l, &s[1], 1003);
    l->ops->release(l, &s[2], 1003);
    l->ops->destroy(l);
}

static void test_quota_and_midnight_reset(void **state)
{
    (void)state;
    int64_t now_s = utc(2026, 1, 15, 12, 0, 0);     /* 06:00 CST */
    int64_t midnight = utc(2026, 1, 16, 6, 0, 0);   /* 00:00 CST */
    gw_limiter *l = new_limiter(100, 1000, 10, 3);
    gw_slot s;
    int64_t retry;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(acquire(l, now_s * 1000 + i, &s, &retry), GW_LIMIT_OK);
        l->ops->release(l, &s, now_s * 1000 + i);
    }
    assert_int_equal(acquire(l, now_s * 1000 + 10, &s, &retry), GW_LIMIT_QUOTA);
    assert_int_equal(retry, (midnight - now_s) * 1000 - 10);
    assert_int_equal(acquire(l, midnight * 1000 - 1, &s, &retry), GW_LIMIT_QUOTA);
    assert_int_equal(retry, 1);
    assert_int_equal(acquire(l, midnight * 1000, &s, &retry), GW_LIMIT_OK);
    l->ops->release(l, &s, midnight * 1000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(acquire(l, midnight * 1000 + 1, &s, &retry), GW_LIMIT_OK);
        l->ops->release(l, &s, midnight * 1000 + 1);
    }
    assert_int_equal(acquire(l, midnight * 1000 + 2, &s, &retry), GW_LIMIT_QUOTA);
    assert_int_equal(retry, 86400LL * 1000 - 2);
    l->ops->destroy(l);
}

static void test_bad_params(void **state)
{
    (void)state;
    gw_limit_params bad[] = {
        {0, 1000, 1, 0}, {1, 0, 1, 0}, {1, 1000, 0, 0}, {1, 1000, 1, -1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(gw_limiter_local_new(&bad[i]));
    assert_null(gw_limiter_local_new(NULL));
}

static void test_scaled(void **state)
{
    (void)state;
    gw_limit_params p = {100, 20000, 10, 10000};
    gw_limit_params h = gw_limit_params_scaled(&p, 0.5);
    assert_int_equal(h.calls_per_window, 50);
    assert_int_equal(h.window_ms, 20000);
    assert_int_equal(h.max_concurrent, 5);
    assert_int_equal(h.daily_quota, 5000);
    gw_limit_params t = gw_limit_params_scaled(&p, 1.0 / 3.0);
    assert_int_equal(t.calls_per_window, 33);
    assert_int_equal(t.max_concurrent, 3);
    assert_int_equal(t.daily_quota, 3333);
    assert_int_equal(gw_limit_params_scaled(&p, 0.29).calls_per_window, 29);
    gw_limit_params thirty = {30, 1000, 30, 0};
    assert_int_equal(gw_limit_params_scaled(&thirty, 1.0 / 3.0).max_concurrent, 10);
    gw_limit_params tiny = gw_limit_params_scaled(&p, 0.001);
    assert_int_equal(tiny.calls_per_window, 1);
    assert_int_equal(tiny.max_concurrent, 1);
    assert_int_equal(tiny.daily_quota, 10);
    gw_limit_params unl = {100, 20000, 10, 0};
    assert_int_equal(gw_limit_params_scaled(&unl, 0.5).daily_quota, 0);
    assert_int_equal(gw_limit_params_scaled(&p, 7.0).calls_per_window, 100);
    assert_int_equal(gw_limit_params_scaled(&p, 0.0).calls_per_window, 1);
}

/* Next US-Central midnights around the 2025 and 2026 switches. */
static void test_central_midnight_dst(void **state)
{
    (void)state;
    struct {
        int64_t now, want;
    } cases[] = {
        /* 2026: DST from Sun 8 March 08:00 UTC to Sun 1 November 07:00 UTC. */
        {utc(2026, 3, 8, 5, 30, 0), utc(2026, 3, 8, 6, 0, 0)},   /* Sat 23:30 CST */
        {utc(2026, 3, 8, 6, 0, 0), utc(2026, 3, 9, 5, 0, 0)},    /* exactly midnight: next */
        {utc(2026, 3, 8, 6, 30, 0), utc(2026, 3, 9, 5, 0, 0)},   /* Sun 00:30 CST */
        {utc(2026, 3, 8, 8, 0, 0), utc(2026, 3, 9, 5, 0, 0)},    /* 03:00 CDT */
        {utc(2026, 3, 9, 4, 59, 59), utc(2026, 3, 9, 5, 0, 0)},
        {utc(2026, 11, 1, 4, 0, 0), utc(2026, 11, 1, 5, 0, 0)},  /* Sat 23:00 CDT */
        {utc(2026, 11, 1, 6, 0, 0), utc(2026, 11, 2, 6, 0, 0)},  /* 01:00 CDT */
        {utc(2026, 11, 1, 7, 30, 0), utc(2026, 11, 2, 6, 0, 0)}, /* 01:30 CST, again */
        /* 2025: 9 March and 2 November. */
        {utc(2025, 3, 9, 5, 59, 59), utc(2025, 3, 9, 6, 0, 0)},
        {utc(2025, 3, 9, 12, 0, 0), utc(2025, 3, 10, 5, 0, 0)},
        {utc(2025, 3, 8, 12, 0, 0), utc(2025, 3, 9, 6, 0, 0)},
        {utc(2025, 11, 2, 4, 59, 59), utc(2025, 11, 2, 5, 0, 0)},
        {utc(2025, 11, 2, 5, 0, 0), utc(2025, 11, 3, 6, 0, 0)},
        {utc(2025, 11, 1, 12, 0, 0), utc(2025, 11, 2, 5, 0, 0)},
        /* Plain days, a year end, a leap day. */
        {utc(2025, 7, 4, 12, 0, 0), utc(2025, 7, 5, 5, 0, 0)},
        {utc(2025, 12, 31, 23, 0, 0), utc(2026, 1, 1, 6, 0, 0)},
        {utc(2026, 1, 1, 3, 0, 0), utc(2026, 1, 1, 6, 0, 0)},
        {utc(2024, 2, 29, 12, 0, 0), utc(2024, 3, 1, 6, 0, 0)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = gw_next_central_midnight(cases[i].now);
        if (got != cases[i].want)
            fail_msg("case %zu: from %lld got %lld want %lld", i, (long long)cases[i].now,
                     (long long)got, (long long)cases[i].want);
    }
}

/* Cross-check against the system tz database, hour by hour over 2020-2030,
 * when the database is installed. */
static void test_central_midnight_vs_tzdata(void **state)
{
    (void)state;
    if (access("/usr/share/zoneinfo/America/Chicago", R_OK) != 0)
        skip();
    char *old = getenv("TZ") != NULL ? strdup(getenv("TZ")) : NULL;
    setenv("TZ", "America/Chicago", 1);
    tzset();
    int bad = 0;
    for (int64_t t = utc(2020, 1, 1, 0, 0, 0); t < utc(2030, 12, 31, 0, 0, 0); t += 3600 + 17) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        tm.tm_mday += 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_isdst = -1;
        int64_t want = (int64_t)mktime(&tm);
        if (gw_next_central_midnight(t) != want && bad++ < 5)
            print_message("mismatch at %lld: got %lld want %lld\n", (long long)t,
                          (long long)gw_next_central_midnight(t), (long long)want);
    }
    if (old != NULL) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    assert_int_equal(bad, 0);
}

/* ---- hammering ---------------------------------------------------------------- */

#define H_CALLS 20
#define H_WINDOW 60
#define H_CONC 4
#define H_QUOTA 150
#define H_THREADS 8
#define H_MAX_LOG 100000

typedef struct hammer {
    gw_limiter *l;               /* limiter under test */
    atomic_int in_flight;        /* slots held, by the test's own count */
    atomic_int max_in_flight;    /* highest in_flight seen */
    atomic_int oks;              /* successful acquires */
    atomic_int bad_retries;      /* WAIT/QUOTA answers with retry < 1 */
    pthread_mutex_t mu;          /* guards log */
    int64_t log[H_MAX_LOG];      /* now_ms of each successful acquire */
    int nlog;                    /* entries in log */
    int64_t end_ms;              /* when threads stop */
} hammer;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *hammer_thread(void *arg)
{
    hammer *h = arg;
    for (;;) {
        int64_t now = wall_ms();
        if (now >= h->end_ms)
            break;
        gw_slot s;
        int64_t retry;
        gw_limit_result r = h->l->ops->try_acquire(h->l, now, &s, &retry);
        if (r == GW_LIMIT_OK) {
            int f = atomic_fetch_add(&h->in_flight, 1) + 1;
            int m = atomic_load(&h->max_in_flight);
            while (f > m && !atomic_compare_exchange_weak(&h->max_in_flight, &m, f))
                ;
            atomic_fetch_add(&h->oks, 1);
            pthread_mutex_lock(&h->mu);
            if (h->nlog < H_MAX_LOG)
                h->log[h->nlog++] = now;
            pthread_mutex_unlock(&h->mu);
            usleep(500 + (unsigned)(now % 3) * 500);
            atomic_fetch_sub(&h->in_flight, 1);
            h->l->ops->release(h->l, &s, wall_ms());
        } else {
            if (retry < 1)
                atomic_fetch_add(&h->bad_retries, 1);
            usleep(200);
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_hammer(void **state)
{
    (void)state;
    hammer *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    h->l = new_limiter(H_CALLS, H_WINDOW, H_CONC, H_QUOTA);
    pthread_mutex_init(&h->mu, NULL);
    int64_t start = wall_ms();
    h->end_ms = start + 700;
    pthread_t th[H_THREADS];
    for (int i = 0; i < H_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, h), 0);
    for (int i = 0; i < H_THREADS; i++)
        pthread_join(th[i], NULL);

    assert_int_equal(atomic_load(&h->bad_retries), 0);
    assert_true(atomic_load(&h->max_in_flight) <= H_CONC);
    assert_true(atomic_load(&h->max_in_flight) >= 1);
    /* Any H_WINDOW ms holds at most H_CALLS acquires (the window rule). */
    qsort(h->log, (size_t)h->nlog, sizeof(h->log[0]), cmp_i64);
    for (int i = 0, j = 0; i < h->nlog; i++) {
        while (j < h->nlog && h->log[j] < h->log[i] + H_WINDOW)
            j++;
        if (j - i > H_CALLS)
            fail_msg("%d acquires within %d ms from %lld", j - i, H_WINDOW,
                     (long long)h->log[i]);
    }
    /* The quota holds unless the run crossed a US-Central midnight. */
    if (gw_next_central_midnight(start / 1000) == gw_next_central_midnight(wall_ms() / 1000))
        assert_true(atomic_load(&h->oks) <= H_QUOTA);
    assert_true(atomic_load(&h->oks) >= H_CALLS);
    h->l->ops->destroy(h->l);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_exact),
        cmocka_unit_test(test_window_rolling),
        cmocka_unit_test(test_concurrency_cap),
        cmocka_unit_test(test_quota_and_midnight_reset),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_scaled),
        cmocka_unit_test(test_central_midnight_dst),
        cmocka_unit_test(test_central_midnight_vs_tzdata),
        cmocka_unit_test(test_hammer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
