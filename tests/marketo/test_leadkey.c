/* tests/marketo/test_leadkey.c - lead-key identity (marketo/leadkey.c): key
 * type names and attributes, normalisation, equality, matching a returned
 * lead to a key, keys per call. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "marketo/leadkey.h"
#include "marketo/model.h"

/* The two key types Marketo matches case-insensitively. */
static bool is_email(mkto_key_type t)
{
    return t == MKTO_KEY_EMAIL || t == MKTO_KEY_LEADOWNEREMAIL;
}

/* Normalises value as type t into a buffer of outlen bytes; asserts
 * success and that the result is want. */
static void norm_is(mkto_key_type t, const char *value, size_t outlen, const char *want)
{
    char out[MKTO_KEY_MAX_LEN + 2];
    assert_true(outlen <= sizeof(out));
    assert_int_equal(mkto_key_normalize(t, value, out, outlen), 0);
    assert_string_equal(out, want);
}

/* ---- key type names and attributes ---------------------------------------------- */

static void test_key_types(void **state)
{
    (void)state;
    static const char *const names[] = {
        "IDNUM",      "COOKIE",          "EMAIL",      "LEADOWNEREMAIL", "SFDCACCOUNTID",
        "SFDCCONTACTID", "SFDCLEADID", "SFDCLEADOWNERID", "SFDCOPPTYID",
    };
    static const char *const attrs[] = {
        NULL,          "Cookies",    "",           "LeadOwnerEmail", "SFDCAccountId",
        "SFDCContactId", "SFDCLeadId", "SFDCLeadOwnerId", "SFDCOpptyId",
    };
    for (int i = 0; i < MKTO_KEY__COUNT; i++) {
        mkto_key_type t;
        assert_string_equal(mkto_key_type_name((mkto_key_type)i), names[i]);
        assert_int_equal(mkto_key_type_parse(names[i], &t), 0);
        assert_int_equal(t, i);
        const char *a = mkto_key_type_attr((mkto_key_type)i);
        if (attrs[i] == NULL || attrs[i][0] == '\0')
            assert_null(a);
        else
            assert_string_equal(a, attrs[i]);
    }
    mkto_key_type t;
    assert_null(mkto_key_type_name(MKTO_KEY__COUNT));
    assert_null(mkto_key_type_name((mkto_key_type)-1));
    assert_null(mkto_key_type_attr(MKTO_KEY__COUNT));
    assert_int_equal(mkto_key_type_parse("email", &t), -1);
    assert_int_equal(mkto_key_type_parse("", &t), -1);
    assert_int_equal(mkto_key_type_parse(NULL, &t), -1);
}

/* ---- normalisation ---------------------------------------------------------------- */

/* E-mail key types: ASCII letters lower-cased, nothing else touched. */
static void test_normalize_email_types(void **state)
{
    (void)state;
    norm_is(MKTO_KEY_EMAIL, "Joe@Marketo.COM", 32, "joe@marketo.com");
    norm_is(MKTO_KEY_LEADOWNEREMAIL, "Boss@X.Com", 32, "boss@x.com");
    /* Non-ASCII bytes are left alone. */
    norm_is(MKTO_KEY_EMAIL, "\xC3\x89T\xC3\xA9@X", 32, "\xC3\x89t\xC3\xA9@x");
    /* Digits and punctuation, and the letters' neighbours '@' '[' '`' '{'. */
    norm_is(MKTO_KEY_EMAIL, "A+1_Z@[`{]-~.Org", 32, "a+1_z@[`{]-~.org");
}

/* Every other key type keeps its value byte for byte, case included. */
static void test_normalize_other_types(void **state)
{
    (void)state;
    norm_is(MKTO_KEY_COOKIE, "id:ABC-Tok", 32, "id:ABC-Tok");
    norm_is(MKTO_KEY_SFDCLEADID, "00Qx", 32, "00Qx");
    for (int i = 0; i < MKTO_KEY__COUNT; i++) {
        if (!is_email((mkto_key_type)i))
            norm_is((mkto_key_type)i, "AbC@X.COM\xC3\x89", 32, "AbC@X.COM\xC3\x89");
    }
    /* an id is whatever text it was given: canonical ids are query.c's */
    norm_is(MKTO_KEY_IDNUM, "007", 32, "007");
}

/* Whitespace is not normalisation's business (query.c trims items before):
 * kept as is, for every type, so the length never changes. */
