/* tests/soap/test_sign.c - signatures, timestamps, clean-up.
 *
 * The HMAC vectors were computed independently with
 *   printf '%s' "<timestamp><user>" | openssl dgst -sha1 -hmac "<key>"
 * and are stored here as literals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "soap/soap.h"

/* One known-answer vector. */
typedef struct kat {
    const char *key;  /* encryption key */
    const char *ts;   /* timestamp */
    const char *user; /* user id */
    const char *want; /* expected hex signature */
} kat;

static void test_sign_kats(void **state)
{
    (void)state;
    static const kat kats[] = {
        {"41839624B16E06BA2D66341839624B16E06BA2D663", "2013-08-02T15:47:06-07:00",
         "demo17_1_809934544BFABAE58E5D27", "4ce6ca2dd4661758ba7d9ad0a514fed86b483b14"},
        {"secret", "2013-07-30T14:15:06-07:00", "bigcorp1_461839624B16E06BA2D663",
         "ab3f4f67d0e3bc0f9f91e0c1276eed027a82e9c0"},
        /* Non-ASCII key (UTF-8 bytes are the key). */
        {"cl\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x94\x91", "2024-01-01T00:00:00+00:00",
         "user", "9bfd51769e0a4d5f8ec5276413295e2ca81c8925"},
        /* A 100-byte key (longer than SHA-1's block: hashed first). */
        {"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
         "kkkkkkkkkkkkkkkkk",
         "2024-02-29T23:59:59+05:30", "demo", "5b7b4d9a3e958149a793d2a06a39c711fbe5a20a"},
        /* Empty user id. */
        {"key", "2013-08-02T15:47:06-07:00", "", "e7a832fa67a6fadd183b5379573a683128b8b053"},
    };
    for (size_t i = 0; i < sizeof(kats) / sizeof(kats[0]); i++) {
        char sig[SOAP_SIGNATURE_LEN];
        assert_int_equal(soap_sign(kats[i].key, kats[i].ts, kats[i].user, sig), SOAP_OK);
        assert_string_equal(sig, kats[i].want);
    }
}

static void test_sign_long_message(void **state)
{
    (void)state;
    /* 300-byte user id: the message no longer fits the stack buffer. */
    char user[301];
    memset(user, 'u', 300);
    user[300] = '\0';
    char sig[SOAP_SIGNATURE_LEN];
    assert_int_equal(soap_sign("key", "2013-08-02T15:47:06-07:00", user, sig), SOAP_OK);
    assert_string_equal(sig, "c07d4f69a3c510e5533b2351e63acc42174f3dd2");
}

static void test_sign_null_input(void **state)
{
    (void)state;
    char sig[SOAP_SIGNATURE_LEN];
    assert_int_equal(soap_sign(NULL, "t", "u", sig), SOAP_ERR_INVALID);
    assert_int_equal(soap_sign("k", NULL, "u", sig), SOAP_ERR_INVALID);
    assert_int_equal(soap_sign("k", "t", NULL, sig), SOAP_ERR_INVALID);
    assert_int_equal(soap_sign("k", "t", "u", NULL), SOAP_ERR_INVALID);
}

static void test_timestamp_format(void **state)
{
    (void)state;
    char ts[SOAP_TIMESTAMP_LEN];
    /* 2013-08-02T22:47:06Z */
    const time_t t = 1375483626;
    assert_int_equal(soap_timestamp_format(t, -7 * 3600, ts), SOAP_OK);
    assert_string_equal(ts, "2013-08-02T15:47:06-07:00");
    assert_int_equal(soap_timestamp_format(t, 0, ts), SOAP_OK);
    assert_string_equal(ts, "2013-08-02T22:47:06+00:00");
    assert_int_equal(soap_timestamp_format(t, 5 * 3600 + 30 * 60, ts), SOAP_OK);
    assert_string_equal(ts, "2013-08-03T04:17:06+05:30");
    assert_int_equal(soap_timestamp_format(t, -(9 * 3600 + 30 * 60), ts), SOAP_OK);
    assert_string_equal(ts, "2013-08-02T13:17:06-09:30");
    assert_int_equal(soap_timestamp_format(0, 14 * 3600, ts), SOAP_OK);
    assert_string_equal(ts, "1970-01-01T14:00:00+14:00");
    /* Not whole minutes, or a day or more away. */
    assert_int_equal(soap_timestamp_format(t, 30, ts), SOAP_ERR_INVALID);
    assert_int_equal(soap_timestamp_format(t, 24 * 3600, ts), SOAP_ERR_INVALID);
    assert_int_equal(soap_timestamp_format(t, -24 * 3600, ts), SOAP_ERR_INVALID);
}

static void test_timestamp_now(void **state)
{
    (void)state;
    char ts[SOAP_TIMESTAMP_LEN];
    time_t before = time(NULL);
    assert_int_equal(soap_timestamp_now(ts), SOAP_OK);
    time_t after = time(NULL);
    assert_int_equal(strlen(ts), 25);
    time_t back;
    assert_int_equal(soap_timestamp_parse(ts, &back), SOAP_OK);
    assert_true(back >= before && back <= after);

    /* Local offset is honoured: a fixed zone gives its offset. */
    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    setenv("TZ", "UTC-05:30", 1); /* POSIX: 5:30 east of UTC */
    tzset();
    assert_int_equal(soap_timestamp_now(ts), SOAP_OK);
    assert_string_equal(ts + 19, "+05:30");
    setenv("TZ", "UTC+07", 1);
    tzset();
    assert_int_equal(soap_timestamp_now(ts), SOAP_OK);
    assert_string_equal(ts + 19, "-07:00");
    setenv("TZ", "UTC0", 1);
    tzset();
    assert_int_equal(soap_timestamp_now(ts), SOAP_OK);
    assert_string_equal(ts + 19, "+00:00");
    if (saved) {
        setenv("TZ", saved, 1);
        free(saved);
    } else {
        unsetenv("TZ");
    }
    tzset();
}

