/* tests/sim/test_admin.c - marketo-sim black box: /_sim/stats, /_sim/reset,
 * /_sim/faults (fault codes, 503 pages, drops, truncation, skip/count,
 * seeded reproducibility, latency, holds, drops after the operation, latency
 * after the operation) and the command line. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static simh S;

static int setup(void **state)
{
    static const char *const extra[] = {"--leads", "50", "--calls-per-window", "0",
                                        "--daily-quota", "0", NULL};
    soap_init();
    return simh_start(&S, extra);
}

static int teardown(void **state)
{
    int rc = simh_stop(&S);
    soap_cleanup();
    return rc == 0 ? 0 : -1;
}

/* Each test starts from the seed data, no rules, zero counters. */
static int reset(void **state)
{
    return simh_admin(&S, "/_sim/reset", "") == 200 ? 0 : -1;
}

/* Wall clock in ms. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* getLead of lead 65835; returns the response (caller frees). */
static int get_lead(simh_resp *r)
{
    return simh_soap(&S, simh_envelope("<ns1:paramsGetLead><leadKey><keyType>IDNUM</keyType>"
                                       "<keyValue>65835</keyValue></leadKey></ns1:paramsGetLead>",
                                       NULL, NULL, NULL), r);
}

/* getLead: 0 on success, else the fault code, -2 for another answer, -3
 * when the connection gave no answer. */
static int get_lead_code(void)
{
    simh_resp r;
    int code;
    if (get_lead(&r) != 0)
        code = -3;
    else if (r.status == 200)
        code = 0;
    else
        code = simh_fault_code(&r) > 0 ? simh_fault_code(&r) : -2;
    simh_resp_free(&r);
    return code;
}

static void test_stats(void **state)
{
    int64_t t0 = now_ms();
    assert_int_equal(get_lead_code(), 0);
    assert_int_equal(get_lead_code(), 0);
    mkto_leads lr;
    mkto_fault f = {0};
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_EMAIL, "none@none.test", &lr, &f), SOAP_ERR_FAULT);
    mkto_fault_clear(&f);
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 6926};
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_OK);
    mkto_leads_clear(&lr);
    simh_resp r;
    assert_int_equal(simh_post(&S, "/soap/mktows/2_3", "garbage", 7, &r), 0);
    simh_resp_free(&r);
    int64_t t1 = now_ms();
    json_t *st = simh_stats(&S);
    assert_non_null(st);
    assert_int_equal(simh_stat(st, "getLead", "calls"), 3);
    assert_int_equal(simh_stat(st, "getLead", "faults"), 1);
    assert_int_equal(simh_stat(st, "getMultipleLeads", "calls"), 1);
    assert_int_equal(simh_stat(st, "getMultipleLeads", "faults"), 0);
    assert_int_equal(simh_stat(st, "syncMultipleLeads", "calls"), 0);
    assert_int_equal(simh_stat(st, "unknown", "calls"), 1);
    assert_int_equal(simh_stat(st, "unknown", "faults"), 1);
    json_t *times = json_object_get(json_object_get(json_object_get(st, "operations"), "getLead"),
                                    "times_ms");
    assert_int_equal(json_array_size(times), 3);
    int64_t prev = 0;
    for (size_t i = 0; i < 3; i++) {
        int64_t t = json_integer_value(json_array_get(times, i));
        assert_true(t >= t0 - 5 && t <= t1 + 5);
        assert_true(t >= prev);
        prev = t;
    }
    assert_int_equal(json_integer_value(json_object_get(st, "leads")), 52);
    assert_int_equal(json_integer_value(json_object_get(st, "in_flight")), 0);
    assert_true(json_integer_value(json_object_get(st, "peak_concurrency")) >= 1);
    json_decref(st);
    /* reset clears them */
    assert_int_equal(simh_admin(&S, "/_sim/reset", ""), 200);
    st = simh_stats(&S);
    assert_int_equal(simh_stat(st, "getLead", "calls"), 0);
    assert_int_equal(json_array_size(json_object_get(json_object_get(json_object_get(st,
                     "operations"), "getLead"), "times_ms")), 0);
    assert_int_equal(json_integer_value(json_object_get(st, "peak_concurrency")), 0);
    json_decref(st);
}

