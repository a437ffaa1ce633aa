/* tests/upstream/test_coalesce.c - which jobs share a call and how a shared
 * answer is split (gateway/upstream/coalesce.c), without the engine. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gateway/upstream/coalesce.h"

#define MAXK 4 /* a small per-call key limit makes the edges easy to reach */

/* A key lookup job over the given keys (borrowed), all fields. */
static gw_job key_job(mkto_key_type t, const char *const *keys, size_t n)
{
    gw_job j;
    memset(&j, 0, sizeof j);
    j.kind = GW_CALL_GET_MULTIPLE;
    j.get.kind = MKTO_SEL_KEYS;
    j.get.key_type = t;
    j.get.keys = keys;
    j.get.nkeys = n;
    j.get.batch_size = 1000;
    return j;
}

/* A lead with id and email (copied) and one attribute. */
static mkto_lead make_lead(int64_t id, const char *email, const char *attr, const char *value)
{
    mkto_lead l;
    memset(&l, 0, sizeof l);
    l.has_id = true;
    l.id = id;
    l.email = strdup(email);
    if (attr) {
        l.attrs = calloc(1, sizeof *l.attrs);
        l.attrs[0].name = strdup(attr);
        l.attrs[0].value = strdup(value);
        l.nattrs = 1;
    }
    return l;
}

/* Puts leads into job's result as if the protocol had parsed them. */
static void set_answer(gw_job *job, mkto_lead *leads, size_t n, int remaining, const char *pos)
{
    job->leads.leads = calloc(n ? n : 1, sizeof *job->leads.leads);
    memcpy(job->leads.leads, leads, n * sizeof *leads);
    job->leads.nleads = n;
    job->leads.return_count = (int)n;
    job->leads.remaining_count = remaining;
    job->leads.new_stream_position = strdup(pos);
}

/* b = a batch started by j1 that j2 joined. */
static void start_pair(gw_batch *b, gw_job *j1, gw_job *j2)
{
    assert_int_equal(gw_batch_init(b, MAXK), 0);
    assert_int_equal(gw_batch_start(b, j1), 0);
    assert_int_equal(gw_batch_add(b, j2), 0);
}

static void test_key_job_rules(void **state)
{
    (void)state;
    const char *k[] = {"a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"};
    gw_job j = key_job(MKTO_KEY_EMAIL, k, 2);
    assert_true(gw_is_key_job(&j, MAXK));
    j.get.nkeys = 5;
    assert_false(gw_is_key_job(&j, MAXK)); /* more than one call can carry */
    j.get.nkeys = 0;
    assert_false(gw_is_key_job(&j, MAXK));
    j.get.nkeys = 2;
    j.solo = true;
    assert_false(gw_is_key_job(&j, MAXK)); /* set apart after a paged merge */
    j.solo = false;
    j.get.stream_position = "pos";
    assert_false(gw_is_key_job(&j, MAXK)); /* follow-up pages never merge */
    j.get.stream_position = NULL;
    j.get.kind = MKTO_SEL_STATIC_LIST;
    assert_false(gw_is_key_job(&j, MAXK));
    j.get.kind = MKTO_SEL_KEYS;
    j.kind = GW_CALL_SYNC_MULTIPLE;
    assert_false(gw_is_key_job(&j, MAXK));
}

static void test_start_takes_distinct_keys(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k[] = {"a@x.io", "A@X.IO", "b@x.io"};
    gw_job j = key_job(MKTO_KEY_EMAIL, k, 3);
    assert_int_equal(gw_batch_start(&b, &j), 0);
    assert_int_equal(b.nmembers, 1);
    assert_ptr_equal(b.members[0], &j);
    assert_int_equal(b.nkeys, 2); /* e-mail keys compare without case */
    assert_int_equal(b.get.nkeys, 2);
    assert_ptr_equal(b.get.keys, b.keys);
    assert_true(b.shareable);
    assert_true(b.attributable);
    assert_true(gw_batch_covers(&b, &j));

    /* a sync is a batch of one that nothing joins */
    gw_job s;
    memset(&s, 0, sizeof s);
    s.kind = GW_CALL_SYNC_MULTIPLE;
    assert_int_equal(gw_batch_start(&b, &s), 0);
    assert_false(b.shareable);
    assert_int_equal(b.nkeys, 0);
    assert_false(gw_batch_can_merge(&b, &j));
    gw_batch_free(&b);
}

