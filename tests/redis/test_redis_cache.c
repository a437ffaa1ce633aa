/* tests/redis/test_redis_cache.c - the Redis cache against a real redis-server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/redis.h"
#include "tests/redis/harness.h"

static rh_server *srv;

/* Every test starts from an empty Redis and skips when there is none. */
static int setup(void **state)
{
    (void)state;
    if (srv == NULL || srv->proc.pid <= 0)
        return 0;
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

static gw_cache *new_cache(const char *prefix, int64_t ttl, int64_t neg, gw_redis **out_r)
{
    gw_redis *r = rh_client(srv, prefix, 300);
    assert_non_null(r);
    gw_cache *c = gw_cache_redis_new(r, ttl, neg);
    assert_non_null(c);
    if (out_r)
        *out_r = r;
    else
        gw_redis_unref(r);
    return c;
}

/* Stores one entry (json, ids) under (t, fieldset, value) with a fresh epoch; returns put_many's result. */
static int put1(gw_cache *c, mkto_key_type t, const char *fs, const char *value, const char *json,
                const int64_t *ids, size_t nids)
{
    char *out = NULL;
    uint64_t epoch = 0;
    const char *vals[1] = {value};
    assert_int_equal(c->ops->get_many(c, t, fs, vals, 1, &out, &epoch), 0);
    free(out);
    gw_cache_put p = {.value = value, .json = json, .ids = ids, .nids = nids};
    return c->ops->put_many(c, t, fs, &p, 1, epoch);
}

/* get_many of one key: the JSON (caller frees) or NULL; asserts the call worked. */
static char *get1(gw_cache *c, mkto_key_type t, const char *fs, const char *value)
{
    char *out = NULL;
    uint64_t epoch = 0;
    const char *vals[1] = {value};
    assert_int_equal(c->ops->get_many(c, t, fs, vals, 1, &out, &epoch), 0);
    return out;
}

static void assert_hit(gw_cache *c, mkto_key_type t, const char *fs, const char *value,
                       const char *json)
{
    char *v = get1(c, t, fs, value);
    assert_non_null(v);
    assert_string_equal(v, json);
    free(v);
}

static void assert_miss(gw_cache *c, mkto_key_type t, const char *fs, const char *value)
{
    char *v = get1(c, t, fs, value);
    assert_null(v);
}

static void test_hit_miss_partial(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *c = new_cache("t1:", 60, 30, NULL);
    const char *vals[3] = {"a@x.com", "b@x.com", "c@x.com"};
    char *out[3];
    uint64_t epoch = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 3, out, &epoch), 0);
    for (int i = 0; i < 3; i++)
        assert_null(out[i]);
    assert_true(epoch > 0);

    int64_t id_a = 11, id_b = 12;
    gw_cache_put p[2] = {
        {.value = "a@x.com", .json = "[{\"id\":11}]", .ids = &id_a, .nids = 1},
        {.value = "c@x.com", .json = "[]", .ids = NULL, .nids = 0},
    };
    (void)id_b;
    assert_int_equal(c->ops->put_many(c, MKTO_KEY_EMAIL, "", p, 2, epoch), 0);

    uint64_t epoch2 = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 3, out, &epoch2), 0);
    assert_int_equal(epoch2, epoch); /* no invalidation in between */
    assert_non_null(out[0]);
    assert_string_equal(out[0], "[{\"id\":11}]");
    assert_null(out[1]);
    assert_non_null(out[2]);
    assert_string_equal(out[2], "[]");
    for (int i = 0; i < 3; i++)
        free(out[i]);

    /* Another field set, another key type: misses. */
    assert_miss(c, MKTO_KEY_EMAIL, "Company", "a@x.com");
    assert_miss(c, MKTO_KEY_COOKIE, "", "a@x.com");
    /* n = 0 still reports the epoch. */
    uint64_t e0 = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &e0), 0);
    assert_int_equal(e0, epoch);
    c->ops->destroy(c);
}