static void test_fault_code_rule(void **state)
{
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"fault_code\": 20023, "
                                "\"error_rate\": 1.0}"), 200);
    assert_int_equal(get_lead_code(), 20023);
    assert_int_equal(get_lead_code(), 20023);
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 6926};
    mkto_leads lr;
    mkto_fault f = {0};
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_OK);  /* other op untouched */
    mkto_leads_clear(&lr);
    json_t *st = simh_stats(&S);
    assert_int_equal(simh_stat(st, "getLead", "faults"), 2);
    json_decref(st);
    /* a "*" rule applies where no own rule exists; the own rule wins */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"*\", \"fault_code\": 10001}"), 200);
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 10001);
    assert_string_equal(f.faultcode, "SOAP-ENV:Server");
    mkto_fault_clear(&f);
    assert_int_equal(get_lead_code(), 20023);
    /* replaced, then cleared */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"fault_code\": 20024}"), 200);
    assert_int_equal(get_lead_code(), 20024);
    assert_int_equal(simh_admin(&S, "/_sim/faults", "{\"operation\": \"*\", \"clear\": true}"), 200);
    assert_int_equal(get_lead_code(), 0);
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_OK);
    mkto_leads_clear(&lr);
}

static void test_http_503_drop_truncate(void **state)
{
    simh_resp r;
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"http_503\": true}"), 200);
    assert_int_equal(get_lead(&r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.ctype, "text/html"));
    assert_non_null(strstr(r.body, "503"));
    simh_resp_free(&r);
    /* a normal answer, for its length */
    assert_int_equal(simh_admin(&S, "/_sim/faults", "{\"operation\": \"*\", \"clear\": true}"), 200);
    assert_int_equal(get_lead(&r), 0);
    size_t full = r.len;
    simh_resp_free(&r);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"truncate_rate\": 1}"), 200);
    assert_int_equal(get_lead(&r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, full / 2);
    mkto_leads lr;
    mkto_fault f = {0};
    assert_int_equal(soap_parse_get_lead(r.body, r.len, 0, &lr, &f, NULL), SOAP_ERR_PARSE);
    simh_resp_free(&r);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"drop_rate\": 1.0}"), 200);
    assert_int_equal(get_lead(&r), -1);
    assert_int_not_equal(r.curl_rc, 0);
    simh_resp_free(&r);
    json_t *st = simh_stats(&S);
    assert_int_equal(simh_stat(st, "getLead", "calls"), 4);
    assert_int_equal(simh_stat(st, "getLead", "faults"), 3);
    assert_int_equal(json_integer_value(json_object_get(st, "in_flight")), 0);
    json_decref(st);
}

static void test_skip_count(void **state)
{
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"*\", \"fault_code\": 20011, \"skip\": 2, "
                                "\"count\": 3}"), 200);
    static const int want[] = {0, 0, 20011, 20011, 20011, 0, 0};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_int_equal(get_lead_code(), want[i]);
    /* count null = every call */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"fault_code\": 20016, "
                                "\"count\": null}"), 200);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_lead_code(), 20016);
}

/* 24 calls under a 50% rule with seed; pattern as a bit string. */
static void pattern(int seed, char out[25])
{
    char rule[160];
    snprintf(rule, sizeof(rule),
             "{\"operation\": \"getLead\", \"error_rate\": 0.5, \"fault_code\": 20011, "
             "\"seed\": %d}", seed);
    assert_int_equal(simh_admin(&S, "/_sim/faults", rule), 200);
    for (int i = 0; i < 24; i++)
        out[i] = get_lead_code() == 0 ? '.' : 'F';
    out[24] = '\0';
}