static void test_merge_same_shape_within_limit(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"a@x.io", "b@x.io"};
    const char *k2[] = {"B@x.io", "c@x.io"};
    const char *k3[] = {"d@x.io", "e@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 2);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 2);
    gw_job j3 = key_job(MKTO_KEY_EMAIL, k3, 2);
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_true(gw_batch_can_merge(&b, &j2));
    assert_int_equal(gw_batch_add(&b, &j2), 0);
    assert_int_equal(b.nkeys, 3); /* b@x.io once */
    assert_false(gw_batch_covers(&b, &j1));
    /* d and e would make 5 keys: over the limit */
    assert_false(gw_batch_can_merge(&b, &j3));
    j3.get.nkeys = 1;
    assert_true(gw_batch_can_merge(&b, &j3));
    assert_int_equal(gw_batch_add(&b, &j3), 0);
    assert_true(gw_batch_full(&b));
    assert_int_equal(b.nmembers, 3);
    gw_batch_free(&b);
}

static void test_merge_needs_same_shape(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"a@x.io"};
    const char *k2[] = {"b@x.io"};
    const char *f1[] = {"FirstName", "LastName"};
    const char *f2[] = {"LastName", "FirstName"};
    const char *f3[] = {"LastName"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 1);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    j1.get.attrs = f1;
    j1.get.nattrs = 2;
    j2.get.attrs = f2;
    j2.get.nattrs = 2;
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_true(gw_batch_can_merge(&b, &j2)); /* the same fields in another order */
    j2.get.attrs = f3;
    j2.get.nattrs = 1;
    assert_false(gw_batch_can_merge(&b, &j2));
    j2.get.attrs = f2;
    j2.get.nattrs = 2;
    j2.get.batch_size = 10;
    assert_false(gw_batch_can_merge(&b, &j2));
    j2.get.batch_size = 1000;
    j2.get.key_type = MKTO_KEY_IDNUM;
    assert_false(gw_batch_can_merge(&b, &j2));
    gw_batch_free(&b);
}

static void test_unattributable_merges_only_same_keys(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"c1", "c2"};
    const char *k2[] = {"c2", "c1"};
    const char *k3[] = {"c1"};
    const char *fields[] = {"FirstName"}; /* the Cookies attribute does not come back */
    gw_job j1 = key_job(MKTO_KEY_COOKIE, k1, 2);
    gw_job j2 = key_job(MKTO_KEY_COOKIE, k2, 2);
    gw_job j3 = key_job(MKTO_KEY_COOKIE, k3, 1);
    j1.get.attrs = j2.get.attrs = j3.get.attrs = fields;
    j1.get.nattrs = j2.get.nattrs = j3.get.nattrs = 1;
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_false(b.attributable);
    assert_true(gw_batch_can_merge(&b, &j2));
    assert_false(gw_batch_can_merge(&b, &j3));

    /* with all fields the mapping attribute comes back: attributable */
    j1.get.attrs = NULL;
    j1.get.nattrs = 0;
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_true(b.attributable);
    gw_batch_free(&b);
}