static void test_ttl_and_negative_ttl(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *c = new_cache("t2:", 2, 1, NULL);
    int64_t id = 5;
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "pos@x.com", "[{\"id\":5}]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "neg@x.com", "[]", NULL, 0), 0);
    /* Same hash: a negative variant and a positive one; the positive must
     * not stretch the negative's life. */
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "mix@x.com", "[]", NULL, 0), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "Company", "mix@x.com", "[{\"id\":5}]", &id, 1), 0);
    assert_hit(c, MKTO_KEY_EMAIL, "", "neg@x.com", "[]");
    rh_sleep_ms(1300);
    assert_hit(c, MKTO_KEY_EMAIL, "", "pos@x.com", "[{\"id\":5}]");
    assert_miss(c, MKTO_KEY_EMAIL, "", "neg@x.com");
    assert_miss(c, MKTO_KEY_EMAIL, "", "mix@x.com");
    assert_hit(c, MKTO_KEY_EMAIL, "Company", "mix@x.com", "[{\"id\":5}]");
    rh_sleep_ms(1000);
    assert_miss(c, MKTO_KEY_EMAIL, "", "pos@x.com");
    assert_miss(c, MKTO_KEY_EMAIL, "Company", "mix@x.com");
    /* And Redis dropped the keys themselves. */
    assert_int_equal(rh_command_int(srv, "EXISTS t2:c:EMAIL:pos@x.com"), 0);
    c->ops->destroy(c);
}

static void test_invalidate_drops_every_variant(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *c = new_cache("t3:", 60, 30, NULL);
    int64_t id = 7;
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "v@x.com", "[1]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "Company", "v@x.com", "[2]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "Company,FirstName", "v@x.com", "[3]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "other@x.com", "[4]", NULL, 0), 0);
    uint64_t e1 = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &e1), 0);

    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "v@x.com"};
    assert_int_equal(c->ops->invalidate(c, &k, 1, NULL, 0), 0);
    assert_miss(c, MKTO_KEY_EMAIL, "", "v@x.com");
    assert_miss(c, MKTO_KEY_EMAIL, "Company", "v@x.com");
    assert_miss(c, MKTO_KEY_EMAIL, "Company,FirstName", "v@x.com");
    assert_hit(c, MKTO_KEY_EMAIL, "", "other@x.com", "[4]");
    uint64_t e2 = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &e2), 0);
    assert_true(e2 > e1);
    /* Nothing to drop still advances the epoch. */
    assert_int_equal(c->ops->invalidate(c, NULL, 0, NULL, 0), 0);
    uint64_t e3 = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &e3), 0);
    assert_true(e3 > e2);
    c->ops->destroy(c);
}

static void test_invalidate_by_id(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *c = new_cache("t4:", 60, 30, NULL);
    int64_t seven = 7, eight = 8, both[2] = {7, 8};
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[7]", &seven, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_COOKIE, "Company", "ck-1", "[7]", &seven, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_SFDCACCOUNTID, "", "acc", "[7,8]", both, 2), 0);
    assert_int_equal(put1(c, MKTO_KEY_SFDCLEADID, "", "lead8", "[8]", &eight, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_IDNUM, "", "7", "[7]", &seven, 1), 0);

    assert_int_equal(c->ops->invalidate(c, NULL, 0, &seven, 1), 0);
    assert_miss(c, MKTO_KEY_EMAIL, "", "a@x.com");
    assert_miss(c, MKTO_KEY_COOKIE, "Company", "ck-1");
    assert_miss(c, MKTO_KEY_SFDCACCOUNTID, "", "acc");
    assert_miss(c, MKTO_KEY_IDNUM, "", "7");
    assert_hit(c, MKTO_KEY_SFDCLEADID, "", "lead8", "[8]");
    assert_int_equal(rh_command_int(srv, "EXISTS t4:id:7"), 0);
    assert_int_equal(rh_command_int(srv, "EXISTS t4:id:8"), 1);
    c->ops->destroy(c);
}

/* The interleaving of a lookup in flight during a sync, in one process
 * with two cache instances (two replicas' connections). */