static void test_reproducible(void **state)
{
    char a[25], b[25], c[25];
    pattern(42, a);
    pattern(42, b);
    pattern(7, c);
    assert_string_equal(a, b);
    assert_non_null(strchr(a, 'F'));
    assert_non_null(strchr(a, '.'));
    assert_string_not_equal(a, c);
}

static void test_latency(void **state)
{
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"latency_ms\": 300, "
                                "\"jitter_ms\": 50}"), 200);
    int64_t t0 = now_ms();
    assert_int_equal(get_lead_code(), 0);
    int64_t dt = now_ms() - t0;
    assert_true(dt >= 300 && dt < 2000);
}

/* Thread body: one getLead, its code into *arg. */
static void *get_lead_thread(void *arg)
{
    *(int *)arg = get_lead_code();
    return NULL;
}

/* in_flight of the stats. */
static long in_flight(void)
{
    json_t *st = simh_stats(&S);
    long n = (long)json_integer_value(json_object_get(st, "in_flight"));
    json_decref(st);
    return n;
}

static void test_hold_until_in_flight(void **state)
{
    /* alone: held for hold_max_ms, then answered normally */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"hold_in_flight\": 2, "
                                "\"hold_max_ms\": 400}"), 200);
    int64_t t0 = now_ms();
    assert_int_equal(get_lead_code(), 0);
    int64_t dt = now_ms() - t0;
    assert_true(dt >= 400 && dt < 3000);

    /* two calls: the first waits for the second, then both answer */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"hold_in_flight\": 2, "
                                "\"hold_max_ms\": 30000, \"latency_ms\": 100}"), 200);
    int first = -100;
    pthread_t th;
    t0 = now_ms();
    assert_int_equal(pthread_create(&th, NULL, get_lead_thread, &first), 0);
    /* the first call arrives and stays held */
    while (in_flight() < 1 && now_ms() - t0 < 10000)
        usleep(10000);
    usleep(300000);
    assert_int_equal(in_flight(), 1);
    assert_int_equal(get_lead_code(), 0);  /* the second releases both */
    assert_int_equal(pthread_join(th, NULL), 0);
    dt = now_ms() - t0;
    assert_int_equal(first, 0);
    assert_true(dt >= 400 && dt < 10000);  /* far below hold_max_ms */
    json_t *st = simh_stats(&S);
    assert_int_equal(json_integer_value(json_object_get(st, "peak_concurrency")), 2);
    assert_int_equal(json_integer_value(json_object_get(st, "in_flight")), 0);
    assert_int_equal(simh_stat(st, "getLead", "faults"), 0);  /* a hold is no fault */
    json_decref(st);

    /* bad values */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"hold_in_flight\": -1}"), 400);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"hold_in_flight\": 2, "
                                "\"hold_max_ms\": \"x\"}"), 400);
}

/* Company of lead 65835 read with getLead into val (bounded). */
static void company_65835(char *val, size_t cap)
{
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_IDNUM, "65835", &r, &f), SOAP_OK);
    assert_int_equal(r.nleads, 1);
    const char *a = simh_attr(&r.leads[0], "Company");
    snprintf(val, cap, "%s", a != NULL ? a : "(none)");
    mkto_leads_clear(&r);
}

/* Thread body: Company of lead 65835 into the char[64] at arg. */
static void *company_thread(void *arg)
{
    company_65835(arg, 64);
    return NULL;
}

/* One-record syncMultipleLeads setting attribute Company; returns the
 * parser's status and the record's state into *state_out when answered. */
static int sync_company(int64_t id, const char *email, const char *company,
                        mkto_sync_state *state_out)
{
    mkto_attr a = {.name = (char *)"Company", .value = (char *)company};
    mkto_lead l = {.has_id = id > 0, .id = id, .email = (char *)email, .attrs = &a,
                   .nattrs = 1};
    mkto_sync_result r;
    mkto_fault f = {0};
    int rc = simh_sync(&S, &l, 1, true, &r, &f);
    if (rc == SOAP_OK && state_out != NULL)
        *state_out = r.statuses[0].state;
    if (rc == SOAP_OK)
        mkto_sync_result_clear(&r);
    mkto_fault_clear(&f);
    return rc;
}