static void test_normalize_whitespace(void **state)
{
    (void)state;
    for (int i = 0; i < MKTO_KEY__COUNT; i++) {
        const char *want = is_email((mkto_key_type)i) ? " a b\tc@x.com " : " A B\tC@x.com ";
        norm_is((mkto_key_type)i, " A B\tC@x.com ", 32, want);
    }
}

/* A value fits when strlen(value) < outlen; MKTO_KEY_MAX_LEN bytes fit its
 * buffer; normalising twice changes nothing. */
static void test_normalize_length(void **state)
{
    (void)state;
    char out[MKTO_KEY_MAX_LEN + 2];
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "abcd", out, 4), -1);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "abc", out, 4), 0);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_COOKIE, "abcd", out, 4), -1);
    norm_is(MKTO_KEY_EMAIL, "", 1, "");

    char big[MKTO_KEY_MAX_LEN + 2];
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* MKTO_KEY_MAX_LEN + 1 bytes: too long for its buffer */
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, big, out, MKTO_KEY_MAX_LEN + 1), -1);
    big[MKTO_KEY_MAX_LEN] = '\0';
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, big, out, MKTO_KEY_MAX_LEN + 1), 0);
    assert_int_equal(strlen(out), MKTO_KEY_MAX_LEN);
    assert_int_equal(out[0], 'a');
    assert_int_equal(out[MKTO_KEY_MAX_LEN - 1], 'a');

    char again[MKTO_KEY_MAX_LEN + 1];
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, out, again, sizeof(again)), 0);
    assert_string_equal(again, out);
}

/* What cannot be normalised: no value, nowhere to write, no room at all. */
static void test_normalize_invalid(void **state)
{
    (void)state;
    char out[8] = "keep";
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, NULL, out, sizeof(out)), -1);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "a@x", NULL, sizeof(out)), -1);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "a@x", out, 0), -1);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "", out, 0), -1);
    assert_string_equal(out, "keep");
    /* an unknown type is no e-mail: copied as is */
    norm_is(MKTO_KEY__COUNT, "AbC", sizeof(out), "AbC");
}

/* ---- equality ---------------------------------------------------------------------- */

static void test_key_eq(void **state)
{
    (void)state;
    for (int i = 0; i < MKTO_KEY__COUNT; i++) {
        mkto_key_type t = (mkto_key_type)i;
        assert_true(mkto_key_eq(t, "a@x.com", "a@x.com"));
        assert_true(mkto_key_eq(t, "", ""));
        assert_false(mkto_key_eq(t, "a@x.com", "b@x.com"));
        assert_false(mkto_key_eq(t, "a@x.com", "a@x.com "));
        assert_false(mkto_key_eq(t, "a@x.com", ""));
        /* case: the same e-mail, but a different cookie or SFDC id */
        assert_int_equal(mkto_key_eq(t, "A@X.com", "a@x.COM"), is_email(t));
        /* only ASCII letters fold */
        assert_false(mkto_key_eq(t, "\xC3\x89@x", "\xC3\xA9@x"));
    }
    /* normalised values are equal exactly when their bytes are */
    char a[32], b[32];
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "Joe@X.com", a, sizeof(a)), 0);
    assert_int_equal(mkto_key_normalize(MKTO_KEY_EMAIL, "jOE@x.COM", b, sizeof(b)), 0);
    assert_true(mkto_key_eq(MKTO_KEY_EMAIL, a, b));
    assert_string_equal(a, b);
    assert_false(mkto_key_eq(MKTO_KEY_IDNUM, "7", "07"));
}

/* ---- matching a returned lead to a key ---------------------------------------------- */

static void test_match_by_id(void **state)
{
    (void)state;
    mkto_lead l = {.has_id = true, .id = 2147483647};
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "2147483647"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "2147483646"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, ""));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "2147483647x"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "abc"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "99999999999999999999"));
    l.id = 7;
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "7"));
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "007")); /* parsed, not compared */
    /* a lead without an Id matches no id */
    l.has_id = false;
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, "7"));
    /* no lead, no key */
    assert_false(mkto_lead_matches_key(NULL, MKTO_KEY_IDNUM, "7"));
    l.has_id = true;
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_IDNUM, NULL));
}

static void test_match_by_email(void **state)
{
    (void)state;
    mkto_attr a[] = {{.name = "Email", .value = "joe@x.com"}};
    mkto_lead l = {.has_id = true, .id = 7, .email = "Joe@X.Com"};
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, "joe@x.com"));
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, "JOE@x.com"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, "joe@x.co"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, "7"));
    /* the record's Email element decides, not an attribute named Email */
    l.email = NULL;
    l.attrs = a;
    l.nattrs = 1;
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, "joe@x.com"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_EMAIL, ""));
}