static void test_stale_write_race_two_instances(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *a = new_cache("t5:", 60, 30, NULL);
    gw_cache *b = new_cache("t5:", 60, 30, NULL);
    const char *v[1] = {"race@x.com"};
    char *out = NULL;
    uint64_t e = 0;
    assert_int_equal(a->ops->get_many(a, MKTO_KEY_EMAIL, "", v, 1, &out, &e), 0);
    assert_null(out);
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "race@x.com"};
    assert_int_equal(b->ops->invalidate(b, &k, 1, NULL, 0), 0);
    int64_t id = 9;
    gw_cache_put p = {.value = "race@x.com", .json = "[\"old\"]", .ids = &id, .nids = 1};
    assert_int_equal(a->ops->put_many(a, MKTO_KEY_EMAIL, "", &p, 1, e), 1);
    assert_miss(a, MKTO_KEY_EMAIL, "", "race@x.com");
    assert_miss(b, MKTO_KEY_EMAIL, "", "race@x.com");
    assert_int_equal(rh_command_int(srv, "EXISTS t5:c:EMAIL:race@x.com"), 0);
    assert_int_equal(rh_command_int(srv, "EXISTS t5:id:9"), 0);
    /* Same instance too: an invalidation through a itself. */
    assert_int_equal(a->ops->get_many(a, MKTO_KEY_EMAIL, "", v, 1, &out, &e), 0);
    assert_int_equal(a->ops->invalidate(a, NULL, 0, &id, 1), 0);
    assert_int_equal(a->ops->put_many(a, MKTO_KEY_EMAIL, "", &p, 1, e), 1);
    assert_miss(a, MKTO_KEY_EMAIL, "", "race@x.com");
    /* A fresh read then stores. */
    assert_int_equal(put1(a, MKTO_KEY_EMAIL, "", "race@x.com", "[\"new\"]", &id, 1), 0);
    assert_hit(b, MKTO_KEY_EMAIL, "", "race@x.com", "[\"new\"]");
    a->ops->destroy(a);
    b->ops->destroy(b);
}

/* The child of test_stale_write_race_two_processes: another process's sync
 * invalidates the key. Exits 0 when the invalidation went through. */
static int invalidate_in_child(void *arg)
{
    (void)arg;
    gw_redis *r = rh_client(srv, "t6:", 300);
    gw_cache *b = r ? gw_cache_redis_new(r, 60, 30) : NULL;
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "proc@x.com"};
    int rc = b ? b->ops->invalidate(b, &k, 1, NULL, 0) : -1;
    return rc == 0 ? 0 : 1;
}

/* The same across two processes: the sync happens in a child process. */
static void test_stale_write_race_two_processes(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *a = new_cache("t6:", 60, 30, NULL);
    const char *v[1] = {"proc@x.com"};
    char *out = NULL;
    uint64_t e = 0;
    assert_int_equal(a->ops->get_many(a, MKTO_KEY_EMAIL, "", v, 1, &out, &e), 0);
    assert_null(out);

    spawn_proc child;
    assert_int_equal(spawn_fork(&child, invalidate_in_child, NULL), 0);
    assert_int_equal(spawn_wait(&child, 10000), 0);  /* exited by itself, status 0 */

    gw_cache_put p = {.value = "proc@x.com", .json = "[\"old\"]", .ids = NULL, .nids = 0};
    assert_int_equal(a->ops->put_many(a, MKTO_KEY_EMAIL, "", &p, 1, e), 1);
    assert_miss(a, MKTO_KEY_EMAIL, "", "proc@x.com");
    a->ops->destroy(a);
}