static void test_carry_needs_keys_and_freshness(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"a@x.io", "b@x.io"};
    const char *k2[] = {"b@x.io"};
    const char *k3[] = {"z@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 2);
    j1.taken_seq = 5;
    j1.epoch = 70;
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    gw_batch_stamp(&b, 6); /* sent after the engine had taken 6 jobs */
    assert_int_equal(b.epoch, 70);

    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    j2.taken_seq = 6; /* read its epoch before the send */
    j2.epoch = 71;
    assert_true(gw_batch_can_carry(&b, &j2));
    j2.taken_seq = 7; /* taken after the send, with a newer epoch: a sync may lie between */
    assert_false(gw_batch_can_carry(&b, &j2));
    j2.epoch = 70; /* the very epoch a member read before the send */
    assert_true(gw_batch_can_carry(&b, &j2));
    j2.epoch = 0; /* no epoch (cache bypassed) and taken after the send */
    assert_false(gw_batch_can_carry(&b, &j2));

    gw_job j3 = key_job(MKTO_KEY_EMAIL, k3, 1);
    j3.taken_seq = 6;
    assert_false(gw_batch_can_carry(&b, &j3)); /* a key the call does not ask */
    gw_batch_free(&b);
}

static gw_job *requeued[8];
static size_t nrequeued;

static void requeue(gw_job *job, void *arg)
{
    (void)arg;
    requeued[nrequeued++] = job;
}

static void test_unmerge_sets_members_apart(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"a@x.io"};
    const char *k2[] = {"b@x.io"};
    const char *k3[] = {"c@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 1);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    gw_job j3 = key_job(MKTO_KEY_EMAIL, k3, 1);
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_int_equal(gw_batch_add(&b, &j2), 0);
    assert_int_equal(gw_batch_add(&b, &j3), 0);
    assert_int_equal(b.nkeys, 3);
    nrequeued = 0;
    gw_batch_unmerge(&b, requeue, NULL);
    assert_int_equal(nrequeued, 2);
    assert_ptr_equal(requeued[0], &j2); /* in member order */
    assert_ptr_equal(requeued[1], &j3);
    assert_true(j2.solo && j3.solo);
    assert_false(j1.solo);
    assert_int_equal(b.nmembers, 1);
    assert_int_equal(b.nkeys, 1);
    assert_int_equal(b.get.nkeys, 1);
    assert_string_equal(b.keys[0], "a@x.io");
    gw_batch_free(&b);
}

