/* tests/gateway/test_query.c - GET /leads parameters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/leads/cursor.h"
#include "gateway/leads/query.h"

static const gw_query_limits LIM = {.max_keys = 1000, .max_page_size = 1000,
                                    .default_page_size = 100};

/* Parses qs; asserts success; the caller clears *s. */
static void ok(const char *qs, gw_selector *s)
{
    gw_err err = {0};
    memset(s, 0, sizeof(*s));
    if (gw_query_parse_string(qs, &LIM, s, &err) != 0)
        fail_msg("rejected '%.80s': %s", qs, err.msg);
}

/* Parses qs; asserts failure, a 400, with a message containing want. */
static void bad_lim(const char *qs, const gw_query_limits *lim, const char *want)
{
    gw_err err = {0};
    gw_selector s;
    memset(&s, 0, sizeof(s));
    int rc = gw_query_parse_string(qs, lim, &s, &err);
    gw_selector_clear(&s);
    if (rc == 0)
        fail_msg("accepted '%.80s'", qs);
    if (strstr(err.msg, want) == NULL)
        fail_msg("'%.80s': message '%s' lacks '%s'", qs, err.msg, want);
    if (err.status != 400)
        fail_msg("'%.80s': status %d, not 400", qs, err.status);
}

static void bad(const char *qs, const char *want)
{
    bad_lim(qs, &LIM, want);
}

static void test_key_params(void **state)
{
    (void)state;
    struct {
        const char *param;
        mkto_key_type t;
    } names[] = {
        {"id", MKTO_KEY_IDNUM},
        {"email", MKTO_KEY_EMAIL},
        {"cookie", MKTO_KEY_COOKIE},
        {"leadOwnerEmail", MKTO_KEY_LEADOWNEREMAIL},
        {"sfdcAccountId", MKTO_KEY_SFDCACCOUNTID},
        {"sfdcContactId", MKTO_KEY_SFDCCONTACTID},
        {"sfdcLeadId", MKTO_KEY_SFDCLEADID},
        {"sfdcLeadOwnerId", MKTO_KEY_SFDCLEADOWNERID},
        {"sfdcOpptyId", MKTO_KEY_SFDCOPPTYID},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char qs[128];
        snprintf(qs, sizeof(qs), "%s=12,34&%s=56", names[i].param, names[i].param);
        gw_selector s;
        ok(qs, &s);
        assert_true(s.has_selector);
        assert_int_equal(s.kind, MKTO_SEL_KEYS);
        assert_int_equal(s.key_type, names[i].t);
        assert_int_equal(s.nkeys, 3);
        assert_string_equal(s.keys[0], "12");
        assert_string_equal(s.keys[2], "56");
        assert_string_equal(s.fieldset, "");
        assert_int_equal(s.limit, 100);
        assert_false(s.has_limit);
        gw_selector_clear(&s);
        assert_string_equal(gw_key_param_name(names[i].t), names[i].param);
    }
    assert_null(gw_key_param_name(MKTO_KEY__COUNT));
}

static void test_emails(void **state)
{
    (void)state;
    gw_selector s;
    ok("email=a%40x.com,B@Y.com&email=b@y.COM&email=+c@z.com+,a@x.com", &s);
    assert_int_equal(s.nkeys, 3);
    assert_string_equal(s.keys[0], "a@x.com");
    assert_string_equal(s.keys[1], "b@y.com");
    assert_string_equal(s.keys[2], "c@z.com");
    gw_selector_clear(&s);
    assert_null(s.keys);

    /* UTF-8 is fine; cookies keep their case. */
    ok("email=%C3%A9l%C3%A8ve@x.fr", &s);
    assert_string_equal(s.keys[0], "\xC3\xA9l\xC3\xA8ve@x.fr");
    gw_selector_clear(&s);
    ok("cookie=id:561-HYG-937%26token:_mch-Marketo.com-1", &s);
    assert_string_equal(s.keys[0], "id:561-HYG-937&token:_mch-Marketo.com-1");
    gw_selector_clear(&s);
}