static void test_drop_after_op(void **state)
{
    /* a plain drop never reaches the store */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"syncMultipleLeads\", \"drop_rate\": 1, "
                                "\"count\": 1}"), 200);
    assert_int_not_equal(sync_company(0, "dropped.before@example.org", "X", NULL), SOAP_OK);
    mkto_sync_state st = MKTO_SYNC_FAILED;
    assert_int_equal(sync_company(0, "dropped.before@example.org", "X", &st), SOAP_OK);
    assert_int_equal(st, MKTO_SYNC_CREATED);
    /* drop_after_op: applied, then no answer; the resend finds the lead */
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"syncMultipleLeads\", \"drop_rate\": 1, "
                                "\"drop_after_op\": true, \"count\": 1}"), 200);
    assert_int_not_equal(sync_company(0, "dropped.after@example.org", "Y", NULL), SOAP_OK);
    assert_int_equal(sync_company(0, "dropped.after@example.org", "Y", &st), SOAP_OK);
    assert_int_equal(st, MKTO_SYNC_UPDATED);
    json_t *stats = simh_stats(&S);
    assert_int_equal(simh_stat(stats, "syncMultipleLeads", "calls"), 4);
    assert_int_equal(simh_stat(stats, "syncMultipleLeads", "faults"), 2);
    assert_int_equal(json_integer_value(json_object_get(stats, "in_flight")), 0);
    json_decref(stats);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"drop_after_op\": 1}"), 400);
}

static void test_latency_after_op(void **state)
{
    char before[64], during[64] = "", after[64];
    company_65835(before, sizeof before);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"latency_after_ms\": 1500, "
                                "\"count\": 1}"), 200);
    pthread_t th;
    int64_t t0 = now_ms();
    assert_int_equal(pthread_create(&th, NULL, company_thread, during), 0);
    while (in_flight() < 1 && now_ms() - t0 < 10000)
        usleep(10000);
    usleep(300000); /* the store has been read; the answer waits */
    mkto_sync_state st = MKTO_SYNC_FAILED;
    assert_int_equal(sync_company(65835, NULL, "LaterCo", &st), SOAP_OK);
    assert_int_equal(st, MKTO_SYNC_UPDATED);
    assert_int_equal(in_flight(), 1); /* the sync did not wait for the slow read */
    assert_int_equal(pthread_join(th, NULL), 0);
    int64_t dt = now_ms() - t0;
    assert_true(dt >= 1500 && dt < 10000);
    assert_string_equal(during, before); /* read before the sync, answered after it */
    company_65835(after, sizeof after);
    assert_string_equal(after, "LaterCo");
    assert_string_not_equal(before, "LaterCo");
}

static void test_reset_restores_data(void **state)
{
    mkto_lead l = {.email = (char *)"temp@example.com"};
    mkto_sync_result r;
    mkto_fault f = {0};
    assert_int_equal(simh_sync(&S, &l, 1, true, &r, &f), SOAP_OK);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    mkto_sync_result_clear(&r);
    mkto_attr a = {.name = (char *)"Company", .value = (char *)"Changed"};
    mkto_lead joe = {.has_id = true, .id = 67508, .attrs = &a, .nattrs = 1};
    assert_int_equal(simh_sync(&S, &joe, 1, true, &r, &f), SOAP_OK);
    mkto_sync_result_clear(&r);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getMultipleLeads\", \"fault_code\": 20011}"), 200);
    json_t *st = simh_stats(&S);
    assert_int_equal(json_integer_value(json_object_get(st, "leads")), 53);
    json_decref(st);
    assert_int_equal(simh_admin(&S, "/_sim/reset", ""), 200);
    mkto_leads lr;
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_EMAIL, "temp@example.com", &lr, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20103);
    mkto_fault_clear(&f);
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_IDNUM, "67508", &lr, &f), SOAP_OK);
    assert_string_equal(simh_attr(&lr.leads[0], "Company"), "Marketo");
    mkto_leads_clear(&lr);
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 6926};
    assert_int_equal(simh_get_multiple(&S, &p, &lr, &f), SOAP_OK);  /* rule gone */
    mkto_leads_clear(&lr);
    st = simh_stats(&S);
    assert_int_equal(json_integer_value(json_object_get(st, "leads")), 52);
    json_decref(st);
}