static void test_prefix_isolation(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *a = new_cache("iso-a:", 60, 30, NULL);
    gw_cache *b = new_cache("iso-b:", 60, 30, NULL);
    assert_int_equal(put1(a, MKTO_KEY_EMAIL, "", "p@x.com", "[\"a\"]", NULL, 0), 0);
    assert_miss(b, MKTO_KEY_EMAIL, "", "p@x.com");
    uint64_t eb = 0;
    assert_int_equal(b->ops->get_many(b, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &eb), 0);
    /* a's invalidation neither touches b's entries nor b's epoch. */
    assert_int_equal(put1(b, MKTO_KEY_EMAIL, "", "p@x.com", "[\"b\"]", NULL, 0), 0);
    assert_int_equal(b->ops->get_many(b, MKTO_KEY_EMAIL, "", NULL, 0, NULL, &eb), 0);
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "p@x.com"};
    assert_int_equal(a->ops->invalidate(a, &k, 1, NULL, 0), 0);
    assert_miss(a, MKTO_KEY_EMAIL, "", "p@x.com");
    assert_hit(b, MKTO_KEY_EMAIL, "", "p@x.com", "[\"b\"]");
    gw_cache_put p = {.value = "q@x.com", .json = "[\"b\"]", .ids = NULL, .nids = 0};
    assert_int_equal(b->ops->put_many(b, MKTO_KEY_EMAIL, "", &p, 1, eb), 0);
    a->ops->destroy(a);
    b->ops->destroy(b);
}

/* Milliseconds one get_many / put_many / invalidate takes; asserts it failed. */
static int64_t timed_failures(gw_cache *c)
{
    int64_t worst = 0;
    const char *v[1] = {"down@x.com"};
    char *out = (char *)"x";
    uint64_t e = 0;
    gw_cache_put p = {.value = "down@x.com", .json = "[]", .ids = NULL, .nids = 0};
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "down@x.com"};
    for (int i = 0; i < 3; i++) {
        int64_t t0 = rh_mono_ms();
        assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", v, 1, &out, &e), -1);
        assert_null(out);
        int64_t t1 = rh_mono_ms();
        assert_int_equal(c->ops->put_many(c, MKTO_KEY_EMAIL, "", &p, 1, e), -1);
        int64_t t2 = rh_mono_ms();
        assert_int_equal(c->ops->invalidate(c, &k, 1, NULL, 0), -1);
        int64_t t3 = rh_mono_ms();
        int64_t d[3] = {t1 - t0, t2 - t1, t3 - t2};
        for (int j = 0; j < 3; j++)
            if (d[j] > worst)
                worst = d[j];
    }
    return worst;
}

/* Polls until get_many works again; returns how long it took (ms) or -1. */
static int64_t wait_reconnect(gw_cache *c, int64_t limit_ms)
{
    int64_t t0 = rh_mono_ms();
    while (rh_mono_ms() - t0 < limit_ms) {
        char *out = NULL;
        uint64_t e;
        const char *v[1] = {"probe@x.com"};
        if (c->ops->get_many(c, MKTO_KEY_EMAIL, "", v, 1, &out, &e) == 0) {
            free(out);
            return rh_mono_ms() - t0;
        }
        rh_sleep_ms(20);
    }
    return -1;
}

static void test_down_fails_fast_and_reconnects(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_redis *r = NULL;
    gw_cache *c = new_cache("t8:", 60, 30, &r);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "k@x.com", "[1]", NULL, 0), 0);
    assert_true(gw_redis_is_up(r));

    rh_kill(srv);
    /* The first call finds the dead connection and starts the backoff. */
    {
        const char *v[1] = {"k@x.com"};
        char *out = NULL;
        uint64_t e;
        assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", v, 1, &out, &e), -1);
    }
    assert_false(gw_redis_is_up(r));
    int64_t worst = timed_failures(c);
    print_message("# slowest call while Redis is down: %lld ms\n", (long long)worst);
    assert_true(worst < 50);

    size_t len = 0;
    char *m = gw_metrics_render(&len);
    assert_non_null(m);
    assert_non_null(strstr(m, "cache_redis_errors_total"));
    assert_non_null(strstr(m, "redis_up 0"));
    free(m);

    assert_int_equal(rh_restart(srv), 0);
    int64_t took = wait_reconnect(c, 7000);
    print_message("# reconnected after %lld ms\n", (long long)took);
    assert_true(took >= 0);
    assert_true(gw_redis_is_up(r));
    m = gw_metrics_render(&len);
    assert_non_null(strstr(m, "redis_up 1"));
    free(m);
    /* The invalidations made while down were replayed: the cache works. */
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "k@x.com", "[2]", NULL, 0), 0);
    assert_hit(c, MKTO_KEY_EMAIL, "", "k@x.com", "[2]");
    c->ops->destroy(c);
    gw_redis_unref(r);
}

