/* tests/redis/test_backends.c - gw_backends_create on its own: the in-process
 * choice (no Redis needed), the Redis choice against a real redis-server
 * (skipped without one), and settings it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/backends.h"
#include "gateway/store/redis.h"
#include "tests/redis/harness.h"

static rh_server *srv;

/* Settings every case starts from: in process, a budget of 100 calls per 20 s. */
static void base_config(gw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout_ms = 1000;
    cfg->cache_ttl_seconds = 300;
    cfg->cache_negative_ttl_seconds = 30;
    cfg->cache_max_entries = 1000;
    cfg->rl_calls_per_window = 100;
    cfg->rl_window_seconds = 20;
    cfg->rl_max_concurrent = 10;
    cfg->rl_daily_quota = 10000;
    cfg->rl_fallback_share = 0.5;
    cfg->redis_connect_timeout_ms = 500;
    cfg->redis_command_timeout_ms = 500;
    cfg->redis_key_prefix = (char *)"f:";
}

/* Stores json under the e-mail key value through c, with a fresh epoch. */
static void put_email(gw_cache *c, const char *value, const char *json)
{
    const char *vals[1] = {value};
    char *out = NULL;
    uint64_t epoch = 0;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 1, &out, &epoch), 0);
    free(out);
    gw_cache_put p = {.value = value, .json = json};
    assert_int_equal(c->ops->put_many(c, MKTO_KEY_EMAIL, "", &p, 1, epoch), 0);
}

/* The cached JSON of an e-mail key value (caller frees), or NULL on a miss;
 * *rc gets get_many's result. */
static char *get_email(gw_cache *c, const char *value, int *rc)
{
    const char *vals[1] = {value};
    char *out = NULL;
    uint64_t epoch = 0;
    *rc = c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 1, &out, &epoch);
    return out;
}

/* Calls the factory expecting success with backend ("local", "redis") for both. */
static void create(const gw_config *cfg, gw_cache **c, gw_limiter **l, const char *backend)
{
    gw_err err = {0};
    assert_int_equal(gw_backends_create(cfg, c, l, &err), 0);
    assert_string_equal((*c)->ops->name, backend);
    assert_string_equal((*l)->ops->name, backend);
}

/* Calls the factory expecting a refusal: -1, both outputs NULL, and err
 * exactly want (no secret from the settings in it). */
static void expect_refused(const gw_config *cfg, const char *want)
{
    gw_cache *c = (gw_cache *)&c;        /* not NULL: the factory must clear it */
    gw_limiter *l = (gw_limiter *)&l;
    gw_err err = {0};
    assert_int_equal(gw_backends_create(cfg, &c, &l, &err), -1);
    assert_null(c);
    assert_null(l);
    assert_string_equal(err.msg, want);
}

static void test_params_from_config(void **state)
{
    (void)state;
    gw_config cfg;
    base_config(&cfg);
    cfg.timeout_ms = 1500;
    gw_limit_params p = gw_limit_params_from_config(&cfg);
    assert_int_equal(p.calls_per_window, 100);
    assert_int_equal(p.window_ms, 20000);
    assert_int_equal(p.max_concurrent, 10);
    assert_int_equal(p.daily_quota, 10000);
    /* A lease outlives one SOAP call by 2 s; no timeout set: 30 s. */
    assert_int_equal(gw_redis_lease_ms(&cfg), 3500);
    cfg.timeout_ms = 0;
    assert_int_equal(gw_redis_lease_ms(&cfg), 32000);
}

static void test_in_process(void **state)
{
    (void)state;
    gw_config cfg;
    base_config(&cfg);
    cfg.rl_max_concurrent = 2;
    /* redis.url unset or empty: in process, whatever redis.* says. */
    char *urls[] = {NULL, (char *)""};
    for (size_t i = 0; i < 2; i++) {
        cfg.redis_url = urls[i];
        gw_cache *c = NULL;
        gw_limiter *l = NULL;
        create(&cfg, &c, &l, "local");

        put_email(c, "a@example.com", "[]");
        int rc = -1;
        char *json = get_email(c, "a@example.com", &rc);
        assert_int_equal(rc, 0);
        assert_string_equal(json, "[]");
        free(json);
        assert_int_equal(gw_cache_local_size(c), 1);

        /* The settings' budget: two calls in flight, not a third. */
        gw_slot s[3];
        int64_t retry = 0, now = 1700000000000;
        assert_int_equal(l->ops->try_acquire(l, now, &s[0], &retry), GW_LIMIT_OK);
        assert_int_equal(l->ops->try_acquire(l, now, &s[1], &retry), GW_LIMIT_OK);
        assert_int_equal(l->ops->try_acquire(l, now, &s[2], &retry), GW_LIMIT_WAIT);
        l->ops->release(l, &s[0], now);
        l->ops->release(l, &s[1], now);
        c->ops->destroy(c);
        l->ops->destroy(l);
    }
}