static void test_ids(void **state)
{
    (void)state;
    gw_selector s;
    ok("id=1,007,2147483647,7", &s);
    assert_int_equal(s.nkeys, 3);
    assert_string_equal(s.keys[0], "1");
    assert_string_equal(s.keys[1], "7");
    assert_string_equal(s.keys[2], "2147483647");
    gw_selector_clear(&s);
    bad("id=0", "id: each value must be a positive integer");
    bad("id=2147483648", "positive integer");
    bad("id=-5", "positive integer");
    bad("id=1.5", "positive integer");
    bad("id=abc", "positive integer");
    bad("id=99999999999999999999999", "positive integer");
}

static void test_value_rejections(void **state)
{
    (void)state;
    bad("email=", "email: empty value");
    bad("email=a@x.com,,b@x.com", "email: empty value");
    bad("email=a@x.com,", "email: empty value");
    bad("email=+", "email: empty value");
    bad("email", "email: empty value");
    bad("cookie=a%01b", "cookie: control character");
    bad("email=a%7Fb", "control character");
    bad("email=a%09b", "control character");
    bad("email=a%00b", "NUL");
    bad("email=%C0%AF", "not valid UTF-8");      /* overlong '/' */
    bad("email=%ED%A0%80", "not valid UTF-8");   /* surrogate */
    bad("email=%F4%90%80%80", "not valid UTF-8"); /* above U+10FFFF */
    bad("email=%FF", "not valid UTF-8");
    bad("email=%C3", "not valid UTF-8");
    bad("email=a%EF%BF%BEb", "character XML cannot carry"); /* U+FFFE */
    bad("staticList=List%EF%BF%BF", "character XML cannot carry"); /* U+FFFF */
    bad("email=%zz", "percent-encoding");
    bad("email=abc%4", "percent-encoding");
    bad("email=abc%", "percent-encoding");

    /* 512 bytes pass, 513 and 100 KB do not; the message has no value. */
    size_t n = 100 * 1024;
    char *qs = malloc(n + 16);
    assert_non_null(qs);
    memcpy(qs, "email=", 6);
    memset(qs + 6, 'a', n);
    qs[6 + n] = '\0';
    bad(qs, "email: value longer than 512 bytes");
    qs[6 + 513] = '\0';
    bad(qs, "longer than 512");
    qs[6 + 512] = '\0';
    gw_selector s;
    ok(qs, &s);
    assert_int_equal(strlen(s.keys[0]), 512);
    gw_selector_clear(&s);
    free(qs);
}

/* No message ever contains the submitted value. */
static void test_messages_never_echo_values(void **state)
{
    (void)state;
    const char *cases[] = {
        "email=secret%01@x.com",
        "email=secret@x.com&staticList=secretlist",
        "email=secret@x.com&limit=5",
        "email=secret@x.com&cursor=abc",
        "id=secret",
        "staticList=secret%00",
        "updatedSince=secret",
        "fields=secret-field",
        "limit=secret",
        "cursor=secret!",
        "secret@x.com=1",
        "email=secret@x.com&email=secret%FF",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_err err = {0};
        gw_selector s;
        memset(&s, 0, sizeof(s));
        assert_int_equal(gw_query_parse_string(cases[i], &LIM, &s, &err), -1);
        gw_selector_clear(&s);
        assert_true(err.msg[0] != '\0');
        if (strstr(err.msg, "secret") != NULL)
            fail_msg("case %zu echoes a value: %s", i, err.msg);
    }
}