/* A Redis that stops answering (but keeps its data) while a sync happens:
 * the invalidation is kept and replayed by the cache itself once Redis
 * answers (issue 12 item 7: not on this replica's next request), so no
 * replica serves the pre-sync entry afterwards. CLIENT PAUSE, not SIGSTOP:
 * a stopped server would run the timed-out command itself once it goes on,
 * and the test would prove nothing. */
static void test_invalidation_replayed_after_outage(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *a = new_cache("t9:", 60, 30, NULL);
    gw_cache *b = new_cache("t9:", 60, 30, NULL);
    int64_t id = 42;
    assert_int_equal(put1(a, MKTO_KEY_EMAIL, "", "s@x.com", "[\"before\"]", &id, 1), 0);
    assert_hit(b, MKTO_KEY_EMAIL, "", "s@x.com", "[\"before\"]");

    int64_t t0 = rh_mono_ms();
    assert_int_equal(rh_command_int(srv, "CLIENT PAUSE 1500 ALL"), 0);
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "s@x.com"};
    assert_int_equal(a->ops->invalidate(a, &k, 1, &id, 1), -1);
    assert_true(rh_mono_ms() - t0 < 1000); /* bounded by the command timeout */
    /* a keeps bypassing while the invalidation is pending. */
    const char *v[1] = {"s@x.com"};
    char *out = NULL;
    uint64_t e;
    assert_int_equal(a->ops->get_many(a, MKTO_KEY_EMAIL, "", v, 1, &out, &e), -1);
    assert_true(rh_mono_ms() - t0 < 1500);
    rh_sleep_ms(t0 + 1500 - rh_mono_ms());

    /* Nothing more is asked of a: b sees the entry go within the backoff. */
    int64_t t1 = rh_mono_ms();
    char *got = NULL;
    do {
        free(got);
        rh_sleep_ms(20);
        got = NULL;
        const char *vb[1] = {"s@x.com"};
        if (b->ops->get_many(b, MKTO_KEY_EMAIL, "", vb, 1, &got, &e) != 0)
            got = strdup("(error)");
    } while (got != NULL && rh_mono_ms() - t1 < 7000);
    print_message("# replayed %lld ms after Redis answered again\n",
                  (long long)(rh_mono_ms() - t1));
    assert_null(got);
    /* a trusts the cache again once its replay has finished (a read that
     * comes while it is finishing still bypasses). */
    int64_t t2 = rh_mono_ms();
    while (a->ops->get_many(a, MKTO_KEY_EMAIL, "", v, 1, &out, &e) != 0 && rh_mono_ms() - t2 < 1000)
        rh_sleep_ms(10);
    assert_null(out);
    assert_miss(a, MKTO_KEY_EMAIL, "", "s@x.com");
    a->ops->destroy(a);
    b->ops->destroy(b);
}

/* What await_invalidations tells, recorded. */
typedef struct settled {
    _Atomic int calls;      /* times told */
    _Atomic bool confirmed; /* last answer */
    _Atomic int64_t at_ms;  /* monotonic ms of the last answer */
} settled;

static void on_settled(void *arg, bool confirmed)
{
    settled *s = arg;
    atomic_store(&s->confirmed, confirmed);
    atomic_store(&s->at_ms, rh_mono_ms());
    atomic_fetch_add(&s->calls, 1);
}

static void wait_told(settled *s, int64_t limit_ms)
{
    int64_t t0 = rh_mono_ms();
    while (atomic_load(&s->calls) == 0 && rh_mono_ms() - t0 < limit_ms)
        rh_sleep_ms(10);
}