static void test_in_process_bad_settings(void **state)
{
    (void)state;
    gw_config cfg;
    base_config(&cfg);
    cfg.cache_max_entries = 0;
    expect_refused(&cfg, "cannot create the in-process cache or limiter (bad settings?)");
    base_config(&cfg);
    cfg.rl_calls_per_window = 0;
    expect_refused(&cfg, "cannot create the in-process cache or limiter (bad settings?)");
}

static void test_redis(void **state)
{
    (void)state;
    if (srv == NULL) {
        print_message("# REDIS_SERVER not set or redis-server did not start\n");
        skip();
    }
    rh_command_int(srv, "FLUSHALL");
    gw_config cfg;
    base_config(&cfg);
    cfg.rl_max_concurrent = 1;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", srv->port);
    cfg.redis_url = url;

    /* Two replicas built from the same settings share one cache and one budget. */
    gw_cache *c[2] = {NULL, NULL};
    gw_limiter *l[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        create(&cfg, &c[i], &l[i], "redis");
    assert_int_equal(rh_command_int(srv, "DBSIZE"), 0);
    put_email(c[0], "b@example.com", "[{\"id\":7}]");
    assert_true(rh_command_int(srv, "DBSIZE") > 0);
    int rc = -1;
    char *json = get_email(c[1], "b@example.com", &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(json, "[{\"id\":7}]");
    free(json);

    gw_slot s;
    int64_t retry = 0;
    assert_int_equal(l[0]->ops->try_acquire(l[0], rh_now_ms(), &s, &retry), GW_LIMIT_OK);
    assert_false(gw_limiter_fallback_active(l[0]));
    /* The lease is in Redis, under the settings' key prefix. */
    assert_int_equal(rh_command_int(srv, "ZCARD f:rl:lease"), 1);
    gw_slot s2;
    assert_int_equal(l[1]->ops->try_acquire(l[1], rh_now_ms(), &s2, &retry), GW_LIMIT_WAIT);
    assert_false(gw_limiter_fallback_active(l[1]));
    l[0]->ops->release(l[0], &s, rh_now_ms());
    assert_int_equal(rh_command_int(srv, "ZCARD f:rl:lease"), 0);

    for (int i = 0; i < 2; i++) {
        c[i]->ops->destroy(c[i]);
        l[i]->ops->destroy(l[i]);
    }
}

static void test_redis_down_at_start(void **state)
{
    (void)state;
    gw_config cfg;
    base_config(&cfg);
    cfg.redis_url = (char *)"redis://127.0.0.1:1/0"; /* nothing listens there */
    gw_cache *c = NULL;
    gw_limiter *l = NULL;
    /* Redis need not be up at start: both backends reconnect by themselves. */
    create(&cfg, &c, &l, "redis");
    int rc = 0;
    assert_null(get_email(c, "c@example.com", &rc));
    assert_int_equal(rc, -1); /* unavailable: the caller bypasses the cache */
    /* The limiter answers from this replica's share meanwhile. */
    gw_slot s;
    int64_t retry = 0;
    assert_int_equal(l->ops->try_acquire(l, rh_now_ms(), &s, &retry), GW_LIMIT_OK);
    assert_true(gw_limiter_fallback_active(l));
    l->ops->release(l, &s, rh_now_ms());
    c->ops->destroy(c);
    l->ops->destroy(l);
}

static void test_redis_bad_settings(void **state)
{
    (void)state;
    gw_config cfg;
    base_config(&cfg);
    cfg.redis_password = (char *)"hunter2";
    const char *bad[] = {"redis://:hunter2@h:99999/0", "http://h:6379", "redis://h/abc",
                         "redis://h:0", NULL};
    for (int i = 0; bad[i]; i++) {
        cfg.redis_url = (char *)bad[i];
        expect_refused(&cfg, "redis.url: malformed");
    }
    /* A good URL with a budget no limiter takes. */
    cfg.redis_url = (char *)"redis://127.0.0.1:1/0";
    cfg.rl_calls_per_window = 0;
    expect_refused(&cfg, "cannot create the Redis cache or limiter (bad settings?)");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    gw_log_min_level = GW_LOG_ERROR;
    srv = rh_start();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_from_config),
        cmocka_unit_test(test_in_process),
        cmocka_unit_test(test_in_process_bad_settings),
        cmocka_unit_test(test_redis),
        cmocka_unit_test(test_redis_down_at_start),
        cmocka_unit_test(test_redis_bad_settings),
    };
    int rc = cmocka_run_group_tests_name("backends", tests, NULL, NULL);
    rh_stop(srv);
    gw_metrics_reset();
    return rc;
}