static void test_match_by_attribute(void **state)
{
    (void)state;
    mkto_attr a[] = {
        {.name = "Cookies", .value = "id:ABC&token:x"},
        {.name = "LeadOwnerEmail", .value = "Boss@X.com"},
        {.name = "SFDCAccountId", .value = "001A"},
        {.name = "SFDCContactId", .value = "003B"},
        {.name = "SFDCLeadId", .value = "00QC"},
        {.name = "SFDCLeadOwnerId", .value = "005D"},
        {.name = "SFDCOpptyId", .value = "006E"},
    };
    mkto_lead l = {.has_id = true, .id = 7, .email = "a@x.com", .attrs = a, .nattrs = 7};
    for (size_t i = 0; i < l.nattrs; i++) {
        mkto_key_type t;
        for (t = 0; t < MKTO_KEY__COUNT; t++) {
            const char *an = mkto_key_type_attr(t);
            if (an && strcmp(an, a[i].name) == 0)
                break;
        }
        assert_true(t < MKTO_KEY__COUNT);
        assert_true(mkto_lead_matches_key(&l, t, a[i].value));
        assert_false(mkto_lead_matches_key(&l, t, "other"));
        /* the mapping attribute, not the record's Id or Email */
        assert_false(mkto_lead_matches_key(&l, t, "7"));
        assert_false(mkto_lead_matches_key(&l, t, "a@x.com"));
    }
    /* LeadOwnerEmail is case-insensitive, the others are not */
    assert_true(mkto_lead_matches_key(&l, MKTO_KEY_LEADOWNEREMAIL, "boss@x.com"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_COOKIE, "ID:ABC&TOKEN:X"));
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY_SFDCLEADID, "00qc"));

    /* a lead lacking the attribute (or with it nil) matches nothing */
    mkto_attr nil[] = {{.name = "Cookies", .value = NULL}, {.name = "FirstName", .value = "x"}};
    mkto_lead bare = {.has_id = true, .id = 7, .attrs = nil, .nattrs = 2};
    assert_false(mkto_lead_matches_key(&bare, MKTO_KEY_COOKIE, "x"));
    assert_false(mkto_lead_matches_key(&bare, MKTO_KEY_SFDCLEADID, "x"));
    bare.attrs = NULL;
    bare.nattrs = 0;
    assert_false(mkto_lead_matches_key(&bare, MKTO_KEY_LEADOWNEREMAIL, "x"));

    /* the first occurrence with a value decides */
    mkto_attr twice[] = {{.name = "Cookies", .value = NULL},
                         {.name = "Cookies", .value = "first"},
                         {.name = "Cookies", .value = "second"}};
    mkto_lead dup = {.attrs = twice, .nattrs = 3};
    assert_true(mkto_lead_matches_key(&dup, MKTO_KEY_COOKIE, "first"));
    assert_false(mkto_lead_matches_key(&dup, MKTO_KEY_COOKIE, "second"));

    /* a type out of range has no attribute to match */
    assert_false(mkto_lead_matches_key(&l, MKTO_KEY__COUNT, "001A"));
}

/* ---- keys per call ----------------------------------------------------------------- */

static void test_keys_per_call(void **state)
{
    (void)state;
    assert_int_equal(mkto_keys_per_call(MKTO_API_SOAP), 100);
    assert_int_equal(mkto_keys_per_call(MKTO_API_REST), 300);
    assert_int_equal(MKTO_SOAP_KEYS_PER_CALL, 100);
    assert_int_equal(MKTO_REST_KEYS_PER_CALL, 300);
    /* one API at a time */
    assert_int_equal(mkto_keys_per_call((mkto_api)0), 0);
    assert_int_equal(mkto_keys_per_call((mkto_api)(MKTO_API_SOAP | MKTO_API_REST)), 0);
    assert_int_equal(mkto_keys_per_call((mkto_api)(MKTO_API_REST << 1)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_types),
        cmocka_unit_test(test_normalize_email_types),
        cmocka_unit_test(test_normalize_other_types),
        cmocka_unit_test(test_normalize_whitespace),
        cmocka_unit_test(test_normalize_length),
        cmocka_unit_test(test_normalize_invalid),
        cmocka_unit_test(test_key_eq),
        cmocka_unit_test(test_match_by_id),
        cmocka_unit_test(test_match_by_email),
        cmocka_unit_test(test_match_by_attribute),
        cmocka_unit_test(test_keys_per_call),
    };
    return cmocka_run_group_tests_name("marketo_leadkey", tests, NULL, NULL);
}