/* A sync waits for its kept invalidation: told true once it landed, false
 * at its deadline while Redis does not answer, false at once on stop. */
static void test_await_invalidations(void **state)
{
    (void)state;
    NEED_SERVER();
    gw_cache *a = new_cache("t10:", 60, 30, NULL);
    gw_cache_key k = {.type = MKTO_KEY_EMAIL, .value = "w@x.com"};
    settled s1 = {0}, s2 = {0}, s3 = {0};
    /* Nothing kept: nothing to wait for. */
    assert_int_equal(a->ops->invalidate(a, &k, 1, NULL, 0), 0);
    assert_int_equal(a->ops->await_invalidations(a, rh_mono_ms() + 1000, on_settled, &s1), 1);

    int64_t t0 = rh_mono_ms();
    assert_int_equal(rh_command_int(srv, "CLIENT PAUSE 1500 ALL"), 0);
    assert_int_equal(a->ops->invalidate(a, &k, 1, NULL, 0), -1);
    assert_int_equal(a->ops->await_invalidations(a, t0 + 300, on_settled, &s1), 0);
    assert_int_equal(a->ops->await_invalidations(a, t0 + 10000, on_settled, &s2), 0);
    wait_told(&s1, 3000);
    assert_int_equal(atomic_load(&s1.calls), 1);
    assert_false(atomic_load(&s1.confirmed));
    assert_true(atomic_load(&s1.at_ms) - t0 >= 290 && atomic_load(&s1.at_ms) - t0 < 1500);
    assert_int_equal(atomic_load(&s2.calls), 0);
    wait_told(&s2, 7000);
    print_message("# confirmed %lld ms after the pause began\n",
                  (long long)(atomic_load(&s2.at_ms) - t0));
    assert_int_equal(atomic_load(&s2.calls), 1);
    assert_true(atomic_load(&s2.confirmed));
    assert_true(atomic_load(&s2.at_ms) - t0 >= 1400);

    /* Shutdown: waits end at once, untold ones get false, new ones refused. */
    t0 = rh_mono_ms();
    assert_int_equal(rh_command_int(srv, "CLIENT PAUSE 1000 ALL"), 0);
    assert_int_equal(a->ops->invalidate(a, &k, 1, NULL, 0), -1);
    assert_int_equal(a->ops->await_invalidations(a, rh_mono_ms() + 60000, on_settled, &s3), 0);
    a->ops->stop_waits(a);
    assert_int_equal(atomic_load(&s3.calls), 1);
    assert_false(atomic_load(&s3.confirmed));
    assert_int_equal(a->ops->await_invalidations(a, rh_mono_ms() + 1000, on_settled, &s3), -1);
    rh_sleep_ms(t0 + 1100 - rh_mono_ms());
    a->ops->destroy(a);
    assert_int_equal(atomic_load(&s1.calls) + atomic_load(&s2.calls) + atomic_load(&s3.calls), 3);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    gw_log_min_level = GW_LOG_ERROR;
    srv = rh_start();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_hit_miss_partial, setup),
        cmocka_unit_test_setup(test_ttl_and_negative_ttl, setup),
        cmocka_unit_test_setup(test_invalidate_drops_every_variant, setup),
        cmocka_unit_test_setup(test_invalidate_by_id, setup),
        cmocka_unit_test_setup(test_stale_write_race_two_instances, setup),
        cmocka_unit_test_setup(test_stale_write_race_two_processes, setup),
        cmocka_unit_test_setup(test_prefix_isolation, setup),
        cmocka_unit_test_setup(test_invalidation_replayed_after_outage, setup),
        cmocka_unit_test_setup(test_await_invalidations, setup),
        cmocka_unit_test_setup(test_down_fails_fast_and_reconnects, setup),
    };
    int rc = cmocka_run_group_tests_name("redis_cache", tests, NULL, NULL);
    rh_stop(srv);
    gw_metrics_reset();
    return rc;
}
