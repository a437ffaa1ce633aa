/* tests/sim/test_limits.c - marketo-sim black box: the rolling window
 * (20023), the concurrency limit (20024), the daily quota (20015) and
 * changing limits at run time. Each test starts its own sim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "harness.h"

static int setup(void **state)
{
    soap_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int teardown(void **state)
{
    curl_global_cleanup();
    soap_cleanup();
    return 0;
}

/* A cheap signed getLead envelope (malloc'd). */
static char *get_lead_env(const char *key)
{
    return simh_envelope("<ns1:paramsGetLead><leadKey><keyType>IDNUM</keyType>"
                         "<keyValue>65835</keyValue></leadKey></ns1:paramsGetLead>",
                         NULL, key, NULL);
}

/* One getLead call: 0 for success, else the fault code. */
static int call(const simh *s)
{
    simh_resp r;
    assert_int_equal(simh_soap(s, get_lead_env(NULL), &r), 0);
    int code = r.status == 200 ? 0 : simh_fault_code(&r);
    simh_resp_free(&r);
    return code;
}

static void test_rate_window(void **state)
{
    static const char *const extra[] = {"--leads", "10", "--calls-per-window", "5",
                                        "--window-seconds", "2", "--max-concurrent", "0",
                                        "--daily-quota", "0", NULL};
    simh s;
    assert_int_equal(simh_start(&s, extra), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 20023);
    assert_int_equal(call(&s), 20023);
    /* refused calls do not enter the window: after it passes, 5 more */
    usleep(2200 * 1000);
    for (int i = 0; i < 5; i++)
        assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 20023);
    json_t *st = simh_stats(&s);
    assert_non_null(st);
    assert_int_equal(simh_stat(st, "getLead", "calls"), 13);
    assert_int_equal(simh_stat(st, "getLead", "faults"), 3);
    json_decref(st);
    /* unauthenticated calls are refused before the limits (20014, not 20023) */
    simh_resp r;
    assert_int_equal(simh_soap(&s, get_lead_env("bad key"), &r), 0);
    assert_int_equal(simh_fault_code(&r), 20014);
    simh_resp_free(&r);
    assert_int_equal(simh_stop(&s), 0);
}

/* curl write callback collecting a body. */
static size_t collect(char *p, size_t size, size_t nmemb, void *ud)
{
    simh_resp *r = ud;
    char *nb = realloc(r->body, r->len + size * nmemb + 1);
    if (nb == NULL)
        return 0;
    memcpy(nb + r->len, p, size * nmemb);
    r->body = nb;
    r->len += size * nmemb;
    r->body[r->len] = '\0';
    return size * nmemb;
}

#define NPAR 15

static void test_concurrency(void **state)
{
    static const char *const extra[] = {"--leads", "10", "--latency-ms", "600",
                                        "--calls-per-window", "0", "--daily-quota", "0", NULL};
    simh s;
    assert_int_equal(simh_start(&s, extra), 0);
    CURLM *m = curl_multi_init();
    CURL *e[NPAR];
    char *env[NPAR];
    simh_resp res[NPAR];
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: text/xml; charset=UTF-8");
    memset(res, 0, sizeof(res));
    for (int i = 0; i < NPAR; i++) {
        env[i] = get_lead_env(NULL);
        e[i] = curl_easy_init();
        curl_easy_setopt(e[i], CURLOPT_URL, s.soap_url);
        curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, env[i]);
        curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &res[i]);
        curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 20L);
        curl_easy_setopt(e[i], CURLOPT_NOPROXY, "*");
        curl_multi_add_handle(m, e[i]);
    }
    int running = 1;
    while (running > 0) {
        curl_multi_perform(m, &running);
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < NPAR; i++) {
        curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &res[i].status);
        if (res[i].status == 200)
            ok++;
        else if (simh_fault_code(&res[i]) == 20024)
            refused++;
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        free(env[i]);
        free(res[i].body);
    }
    curl_slist_free_all(h);
    curl_multi_cleanup(m);
    assert_int_equal(ok, 10);
    assert_int_equal(refused, NPAR - 10);
    json_t *st = simh_stats(&s);
    assert_non_null(st);
    json_int_t peak = json_integer_value(json_object_get(st, "peak_concurrency"));
    assert_true(peak >= 10 && peak <= NPAR);
    assert_int_equal(json_integer_value(json_object_get(st, "in_flight")), 0);
    assert_int_equal(simh_stat(st, "getLead", "faults"), NPAR - 10);
    json_decref(st);
    /* slots come back: a call after the burst succeeds */
    assert_int_equal(call(&s), 0);
    assert_int_equal(simh_stop(&s), 0);
}

static void test_daily_quota(void **state)
{
    static const char *const extra[] = {"--leads", "10", "--daily-quota", "3", NULL};
    simh s;
    assert_int_equal(simh_start(&s, extra), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 20015);
    assert_int_equal(call(&s), 20015);
    simh_resp r;
    assert_int_equal(simh_get(&s, "/_sim/limits", &r), 0);
    assert_non_null(strstr(r.body, "\"daily_quota\":3"));
    simh_resp_free(&r);
    /* raised at run time */
    assert_int_equal(simh_admin(&s, "/_sim/limits", "{\"daily_quota\": 5}"), 200);
    assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 20015);
    assert_int_equal(simh_admin(&s, "/_sim/limits", "{\"daily_quota\": 0}"), 200);
    assert_int_equal(call(&s), 0);
    /* other limits at run time */
    assert_int_equal(simh_admin(&s, "/_sim/limits",
                                "{\"calls_per_window\": 1, \"window_seconds\": 30}"), 200);
    assert_int_equal(call(&s), 20023);  /* the window already holds accepted calls */
    assert_int_equal(simh_admin(&s, "/_sim/limits", "{\"calls_per_window\": -1}"), 400);
    assert_int_equal(simh_admin(&s, "/_sim/limits", "{\"max_concurrent\": \"x\"}"), 400);
    /* reset clears the counters, not the settings */
    assert_int_equal(simh_admin(&s, "/_sim/reset", ""), 200);
    assert_int_equal(call(&s), 0);
    assert_int_equal(call(&s), 20023);
    assert_int_equal(simh_stop(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_window),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_daily_quota),
    };
    return cmocka_run_group_tests_name("sim_limits", tests, setup, teardown);
}
