/* tests/upstream/test_attempt.c - how one attempt ends (gateway/upstream/
 * attempt.c) and the token bucket (pacing.c), without the engine. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gateway/store/ratelimit.h"
#include "gateway/upstream/attempt.h"
#include "gateway/upstream/pacing.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
/* 2026-11-30 12:00:00 UTC: US-Central midnight is 06:00 UTC the next day */
#define NOON_S 1796040000LL

static gw_attempt_policy policy(void)
{
    return (gw_attempt_policy){.window_s = 20, .now_wall_s = NOON_S, .rng = &rng};
}

static gw_attempt classify(const gw_attempt_facts *f)
{
    gw_attempt_policy p = policy();
    gw_attempt r;
    memset(&r, 0x5a, sizeof r); /* every field must be set */
    gw_attempt_classify(f, &p, &r);
    return r;
}

/* An HTTP answer of a lookup, as the protocol read it. */
static gw_attempt_facts answer(mkto_parsed parsed, long status, int code)
{
    return (gw_attempt_facts){.kind = GW_CALL_GET_MULTIPLE, .attempts = 1,
                              .transport = CURLE_OK, .http_status = status,
                              .parsed = parsed, .fault_code = code, .parse_msg = "not SOAP"};
}

static void test_ok(void **state)
{
    (void)state;
    gw_attempt r = classify(&(gw_attempt_facts){.kind = GW_CALL_GET_MULTIPLE, .attempts = 1,
                                                .transport = CURLE_OK, .http_status = 200,
                                                .parsed = MKTO_PARSED_OK});
    assert_int_equal(r.outcome, GW_OUT_OK);
    assert_false(r.retry);
    assert_false(r.maybe_applied);
    assert_int_equal(r.retry_after_s, 0);
    assert_string_equal(r.detail, "");
}

static void test_fault_classes(void **state)
{
    (void)state;
    gw_attempt_facts f = answer(MKTO_PARSED_FAULT, 500, 20016);
    gw_attempt r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_FAULT);
    assert_true(r.retry); /* request expired: re-signed at once */
    assert_int_equal(r.delay_ms, 0);
    assert_string_equal(r.detail, "fault 20016");

    f.fault_code = 20023; /* rate limit: at least 1 s, Retry-After the window */
    r = classify(&f);
    assert_true(r.retry);
    assert_true(r.delay_ms >= 1000);
    assert_int_equal(r.retry_after_s, 20);

    f.fault_code = 20024; /* concurrency: Retry-After 1 s */
    r = classify(&f);
    assert_true(r.retry);
    assert_true(r.delay_ms >= 750 && r.delay_ms <= 1250);
    assert_int_equal(r.retry_after_s, 1);

    static const int backoff[] = {10001, 20011};
    for (size_t i = 0; i < 2; i++) {
        f.fault_code = backoff[i];
        r = classify(&f);
        assert_true(r.retry);
        assert_true(r.delay_ms >= 750 && r.delay_ms <= 1250);
        assert_int_equal(r.retry_after_s, 0);
    }

    static const int final[] = {20013, 20014, 20103, 20105, 0, 99999};
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++) {
        f.fault_code = final[i];
        r = classify(&f);
        assert_int_equal(r.outcome, GW_OUT_FAULT);
        assert_false(r.retry);
    }
}

static void test_quota_fault_waits_for_midnight(void **state)
{
    (void)state;
    gw_attempt_facts f = answer(MKTO_PARSED_FAULT, 500, 20015);
    gw_attempt r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_FAULT);
    assert_false(r.retry);
    assert_int_equal(r.retry_after_s, gw_next_central_midnight(NOON_S) - NOON_S);
    assert_int_equal(r.retry_after_s, 18 * 3600);
}

static void test_foreign_answers(void **state)
{
    (void)state;
    /* an HTML 503 for a lookup: retried, Retry-After honoured (capped) */
    gw_attempt_facts f = answer(MKTO_PARSED_FOREIGN, 503, 0);
    f.retry_after_s = 7;
    gw_attempt r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_BAD_RESPONSE);
    assert_true(r.retry);
    assert_int_equal(r.delay_ms, 7000);
    assert_int_equal(r.retry_after_s, 7);
    assert_string_equal(r.detail, "HTTP 503");
    f.retry_after_s = 86400;
    r = classify(&f);
    assert_int_equal(r.retry_after_s, 3600);

    /* a sync's 500 page: it may have been applied, never re-sent */
    f = answer(MKTO_PARSED_FOREIGN, 500, 0);
    f.kind = GW_CALL_SYNC_MULTIPLE;
    r = classify(&f);
    assert_false(r.retry);
    assert_true(r.maybe_applied);
    /* ... but 503 and 429 say it was not processed */
    f.http_status = 429;
    r = classify(&f);
    assert_true(r.retry);
    assert_false(r.maybe_applied);

    /* a 200 that is not the API's: no retry; for a sync, maybe applied */
    f = answer(MKTO_PARSED_FOREIGN, 200, 0);
    r = classify(&f);
    assert_false(r.retry);
    assert_false(r.maybe_applied);
    assert_string_equal(r.detail, "parse: not SOAP");
    f.kind = GW_CALL_SYNC_MULTIPLE;
    r = classify(&f);
    assert_true(r.maybe_applied);

    f = answer(MKTO_PARSED_FOREIGN, 404, 0);
    r = classify(&f);
    assert_false(r.retry);
    assert_string_equal(r.detail, "HTTP 404, parse: not SOAP");

    f = answer(MKTO_PARSED_TOO_LARGE, 200, 0);
    r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_BAD_RESPONSE);
    assert_string_equal(r.detail, "response too large");
}