static void test_dedup_and_max_keys(void **state)
{
    (void)state;
    gw_query_limits lim = LIM;
    lim.max_keys = 3;
    gw_selector s;
    memset(&s, 0, sizeof(s));
    gw_err err = {0};
    /* Duplicates do not count against the maximum. */
    assert_int_equal(
        gw_query_parse_string("email=a@x,A@X,b@x,c@x,B@x,a@x", &lim, &s, &err), 0);
    assert_int_equal(s.nkeys, 3);
    gw_selector_clear(&s);
    bad_lim("email=a@x,b@x,c@x,d@x", &lim, "too many keys: at most 3");
    bad_lim("id=1&id=2&id=3&id=4", &lim, "too many keys");

    /* A thousand distinct keys pass the default limit, 1001 do not. */
    size_t cap = 16 + 1001 * 12;
    char *qs = malloc(cap);
    assert_non_null(qs);
    size_t o = (size_t)snprintf(qs, cap, "id=");
    for (int i = 1; i <= 1000; i++)
        o += (size_t)snprintf(qs + o, cap - o, "%s%d", i > 1 ? "," : "", i);
    ok(qs, &s);
    assert_int_equal(s.nkeys, 1000);
    assert_string_equal(s.keys[999], "1000");
    gw_selector_clear(&s);
    snprintf(qs + o, cap - o, ",1001");
    bad(qs, "too many keys: at most 1000");
    free(qs);
}

static void test_static_list(void **state)
{
    (void)state;
    gw_selector s;
    ok("staticList=SMSProgram.listForTesting&fields=LastName,FirstName,LastName&limit=2", &s);
    assert_int_equal(s.kind, MKTO_SEL_STATIC_LIST);
    assert_string_equal(s.list_name, "SMSProgram.listForTesting");
    assert_int_equal(s.list_id, 0);
    assert_int_equal(s.nfields, 2);
    assert_string_equal(s.fields[0], "FirstName");
    assert_string_equal(s.fields[1], "LastName");
    assert_string_equal(s.fieldset, "FirstName,LastName");
    assert_int_equal(s.limit, 2);
    assert_true(s.has_limit);
    gw_selector_clear(&s);

    ok("staticList=My+List,%2FA%26B", &s);
    assert_string_equal(s.list_name, "My List,/A&B");
    gw_selector_clear(&s);

    ok("staticListId=6926", &s);
    assert_int_equal(s.kind, MKTO_SEL_STATIC_LIST);
    assert_null(s.list_name);
    assert_int_equal(s.list_id, 6926);
    gw_selector_clear(&s);

    bad("staticListId=0", "staticListId: must be a positive integer");
    bad("staticListId=x", "staticListId");
    bad("staticListId=", "staticListId");
    bad("staticList=", "staticList: empty value");
    bad("staticList=a%0Ab", "control character");
    bad("staticList=a&staticList=b", "parameter 'staticList' given more than once");
}

static void test_updated_at(void **state)
{
    (void)state;
    gw_selector s;
    ok("updatedSince=2024-01-01T00:00:00Z", &s);
    assert_int_equal(s.kind, MKTO_SEL_UPDATED_AT);
    assert_int_equal(s.updated_since, 1704067200);
    assert_int_equal(s.updated_until, 0);
    gw_selector_clear(&s);

    ok("updatedSince=2024-01-01T00:00:00%2B02:00&updatedUntil=2024-03-01T00:00:00.5Z", &s);
    assert_int_equal(s.updated_since, 1704067200 - 7200);
    assert_int_equal(s.updated_until, 1709251200);
    gw_selector_clear(&s);

    bad("updatedSince=2024-01-01", "updatedSince: must be an RFC 3339 date-time");
    bad("updatedSince=yesterday", "RFC 3339");
    bad("updatedSince=2024-02-30T00:00:00Z", "RFC 3339");
    bad("updatedSince=", "RFC 3339");
    bad("updatedSince=2024-01-02T00:00:00Z&updatedUntil=2024-01-01T00:00:00Z",
        "updatedUntil must be later than updatedSince");
    bad("updatedSince=2024-01-01T00:00:00Z&updatedUntil=2024-01-01T00:00:00Z", "later");
    bad("updatedSince=2024-01-01T00:00:00Z&updatedUntil=soon", "updatedUntil: must be");
    bad("updatedUntil=2024-01-01T00:00:00Z", "updatedUntil applies to updatedSince lookups");
    bad("staticListId=1&updatedUntil=2024-01-01T00:00:00Z", "updatedUntil applies");
    bad("updatedSince=2024-01-01T00:00:00Z&updatedSince=2024-01-01T00:00:00Z",
        "given more than once");
}

