/* tests/gateway/test_cache.c - the in-process lookup cache. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/store/cache.h"

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static gw_cache *new_cache(int64_t max, int64_t ttl, int64_t neg)
{
    gw_cache *c = gw_cache_local_new(max, ttl, neg);
    assert_non_null(c);
    fake_now = 1000000;
    gw_cache_local_set_clock(c, fake_clock);
    return c;
}

/* Stores one entry with the current epoch; returns put_many's result. */
static int put1(gw_cache *c, mkto_key_type t, const char *fs, const char *v, const char *json,
                const int64_t *ids, size_t nids)
{
    uint64_t epoch = gw_cache_local_epoch(c);
    gw_cache_put it = {v, json, ids, nids};
    return c->ops->put_many(c, t, fs, &it, 1, epoch);
}

/* Reads one entry; returns the malloc'd JSON or NULL. */
static char *get1(gw_cache *c, mkto_key_type t, const char *fs, const char *v)
{
    const char *vals[1] = {v};
    char *out[1] = {(char *)"junk"};
    uint64_t epoch = 0;
    assert_int_equal(c->ops->get_many(c, t, fs, vals, 1, out, &epoch), 0);
    assert_int_equal(epoch, gw_cache_local_epoch(c));
    return out[0];
}

/* Asserts that a key holds exactly json (NULL: a miss). */
static void expect(gw_cache *c, mkto_key_type t, const char *fs, const char *v, const char *json)
{
    char *got = get1(c, t, fs, v);
    if (json == NULL) {
        if (got != NULL)
            fail_msg("expected a miss, got %s", got);
    } else {
        assert_non_null(got);
        assert_string_equal(got, json);
    }
    free(got);
}

static void test_hit_miss_partial(void **state)
{
    (void)state;
    gw_cache *c = new_cache(100, 300, 30);
    assert_string_equal(c->ops->name, "local");
    int64_t ida = 1, idb = 2;
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[{\"id\":1}]", &ida, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "b@x.com", "[{\"id\":2}]", &idb, 1), 0);

    const char *vals[3] = {"a@x.com", "c@x.com", "b@x.com"};
    char *out[3];
    uint64_t epoch;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 3, out, &epoch), 0);
    assert_int_equal(epoch, 1);
    assert_string_equal(out[0], "[{\"id\":1}]");
    assert_null(out[1]);
    assert_string_equal(out[2], "[{\"id\":2}]");
    free(out[0]);
    free(out[2]);

    /* Other key type, other field set: misses. */
    expect(c, MKTO_KEY_COOKIE, "", "a@x.com", NULL);
    expect(c, MKTO_KEY_EMAIL, "FirstName", "a@x.com", NULL);
    /* Replacing an entry keeps one entry. */
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[{\"id\":1,\"v\":2}]", &ida, 1), 0);
    assert_int_equal(gw_cache_local_size(c), 2);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", "[{\"id\":1,\"v\":2}]");
    c->ops->destroy(c);
}

static void test_ttl(void **state)
{
    (void)state;
    gw_cache *c = new_cache(100, 300, 30);
    int64_t id = 7;
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "pos@x.com", "[{\"id\":7}]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "neg@x.com", "[]", NULL, 0), 0);
    int64_t t0 = fake_now;
    fake_now = t0 + 30000 - 1;
    expect(c, MKTO_KEY_EMAIL, "", "neg@x.com", "[]");
    fake_now = t0 + 30000;
    expect(c, MKTO_KEY_EMAIL, "", "neg@x.com", NULL);
    expect(c, MKTO_KEY_EMAIL, "", "pos@x.com", "[{\"id\":7}]");
    assert_int_equal(gw_cache_local_size(c), 1);
    fake_now = t0 + 300000 - 1;
    expect(c, MKTO_KEY_EMAIL, "", "pos@x.com", "[{\"id\":7}]");
    fake_now = t0 + 300000;
    expect(c, MKTO_KEY_EMAIL, "", "pos@x.com", NULL);
    assert_int_equal(gw_cache_local_size(c), 0);
    c->ops->destroy(c);

    /* A TTL of 0 stores nothing of that kind. */
    c = new_cache(100, 300, 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "neg@x.com", "[]", NULL, 0), 0);
    expect(c, MKTO_KEY_EMAIL, "", "neg@x.com", NULL);
    assert_int_equal(gw_cache_local_size(c), 0);
    c->ops->destroy(c);
}