/* A transport failure of kind k. */
static gw_attempt_facts transport(gw_call_kind k, CURLcode res, bool sent)
{
    return (gw_attempt_facts){.kind = k, .attempts = 1, .transport = res, .sent = sent,
                              .max_response = 1000};
}

static void test_transport_failures(void **state)
{
    (void)state;
    /* nothing left: connect failures are retried for syncs too */
    gw_attempt_facts f = transport(GW_CALL_SYNC_MULTIPLE, CURLE_COULDNT_CONNECT, false);
    gw_attempt r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_UNREACHABLE);
    assert_true(r.retry);
    assert_false(r.maybe_applied);
    assert_true(r.delay_ms >= 375 && r.delay_ms <= 625);

    /* a lookup that timed out waiting for the answer: retried */
    f = transport(GW_CALL_GET_MULTIPLE, CURLE_OPERATION_TIMEDOUT, true);
    r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_TIMEOUT);
    assert_true(r.retry);
    /* ... not when the call's timeout was the job's own deadline */
    f.deadline_capped = true;
    r = classify(&f);
    assert_false(r.retry);

    /* a sync that timed out after sending: maybe applied, not re-sent */
    f = transport(GW_CALL_SYNC_MULTIPLE, CURLE_OPERATION_TIMEDOUT, true);
    r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_TIMEOUT);
    assert_false(r.retry);
    assert_true(r.maybe_applied);

    /* connection lost: a lookup is retried, a sync that was sent is not */
    f = transport(GW_CALL_GET_MULTIPLE, CURLE_RECV_ERROR, true);
    assert_true(classify(&f).retry);
    f.kind = GW_CALL_SYNC_MULTIPLE;
    r = classify(&f);
    assert_false(r.retry);
    assert_true(r.maybe_applied);
    f.sent = false;
    r = classify(&f);
    assert_true(r.retry);
    assert_false(r.maybe_applied);

    /* certificate and configuration problems do not heal */
    f = transport(GW_CALL_GET_MULTIPLE, CURLE_PEER_FAILED_VERIFICATION, false);
    r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_UNREACHABLE);
    assert_false(r.retry);

    /* a body over the cap */
    f = transport(GW_CALL_SYNC_MULTIPLE, CURLE_WRITE_ERROR, true);
    f.too_large = true;
    r = classify(&f);
    assert_int_equal(r.outcome, GW_OUT_BAD_RESPONSE);
    assert_false(r.retry);
    assert_true(r.maybe_applied);
    assert_string_equal(r.detail, "response too large (over 1000 bytes)");
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        int64_t d1 = gw_backoff_ms(1, 500, &rng);
        assert_true(d1 >= 375 && d1 <= 625);
        int64_t d3 = gw_backoff_ms(3, 500, &rng);
        assert_true(d3 >= 1500 && d3 <= 2500);
        int64_t big = gw_backoff_ms(20, 500, &rng); /* capped at 30 s, +-25% */
        assert_true(big >= 22500 && big <= 37500);
    }
}

static void test_pacing(void **state)
{
    (void)state;
    gw_pacer p;
    gw_pacer_init(&p, 0, 20000, 10, 0);
    assert_false(p.on);
    assert_int_equal(gw_pacer_wait_ms(&p, 0), 0);

    /* 100 calls / 20 s, 10 concurrent: a burst of 10, then one every 200 ms */
    gw_pacer_init(&p, 100, 20000, 10, 1000);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(gw_pacer_wait_ms(&p, 1000), 0);
        gw_pacer_take(&p);
    }
    assert_int_equal(gw_pacer_wait_ms(&p, 1000), 200);
    assert_int_equal(gw_pacer_wait_ms(&p, 1150), 50);
    assert_int_equal(gw_pacer_wait_ms(&p, 1200), 0);
    gw_pacer_take(&p);
    /* a long idle time refills to the burst, not beyond */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(gw_pacer_wait_ms(&p, 100000), 0);
        gw_pacer_take(&p);
    }
    assert_true(gw_pacer_wait_ms(&p, 100000) > 0);

    /* a window smaller than the concurrency: the burst is the window's calls */
    gw_pacer_init(&p, 3, 1000, 10, 0);
    assert_true(p.burst == 3.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_fault_classes),
        cmocka_unit_test(test_quota_fault_waits_for_midnight),
        cmocka_unit_test(test_foreign_answers),
        cmocka_unit_test(test_transport_failures),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_pacing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