static void test_fields(void **state)
{
    (void)state;
    gw_selector s;
    ok("email=a@x&fields=Company,FirstName&fields=Company,A_1", &s);
    assert_int_equal(s.nfields, 3);
    assert_string_equal(s.fieldset, "A_1,Company,FirstName");
    gw_selector_clear(&s);

    bad("email=a@x&fields=", "fields: empty name");
    bad("email=a@x&fields=a,,b", "fields: empty name");
    bad("email=a@x&fields=First-Name", "fields: names are letters, digits and _");
    bad("email=a@x&fields=%C3%A9", "fields: names");
    char qs[600];
    char name[70];
    memset(name, 'F', 65);
    name[65] = '\0';
    snprintf(qs, sizeof(qs), "email=a@x&fields=%s", name);
    bad(qs, "fields: names");
    name[64] = '\0';
    snprintf(qs, sizeof(qs), "email=a@x&fields=%s", name);
    ok(qs, &s);
    gw_selector_clear(&s);

    /* 100 distinct names pass, 101 do not; repeats do not count. */
    char big[2000];
    size_t o = (size_t)snprintf(big, sizeof(big), "staticListId=1&fields=");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "%sf%d", i ? "," : "", i);
    o += (size_t)snprintf(big + o, sizeof(big) - o, ",f0,f1");
    ok(big, &s);
    assert_int_equal(s.nfields, 100);
    gw_selector_clear(&s);
    snprintf(big + o, sizeof(big) - o, ",f100");
    bad(big, "fields: at most 100 names");
}

static void test_limit(void **state)
{
    (void)state;
    gw_selector s;
    ok("staticListId=1&limit=1", &s);
    assert_int_equal(s.limit, 1);
    gw_selector_clear(&s);
    ok("staticListId=1&limit=1000", &s);
    assert_int_equal(s.limit, 1000);
    gw_selector_clear(&s);
    bad("staticListId=1&limit=0", "limit: must be an integer from 1 to 1000");
    bad("staticListId=1&limit=1001", "limit: must be");
    bad("staticListId=1&limit=99999999999999999999", "limit: must be");
    bad("staticListId=1&limit=-1", "limit: must be");
    bad("staticListId=1&limit=+5", "limit: must be");
    bad("staticListId=1&limit=5x", "limit: must be");
    bad("staticListId=1&limit=", "limit: must be");
    bad("staticListId=1&limit=5&limit=5", "given more than once");

    /* Key lookups are answered whole: limit and cursor do not apply. */
    bad("email=a@x&limit=5", "limit applies to staticList, staticListId and updatedSince");
    bad("id=1&cursor=abc.def", "cursor applies to staticList");
}

static void test_cursor_param(void **state)
{
    (void)state;
    gw_selector s;
    ok("cursor=eyJ2IjoxfQ.abc-_", &s);
    assert_false(s.has_selector);
    assert_string_equal(s.cursor, "eyJ2IjoxfQ.abc-_");
    gw_selector_clear(&s);
    ok("staticListId=1&cursor=abc.def&limit=10", &s);
    assert_true(s.has_selector);
    assert_string_equal(s.cursor, "abc.def");
    gw_selector_clear(&s);
    bad("cursor=", "cursor: malformed");
    bad("cursor=a%2Bb", "cursor: malformed");
    bad("cursor=a=b", "cursor: malformed");
    bad("cursor=a&cursor=a", "given more than once");
    char *big = malloc(GW_CURSOR_MAX_LEN + 16);
    assert_non_null(big);
    memcpy(big, "cursor=", 7);
    memset(big + 7, 'A', GW_CURSOR_MAX_LEN + 1);
    big[7 + GW_CURSOR_MAX_LEN + 1] = '\0';
    bad(big, "cursor: malformed");
    big[7 + GW_CURSOR_MAX_LEN] = '\0';
    ok(big, &s);
    gw_selector_clear(&s);
    free(big);
}