static void test_admin_errors(void **state)
{
    assert_int_equal(simh_admin(&S, "/_sim/faults", "{not json"), 400);
    assert_int_equal(simh_admin(&S, "/_sim/faults", "{\"operation\": \"getLeadActivity\"}"), 400);
    assert_int_equal(simh_admin(&S, "/_sim/faults", "{\"fault_code\": 20011}"), 400);
    assert_int_equal(simh_admin(&S, "/_sim/faults",
                                "{\"operation\": \"getLead\", \"error_rate\": 2}"), 400);
    assert_int_equal(simh_admin(&S, "/_sim/nothing", "{}"), 404);
    simh_resp r;
    assert_int_equal(simh_get(&S, "/_sim/reset", &r), 0);
    assert_int_equal(r.status, 405);
    simh_resp_free(&r);
}

/* Runs the sim binary with args, stdout/stderr to /dev/null; its exit
 * status, or -1 (did not start, killed, still running after 30 s). */
static int run_sim(const char *const *args)
{
    static const spawn_opts quiet = {.out = SPAWN_NULL, .err = SPAWN_NULL};
    const char *argv[16] = {getenv("SIM_BIN")};
    int n = 1;
    for (; args[n - 1] != NULL && n < 15; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    spawn_proc p;
    if (spawn_start(&p, argv, &quiet) != 0)
        return -1;
    return spawn_wait(&p, 30000);
}

static void test_command_line(void **state)
{
    static const char *const help[] = {"--help", NULL};
    static const char *const missing[] = {"--listen", "127.0.0.1:0", NULL};
    static const char *const badnum[] = {"--listen", "127.0.0.1:0", "--user-id", "u",
                                         "--encryption-key", "k", "--leads", "x", NULL};
    static const char *const badlisten[] = {"--listen", "nowhere", "--user-id", "u",
                                            "--encryption-key", "k", NULL};
    assert_int_equal(run_sim(help), 0);
    assert_int_equal(run_sim(missing), 2);
    assert_int_equal(run_sim(badnum), 2);
    assert_int_equal(run_sim(badlisten), 2);
    /* 10,000 leads are ready fast (start to port line) */
    static const char *const big[] = {"--leads", "10000", NULL};
    simh s;
    int64_t t0 = now_ms();
    assert_int_equal(simh_start(&s, big), 0);
    int64_t dt = now_ms() - t0;
    json_t *st = simh_stats(&s);
    assert_int_equal(json_integer_value(json_object_get(st, "leads")), 10002);
    json_decref(st);
    assert_int_equal(simh_stop(&s), 0);
    assert_true(dt < 3000);  /* generous for sanitizer builds */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_stats, reset),
        cmocka_unit_test_setup(test_fault_code_rule, reset),
        cmocka_unit_test_setup(test_http_503_drop_truncate, reset),
        cmocka_unit_test_setup(test_skip_count, reset),
        cmocka_unit_test_setup(test_reproducible, reset),
        cmocka_unit_test_setup(test_latency, reset),
        cmocka_unit_test_setup(test_hold_until_in_flight, reset),
        cmocka_unit_test_setup(test_drop_after_op, reset),
        cmocka_unit_test_setup(test_latency_after_op, reset),
        cmocka_unit_test_setup(test_reset_restores_data, reset),
        cmocka_unit_test_setup(test_admin_errors, reset),
        cmocka_unit_test(test_command_line),
    };
    return cmocka_run_group_tests_name("sim_admin", tests, setup, teardown);
}