static void test_timestamp_parse(void **state)
{
    (void)state;
    time_t t;
    assert_int_equal(soap_timestamp_parse("2013-08-02T15:47:06-07:00", &t), SOAP_OK);
    assert_int_equal(t, 1375483626);
    assert_int_equal(soap_timestamp_parse("2013-08-02T22:47:06Z", &t), SOAP_OK);
    assert_int_equal(t, 1375483626);
    assert_int_equal(soap_timestamp_parse("2013-08-02T22:47:06+00:00", &t), SOAP_OK);
    assert_int_equal(t, 1375483626);
    assert_int_equal(soap_timestamp_parse("2013-08-03T04:17:06.123456+05:30", &t), SOAP_OK);
    assert_int_equal(t, 1375483626);
    assert_int_equal(soap_timestamp_parse("2013-08-02t22:47:06.5z", &t), SOAP_OK);
    assert_int_equal(t, 1375483626);
    assert_int_equal(soap_timestamp_parse("2024-02-29T00:00:00Z", &t), SOAP_OK);
    assert_int_equal(t, 1709164800);
    assert_int_equal(soap_timestamp_parse("1970-01-01T00:00:00Z", &t), SOAP_OK);
    assert_int_equal(t, 0);

    /* Round trip through the formatter at several offsets. */
    static const long offs[] = {0, 3600, -3600, 19800, -34200, 50400, -43200};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        char ts[SOAP_TIMESTAMP_LEN];
        for (time_t x = 0; x < 2000000000; x += 123456789) {
            assert_int_equal(soap_timestamp_format(x, offs[i], ts), SOAP_OK);
            assert_int_equal(soap_timestamp_parse(ts, &t), SOAP_OK);
            assert_int_equal(t, x);
        }
    }
}

static void test_timestamp_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "garbage",
        "2013-08-02",
        "2013-08-02T15:47:06",          /* no zone */
        "2013-08-02 15:47:06Z",         /* space */
        "2013-08-02T15:47:06+0700",     /* no colon */
        "2013-08-02T15:47:06+07",       /* short offset */
        "2013-08-02T15:47:06-07:00 ",   /* trailing space */
        "2013-08-02T15:47:06-07:00x",   /* trailing garbage */
        "2013-13-02T15:47:06Z",         /* month */
        "2013-00-02T15:47:06Z",
        "2013-02-29T15:47:06Z",         /* not a leap year */
        "2013-04-31T15:47:06Z",
        "2013-08-00T15:47:06Z",
        "2013-08-02T24:00:00Z",
        "2013-08-02T23:60:00Z",
        "2013-08-02T23:59:61Z",
        "2013-08-02T15:47:06+24:00",
        "2013-08-02T15:47:06+07:60",
        "2013-08-02T15:47:06.Z",        /* empty fraction */
        "13-08-02T15:47:06Z",
        "2013-8-02T15:47:06Z",
        "+2013-08-02T15:47:06Z",
        "2013-08-02T15:47:0aZ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        time_t t = 42;
        if (soap_timestamp_parse(bad[i], &t) != SOAP_ERR_INVALID)
            fail_msg("accepted bad timestamp '%s'", bad[i]);
    }
    time_t t;
    assert_int_equal(soap_timestamp_parse(NULL, &t), SOAP_ERR_INVALID);
}

static void test_clear_functions(void **state)
{
    (void)state;
    /* Zeroed structs are fine, twice. */
    mkto_lead l = {0};
    mkto_fault f = {0};
    mkto_leads r = {0};
    mkto_sync_result s = {0};
    mkto_lead_clear(&l);
    mkto_fault_clear(&f);
    mkto_leads_clear(&r);
    mkto_sync_result_clear(&s);
    mkto_lead_clear(NULL);
    mkto_fault_clear(NULL);
    mkto_leads_clear(NULL);
    mkto_sync_result_clear(NULL);

    /* Filled ones are emptied (ASan checks nothing leaks). */
    l.email = strdup("a@b.c");
    l.attrs = calloc(2, sizeof(*l.attrs));
    l.nattrs = 2;
    l.attrs[0].name = strdup("A");
    l.attrs[0].value = strdup("v");
    l.attrs[1].name = strdup("B");
    mkto_lead_clear(&l);
    assert_null(l.attrs);
    assert_int_equal(l.nattrs, 0);
    s.statuses = calloc(1, sizeof(*s.statuses));
    s.nstatuses = 1;
    s.statuses[0].error = strdup("x");
    mkto_sync_result_clear(&s);
    assert_null(s.statuses);
}

int main(void)
{
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_kats),
        cmocka_unit_test(test_sign_long_message),
        cmocka_unit_test(test_sign_null_input),
        cmocka_unit_test(test_timestamp_format),
        cmocka_unit_test(test_timestamp_now),
        cmocka_unit_test(test_timestamp_parse),
        cmocka_unit_test(test_timestamp_parse_rejects),
        cmocka_unit_test(test_clear_functions),
    };
    int rc = cmocka_run_group_tests_name("soap_sign", tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