static void test_selector_rules(void **state)
{
    (void)state;
    bad("email=a@x&staticList=L", "only one selector per request: got email and staticList");
    bad("staticList=L&email=a@x", "only one selector per request: got staticList and email");
    bad("email=a@x&id=1", "only one selector per request: got email and id");
    bad("staticList=L&staticListId=1", "got staticList and staticListId");
    bad("updatedSince=2024-01-01T00:00:00Z&staticListId=1", "got updatedSince and staticListId");
    bad("", "a selector is required");
    bad("fields=A&limit=5", "a selector is required");
    bad("foo=1", "unknown parameter 'foo'");
    bad("email=a@x&Email=b@x", "unknown parameter 'Email'");
    bad("a%40b.com=1", "unknown parameter");
    bad("%C3%A9=1", "unknown parameter");
    char longname[64];
    memset(longname, 'x', 40);
    snprintf(longname + 40, sizeof(longname) - 40, "=1");
    bad(longname, "unknown parameter");

    /* Empty pieces are skipped. */
    gw_selector s;
    ok("&&email=a@x&&", &s);
    assert_int_equal(s.nkeys, 1);
    gw_selector_clear(&s);
}

/* The direct entry point with NULL-safe name/value arrays. */
static void test_parse_arrays(void **state)
{
    (void)state;
    const char *names[] = {"email", "email", "fields"};
    const char *values[] = {"a@x.com,b@x.com", "A@x.com", "Company"};
    gw_selector s;
    memset(&s, 0, sizeof(s));
    gw_err err = {0};
    assert_int_equal(gw_query_parse(names, values, 3, &LIM, &s, &err), 0);
    assert_int_equal(s.nkeys, 2);
    assert_string_equal(s.fieldset, "Company");
    gw_selector_clear(&s);
    const char *vnull[] = {NULL};
    assert_int_equal(gw_query_parse(names, vnull, 1, &LIM, &s, &err), -1);
    assert_string_equal(err.msg, "email: empty value");
    assert_int_equal(err.status, 400);
    gw_selector_clear(&s);
}

/* binding -> parse -> binding gives the same string and the same selector. */
static void round_trip(const char *qs, const char *want_binding)
{
    gw_selector a, b;
    ok(qs, &a);
    char *ba = gw_selector_binding(&a);
    assert_non_null(ba);
    if (want_binding != NULL)
        assert_string_equal(ba, want_binding);
    ok(ba, &b);
    char *bb = gw_selector_binding(&b);
    assert_string_equal(ba, bb);
    assert_int_equal(a.kind, b.kind);
    if (a.list_name != NULL)
        assert_string_equal(a.list_name, b.list_name);
    else
        assert_null(b.list_name);
    assert_int_equal(a.list_id, b.list_id);
    assert_int_equal(a.updated_since, b.updated_since);
    assert_int_equal(a.updated_until, b.updated_until);
    assert_string_equal(a.fieldset, b.fieldset);
    assert_int_equal(a.limit, b.limit);
    assert_true(b.has_limit);
    assert_true(gw_selector_cursor_compatible(&a, &b));
    free(ba);
    free(bb);
    gw_selector_clear(&a);
    gw_selector_clear(&b);
}