static void test_lru_bound(void **state)
{
    (void)state;
    gw_cache *c = new_cache(3, 300, 30);
    int64_t ids[4] = {1, 2, 3, 4};
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a", "[1]", &ids[0], 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "b", "[2]", &ids[1], 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "c", "[3]", &ids[2], 1), 0);
    expect(c, MKTO_KEY_EMAIL, "", "a", "[1]"); /* a is now the most recent */
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "d", "[4]", &ids[3], 1), 0);
    assert_int_equal(gw_cache_local_size(c), 3);
    expect(c, MKTO_KEY_EMAIL, "", "b", NULL);
    expect(c, MKTO_KEY_EMAIL, "", "a", "[1]");
    expect(c, MKTO_KEY_EMAIL, "", "c", "[3]");
    expect(c, MKTO_KEY_EMAIL, "", "d", "[4]");
    /* The evicted entry left the id index too: invalidating its id is harmless. */
    assert_int_equal(c->ops->invalidate(c, NULL, 0, &ids[1], 1), 0);
    assert_int_equal(gw_cache_local_size(c), 3);
    c->ops->destroy(c);

    /* Many more puts than the bound, with shared ids. */
    c = new_cache(1000, 300, 30);
    for (int i = 0; i < 20000; i++) {
        char v[32];
        snprintf(v, sizeof(v), "k%d@x.com", i);
        int64_t two[2] = {i % 777, i % 13};
        assert_int_equal(put1(c, MKTO_KEY_EMAIL, (i & 1) ? "A" : "", v, "[0]", two, 2), 0);
        assert_true(gw_cache_local_size(c) <= 1000);
    }
    assert_int_equal(gw_cache_local_size(c), 1000);
    int64_t drop[3] = {5, 6, 12};
    assert_int_equal(c->ops->invalidate(c, NULL, 0, drop, 3), 0);
    assert_true(gw_cache_local_size(c) < 1000 - 1000 / 13);
    c->ops->destroy(c);
}

static void test_invalidate_key_all_variants(void **state)
{
    (void)state;
    gw_cache *c = new_cache(100, 300, 30);
    int64_t id = 9;
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[9]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "FirstName", "a@x.com", "[9f]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "Company,FirstName", "a@x.com", "[9g]", &id, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "b@x.com", "[]", NULL, 0), 0);
    assert_int_equal(put1(c, MKTO_KEY_COOKIE, "", "a@x.com", "[c]", NULL, 0), 0);
    gw_cache_key k = {MKTO_KEY_EMAIL, "a@x.com"};
    assert_int_equal(c->ops->invalidate(c, &k, 1, NULL, 0), 0);
    assert_int_equal(gw_cache_local_epoch(c), 2);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", NULL);
    expect(c, MKTO_KEY_EMAIL, "FirstName", "a@x.com", NULL);
    expect(c, MKTO_KEY_EMAIL, "Company,FirstName", "a@x.com", NULL);
    expect(c, MKTO_KEY_EMAIL, "", "b@x.com", "[]");
    expect(c, MKTO_KEY_COOKIE, "", "a@x.com", "[c]");
    assert_int_equal(gw_cache_local_size(c), 2);
    /* An invalidation with nothing to drop still advances the epoch. */
    gw_cache_key none = {MKTO_KEY_EMAIL, "nobody@x.com"};
    assert_int_equal(c->ops->invalidate(c, &none, 1, NULL, 0), 0);
    assert_int_equal(gw_cache_local_epoch(c), 3);
    /* The key can be stored again. */
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[9new]", &id, 1), 0);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", "[9new]");
    c->ops->destroy(c);
}