static void test_distribute_ok_splits_by_key(void **state)
{
    (void)state;
    gw_batch b;
    assert_int_equal(gw_batch_init(&b, MAXK), 0);
    const char *k1[] = {"a@x.io", "b@x.io"};
    const char *k2[] = {"B@X.IO"};
    const char *k3[] = {"a@x.io", "b@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 2);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    gw_job j3 = key_job(MKTO_KEY_EMAIL, k3, 2);
    assert_int_equal(gw_batch_start(&b, &j1), 0);
    assert_int_equal(gw_batch_add(&b, &j2), 0);
    assert_int_equal(gw_batch_add(&b, &j3), 0);
    mkto_lead leads[] = {make_lead(1, "a@x.io", NULL, NULL), make_lead(2, "b@x.io", NULL, NULL)};
    set_answer(&j1, leads, 2, 0, "");

    gw_batch_distribute_ok(&b);
    assert_int_equal(j1.outcome, GW_OUT_OK);
    assert_int_equal(j1.leads.nleads, 2);
    /* j3 asked the call's whole key set: a full copy, paging fields included */
    assert_int_equal(j3.outcome, GW_OUT_OK);
    assert_int_equal(j3.leads.nleads, 2);
    assert_non_null(j3.leads.new_stream_position);
    assert_ptr_not_equal(j3.leads.leads[0].email, j1.leads.leads[0].email); /* deep copy */
    /* j2 gets the lead of its own key only */
    assert_int_equal(j2.outcome, GW_OUT_OK);
    assert_int_equal(j2.leads.nleads, 1);
    assert_int_equal(j2.leads.leads[0].id, 2);
    assert_int_equal(j2.leads.return_count, 1);
    assert_int_equal(j2.leads.remaining_count, 0);

    /* a member leaving: j1's client went away and its job is freed before
     * j2 and j3 are answered; their results do not point into it */
    gw_job_clear_results(&j1);
    memset(&j1, 0xa5, sizeof j1);
    assert_string_equal(j2.leads.leads[0].email, "b@x.io");
    assert_string_equal(j3.leads.leads[1].email, "b@x.io");
    gw_job_clear_results(&j2);
    gw_job_clear_results(&j3);
    gw_batch_free(&b);
}

static void test_distribute_ok_filters_partial_starter(void **state)
{
    (void)state;
    gw_batch b;
    const char *k1[] = {"SF1"};
    const char *k2[] = {"SF2"};
    gw_job j1 = key_job(MKTO_KEY_SFDCLEADID, k1, 1);
    gw_job j2 = key_job(MKTO_KEY_SFDCLEADID, k2, 1);
    start_pair(&b, &j1, &j2);
    assert_true(b.attributable); /* all fields: SFDCLeadId comes back */
    mkto_lead leads[] = {make_lead(1, "a@x.io", "SFDCLeadId", "SF1"),
                         make_lead(2, "b@x.io", "SFDCLeadId", "SF2"),
                         make_lead(3, "c@x.io", NULL, NULL)};
    set_answer(&j1, leads, 3, 0, "");
    gw_batch_distribute_ok(&b);
    assert_int_equal(j1.leads.nleads, 1); /* the starter keeps only its own lead */
    assert_int_equal(j1.leads.leads[0].id, 1);
    assert_null(j1.leads.new_stream_position);
    assert_int_equal(j2.leads.nleads, 1);
    assert_int_equal(j2.leads.leads[0].id, 2);
    gw_job_clear_results(&j1);
    gw_job_clear_results(&j2);
    gw_batch_free(&b);
}

static void test_distribute_paged_answer_sets_partials_apart(void **state)
{
    (void)state;
    gw_batch b;
    const char *k1[] = {"a@x.io"};
    const char *k2[] = {"b@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 1);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    start_pair(&b, &j1, &j2);
    mkto_lead leads[] = {make_lead(1, "a@x.io", NULL, NULL)};
    set_answer(&j1, leads, 1, 5, "next-page");
    gw_batch_distribute_ok(&b);
    /* a paged answer cannot be split: both run again on their own */
    assert_true(j1.solo);
    assert_true(j2.solo);
    assert_int_equal(j1.leads.nleads, 0);
    assert_null(j1.leads.leads);
    assert_int_equal(j2.leads.nleads, 0);
    gw_batch_free(&b);
}

static void test_distribute_failure_copies(void **state)
{
    (void)state;
    gw_batch b;
    const char *k1[] = {"a@x.io"};
    const char *k2[] = {"b@x.io"};
    gw_job j1 = key_job(MKTO_KEY_EMAIL, k1, 1);
    gw_job j2 = key_job(MKTO_KEY_EMAIL, k2, 1);
    start_pair(&b, &j1, &j2);
    j1.fault.code = 20023;
    j1.fault.retryable = true;
    j1.fault.faultstring = strdup("20023 - Rate limit exceeded");
    j1.retry_after_s = 20;
    strcpy(j1.detail, "fault 20023");
    gw_batch_distribute_failure(&b);
    assert_int_equal(j2.fault.code, 20023);
    assert_true(j2.fault.retryable);
    assert_string_equal(j2.fault.faultstring, "20023 - Rate limit exceeded");
    assert_ptr_not_equal(j2.fault.faultstring, j1.fault.faultstring);
    assert_int_equal(j2.retry_after_s, 20);
    assert_string_equal(j2.detail, "fault 20023");
    gw_job_clear_results(&j1);
    gw_job_clear_results(&j2);
    gw_batch_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_job_rules),
        cmocka_unit_test(test_start_takes_distinct_keys),
        cmocka_unit_test(test_merge_same_shape_within_limit),
        cmocka_unit_test(test_merge_needs_same_shape),
        cmocka_unit_test(test_unattributable_merges_only_same_keys),
        cmocka_unit_test(test_carry_needs_keys_and_freshness),
        cmocka_unit_test(test_unmerge_sets_members_apart),
        cmocka_unit_test(test_distribute_ok_splits_by_key),
        cmocka_unit_test(test_distribute_ok_filters_partial_starter),
        cmocka_unit_test(test_distribute_paged_answer_sets_partials_apart),
        cmocka_unit_test(test_distribute_failure_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