static void test_binding(void **state)
{
    (void)state;
    round_trip("staticList=SMSProgram.listForTesting", "staticList=SMSProgram.listForTesting&limit=100");
    round_trip("staticList=My+List,%2FA%26B%3D%C3%A9&fields=b,a&limit=7",
               "staticList=My%20List%2C%2FA%26B%3D%C3%A9&fields=a,b&limit=7");
    round_trip("staticListId=6926&limit=25", "staticListId=6926&limit=25");
    round_trip("updatedSince=2024-01-01T01:00:00%2B01:00&fields=Company",
               "updatedSince=2024-01-01T00:00:00Z&fields=Company&limit=100");
    round_trip("updatedSince=2024-01-01T00:00:00Z&updatedUntil=2024-06-01T12:30:00Z&limit=1000",
               "updatedSince=2024-01-01T00:00:00Z&updatedUntil=2024-06-01T12:30:00Z&limit=1000");

    /* No binding for key lookups or a bare cursor. */
    gw_selector s;
    ok("email=a@x", &s);
    assert_null(gw_selector_binding(&s));
    gw_selector_clear(&s);
    ok("cursor=abc", &s);
    assert_null(gw_selector_binding(&s));
    gw_selector_clear(&s);
}

static void test_cursor_compatible(void **state)
{
    (void)state;
    gw_selector bound, req;
    ok("staticListId=6926&fields=A,B&limit=10", &bound);
    const char *good[] = {"cursor=x", "cursor=x&staticListId=6926", "cursor=x&limit=10",
                          "cursor=x&fields=B,A", "staticListId=6926&fields=A,B&limit=10&cursor=x"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ok(good[i], &req);
        assert_true(gw_selector_cursor_compatible(&req, &bound));
        gw_selector_clear(&req);
    }
    const char *mismatch[] = {"cursor=x&staticListId=6927", "cursor=x&limit=11",
                              "cursor=x&fields=A", "cursor=x&staticList=L",
                              "cursor=x&updatedSince=2024-01-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof(mismatch) / sizeof(mismatch[0]); i++) {
        ok(mismatch[i], &req);
        if (gw_selector_cursor_compatible(&req, &bound))
            fail_msg("'%s' accepted", mismatch[i]);
        gw_selector_clear(&req);
    }
    gw_selector_clear(&bound);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(gw_utf8_valid("", 0));
    assert_true(gw_utf8_valid("abc", 3));
    assert_true(gw_utf8_valid("\xC2\x80", 2));
    assert_true(gw_utf8_valid("\xE0\xA0\x80", 3));
    assert_true(gw_utf8_valid("\xEF\xBF\xBD", 3));
    assert_true(gw_utf8_valid("\xF0\x90\x80\x80", 4));
    assert_true(gw_utf8_valid("\xF4\x8F\xBF\xBF", 4));
    assert_false(gw_utf8_valid("\xC1\xBF", 2));       /* overlong */
    assert_false(gw_utf8_valid("\xE0\x9F\xBF", 3));   /* overlong */
    assert_false(gw_utf8_valid("\xF0\x8F\xBF\xBF", 4)); /* overlong */
    assert_false(gw_utf8_valid("\xED\xA0\x80", 3));   /* surrogate */
    assert_false(gw_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(gw_utf8_valid("\xF5\x80\x80\x80", 4));
    assert_false(gw_utf8_valid("\x80", 1));
    assert_false(gw_utf8_valid("\xE2\x82", 2));        /* truncated */
    assert_false(gw_utf8_valid("\xE2\x28\xA1", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_params),
        cmocka_unit_test(test_emails),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_value_rejections),
        cmocka_unit_test(test_messages_never_echo_values),
        cmocka_unit_test(test_dedup_and_max_keys),
        cmocka_unit_test(test_static_list),
        cmocka_unit_test(test_updated_at),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_cursor_param),
        cmocka_unit_test(test_selector_rules),
        cmocka_unit_test(test_parse_arrays),
        cmocka_unit_test(test_binding),
        cmocka_unit_test(test_cursor_compatible),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