static void test_invalidate_by_id(void **state)
{
    (void)state;
    gw_cache *c = new_cache(100, 300, 30);
    int64_t five = 5, six = 6, both[3] = {5, 6, 5};
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "a@x.com", "[5]", &five, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_COOKIE, "", "ck", "[5]", &five, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_SFDCLEADID, "Company", "00Q1", "[5,6]", both, 3), 0);
    assert_int_equal(put1(c, MKTO_KEY_EMAIL, "", "b@x.com", "[6]", &six, 1), 0);
    assert_int_equal(put1(c, MKTO_KEY_IDNUM, "", "6", "[6]", &six, 1), 0);
    assert_int_equal(c->ops->invalidate(c, NULL, 0, &five, 1), 0);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", NULL);
    expect(c, MKTO_KEY_COOKIE, "", "ck", NULL);
    expect(c, MKTO_KEY_SFDCLEADID, "Company", "00Q1", NULL);
    expect(c, MKTO_KEY_EMAIL, "", "b@x.com", "[6]");
    expect(c, MKTO_KEY_IDNUM, "", "6", "[6]");
    assert_int_equal(gw_cache_local_size(c), 2);
    gw_cache_key k = {MKTO_KEY_EMAIL, "b@x.com"};
    assert_int_equal(c->ops->invalidate(c, &k, 1, &six, 1), 0);
    assert_int_equal(gw_cache_local_size(c), 0);
    c->ops->destroy(c);
}

/* A lookup that read before a sync's invalidation cannot write back. */
static void test_stale_write_race(void **state)
{
    (void)state;
    gw_cache *c = new_cache(100, 300, 30);
    const char *vals[1] = {"a@x.com"};
    char *out[1];
    uint64_t epoch;
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 1, out, &epoch), 0);
    assert_null(out[0]);
    /* The sync lands while the lookup is upstream. */
    gw_cache_key k = {MKTO_KEY_EMAIL, "a@x.com"};
    int64_t id = 42;
    assert_int_equal(c->ops->invalidate(c, &k, 1, &id, 1), 0);
    gw_cache_put it = {"a@x.com", "[{\"id\":42,\"old\":true}]", &id, 1};
    assert_int_equal(c->ops->put_many(c, MKTO_KEY_EMAIL, "", &it, 1, epoch), 1);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", NULL);
    assert_int_equal(gw_cache_local_size(c), 0);
    /* A lookup that started after it stores normally. */
    assert_int_equal(c->ops->get_many(c, MKTO_KEY_EMAIL, "", vals, 1, out, &epoch), 0);
    assert_int_equal(c->ops->put_many(c, MKTO_KEY_EMAIL, "", &it, 1, epoch), 0);
    expect(c, MKTO_KEY_EMAIL, "", "a@x.com", "[{\"id\":42,\"old\":true}]");
    c->ops->destroy(c);
}

static void test_bad_params(void **state)
{
    (void)state;
    assert_null(gw_cache_local_new(0, 300, 30));
    assert_null(gw_cache_local_new(10, -1, 30));
    assert_null(gw_cache_local_new(10, 300, -1));
}

/* ---- threads -------------------------------------------------------------------- */

typedef struct worker {
    gw_cache *c;  /* shared cache */
    int seed;     /* per-thread variation */
    int errors;   /* unexpected results */
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    char v[32];
    for (int i = 0; i < 5000; i++) {
        int k = (i * 7 + w->seed * 13) % 300;
        snprintf(v, sizeof(v), "u%d@x.com", k);
        int64_t id = k;
        const char *vals[1] = {v};
        char *out[1];
        uint64_t epoch;
        if (w->c->ops->get_many(w->c, MKTO_KEY_EMAIL, "", vals, 1, out, &epoch) != 0)
            w->errors++;
        if (out[0] != NULL && strcmp(out[0], "[x]") != 0)
            w->errors++;
        free(out[0]);
        gw_cache_put it = {v, "[x]", &id, 1};
        if (w->c->ops->put_many(w->c, MKTO_KEY_EMAIL, "", &it, 1, epoch) < 0)
            w->errors++;
        if (i % 50 == w->seed) {
            gw_cache_key key = {MKTO_KEY_EMAIL, v};
            w->c->ops->invalidate(w->c, &key, 1, &id, 1);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    gw_cache *c = gw_cache_local_new(200, 300, 30);
    assert_non_null(c);
    pthread_t th[6];
    worker w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (worker){c, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    assert_true(gw_cache_local_size(c) <= 200);
    c->ops->destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_partial),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_lru_bound),
        cmocka_unit_test(test_invalidate_key_all_variants),
        cmocka_unit_test(test_invalidate_by_id),
        cmocka_unit_test(test_stale_write_race),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
