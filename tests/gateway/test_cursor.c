/* tests/gateway/test_cursor.c - paging tokens. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gateway/leads/cursor.h"

#define NOW 1750000000LL

static gw_cursor_key key_of(const char *secret)
{
    gw_cursor_key k;
    assert_int_equal(gw_cursor_key_init(&k, secret), 0);
    return k;
}

static char *make_token(const gw_cursor_key *k, const char *binding, const char *pos,
                        int64_t wo, int64_t exp)
{
    gw_cursor c = {(char *)binding, (char *)pos, wo, exp};
    char *t = gw_cursor_encode(k, &c);
    assert_non_null(t);
    return t;
}

static void test_round_trip(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s3cret");
    const char *binding = "updatedSince=2024-01-01T00:00:00Z&updatedUntil=2024-03-01T00:00:00Z"
                          "&fields=Company,FirstName&limit=100";
    char *t = make_token(&k, binding, "id:123\"quoted\\&x", 1704067200, NOW + 600);
    assert_true(strlen(t) <= GW_CURSOR_MAX_LEN);
    size_t dots = 0;
    for (const char *p = t; *p != '\0'; p++) {
        int ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                 (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.';
        assert_true(ok);
        dots += *p == '.';
    }
    assert_int_equal(dots, 1);

    gw_cursor c;
    assert_int_equal(gw_cursor_decode(&k, t, NOW, &c), GW_CURSOR_OK);
    assert_string_equal(c.binding, binding);
    assert_string_equal(c.stream_position, "id:123\"quoted\\&x");
    assert_int_equal(c.window_oldest, 1704067200);
    assert_int_equal(c.expires_at, NOW + 600);
    gw_cursor_clear(&c);
    assert_null(c.binding);

    /* NULL stream position travels as "". */
    gw_cursor in = {(char *)"staticListId=6926&limit=10", NULL, 0, NOW + 1};
    char *t2 = gw_cursor_encode(&k, &in);
    assert_non_null(t2);
    assert_int_equal(gw_cursor_decode(&k, t2, NOW, &c), GW_CURSOR_OK);
    assert_string_equal(c.stream_position, "");
    assert_int_equal(c.window_oldest, 0);
    gw_cursor_clear(&c);
    free(t2);
    free(t);
}

/* Changing any single character of the token makes it MALFORMED. */
static void test_tamper_every_byte(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s3cret");
    /* Payload lengths of each residue mod 3 exercise every padding case. */
    const char *bindings[] = {"staticList=a&limit=1", "staticList=ab&limit=1",
                              "staticList=abc&limit=1"};
    const char alphabet[] = "AZaz09-_.+/= ";
    for (size_t b = 0; b < 3; b++) {
        char *t = make_token(&k, bindings[b], "pos", 0, NOW + 60);
        size_t len = strlen(t);
        for (size_t i = 0; i < len; i++) {
            for (const char *a = alphabet; *a != '\0'; a++) {
                if (*a == t[i])
                    continue;
                char save = t[i];
                t[i] = *a;
                gw_cursor c;
                gw_cursor_status st = gw_cursor_decode(&k, t, NOW, &c);
                if (st != GW_CURSOR_MALFORMED)
                    fail_msg("binding %zu pos %zu char %c: status %d", b, i, *a, st);
                t[i] = save;
            }
        }
        /* Truncated and extended tokens too. */
        for (size_t cut = 0; cut < len; cut++) {
            char *p = strndup(t, cut);
            gw_cursor c;
            assert_int_equal(gw_cursor_decode(&k, p, NOW, &c), GW_CURSOR_MALFORMED);
            free(p);
        }
        char *longer = malloc(len + 2);
        assert_non_null(longer);
        memcpy(longer, t, len);
        longer[len] = 'A';
        longer[len + 1] = '\0';
        gw_cursor c;
        assert_int_equal(gw_cursor_decode(&k, longer, NOW, &c), GW_CURSOR_MALFORMED);
        free(longer);
        assert_int_equal(gw_cursor_decode(&k, t, NOW, &c), GW_CURSOR_OK);
        gw_cursor_clear(&c);
        free(t);
    }
}

static void test_wrong_key(void **state)
{
    (void)state;
    gw_cursor_key k1 = key_of("one"), k2 = key_of("two"), k1b = key_of("one");
    assert_memory_equal(k1.key, k1b.key, sizeof(k1.key));
    assert_memory_not_equal(k1.key, k2.key, sizeof(k1.key));
    char *t = make_token(&k1, "staticListId=1&limit=5", "", 0, NOW + 60);
    gw_cursor c;
    assert_int_equal(gw_cursor_decode(&k2, t, NOW, &c), GW_CURSOR_MALFORMED);
    assert_null(c.binding);
    assert_int_equal(gw_cursor_decode(&k1b, t, NOW, &c), GW_CURSOR_OK);
    gw_cursor_clear(&c);
    free(t);

    /* Random keys: two differ, and each verifies only its own tokens. */
    gw_cursor_key r1 = key_of(NULL), r2 = key_of("");
    assert_memory_not_equal(r1.key, r2.key, sizeof(r1.key));
    t = make_token(&r1, "staticListId=1&limit=5", "", 0, NOW + 60);
    assert_int_equal(gw_cursor_decode(&r2, t, NOW, &c), GW_CURSOR_MALFORMED);
    assert_int_equal(gw_cursor_decode(&r1, t, NOW, &c), GW_CURSOR_OK);
    gw_cursor_clear(&c);
    free(t);
}

static void test_expired(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s");
    char *t = make_token(&k, "staticListId=1&limit=5", "p", 0, NOW);
    gw_cursor c;
    assert_int_equal(gw_cursor_decode(&k, t, NOW - 1, &c), GW_CURSOR_OK);
    gw_cursor_clear(&c);
    assert_int_equal(gw_cursor_decode(&k, t, NOW, &c), GW_CURSOR_EXPIRED);
    assert_null(c.binding);
    assert_int_equal(gw_cursor_decode(&k, t, NOW + 86400, &c), GW_CURSOR_EXPIRED);
    free(t);
}

static void test_garbage(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s");
    const char *bad[] = {
        "", ".", "abc", "abc.", ".abc", "abc.def", "a.b.c", "e30.AAAA",
        "eyJ2IjoxfQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "eyJ2IjoxfQ==.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "ey J2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "ey\nJ2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "\xC3\xA9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_cursor c;
        if (gw_cursor_decode(&k, bad[i], NOW, &c) != GW_CURSOR_MALFORMED)
            fail_msg("case %zu accepted", i);
    }
    gw_cursor c;
    assert_int_equal(gw_cursor_decode(&k, NULL, NOW, &c), GW_CURSOR_MALFORMED);

    /* Overlong: GW_CURSOR_MAX_LEN + 1 characters. */
    char *big = malloc(GW_CURSOR_MAX_LEN + 2);
    assert_non_null(big);
    memset(big, 'A', GW_CURSOR_MAX_LEN + 1);
    big[10] = '.';
    big[GW_CURSOR_MAX_LEN + 1] = '\0';
    assert_int_equal(gw_cursor_decode(&k, big, NOW, &c), GW_CURSOR_MALFORMED);
    free(big);
}

/* Base64url without padding, for forging payloads with a valid MAC. */
static char *b64url(const unsigned char *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

/* A correctly MAC'd token around any payload text. */
static char *forge(const gw_cursor_key *k, const char *payload)
{
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), k->key, sizeof(k->key), (const unsigned char *)payload,
         strlen(payload), mac, &maclen);
    char *p = b64url((const unsigned char *)payload, strlen(payload));
    char *m = b64url(mac, maclen);
    size_t len = strlen(p) + 1 + strlen(m) + 1;
    char *t = malloc(len);
    assert_non_null(t);
    snprintf(t, len, "%s.%s", p, m);
    free(p);
    free(m);
    return t;
}

/* Authentic tokens whose JSON is not ours are still MALFORMED. */
static void test_shape_checks(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s");
    char ok_payload[128];
    snprintf(ok_payload, sizeof(ok_payload), "{\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":%lld}",
             (long long)NOW + 10);
    char *t = forge(&k, ok_payload);
    gw_cursor c;
    assert_int_equal(gw_cursor_decode(&k, t, NOW, &c), GW_CURSOR_OK);
    gw_cursor_clear(&c);
    free(t);

    const char *bad[] = {
        "[]", "null", "{}", "not json",
        "{\"v\":2,\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":99999999999}",
        "{\"v\":\"1\",\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":99999999999}",
        "{\"v\":1,\"b\":1,\"p\":\"\",\"w\":0,\"e\":99999999999}",
        "{\"v\":1,\"b\":\"x\",\"p\":null,\"w\":0,\"e\":99999999999}",
        "{\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":-1,\"e\":99999999999}",
        "{\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":\"soon\"}",
        "{\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":0}",
        "{\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":99999999999,\"z\":1}",
        "{\"v\":1,\"v\":1,\"b\":\"x\",\"p\":\"\",\"w\":0,\"e\":99999999999}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = forge(&k, bad[i]);
        if (gw_cursor_decode(&k, t, NOW, &c) != GW_CURSOR_MALFORMED)
            fail_msg("payload %zu accepted", i);
        free(t);
    }
}

static void test_encode_limits(void **state)
{
    (void)state;
    gw_cursor_key k = key_of("s");
    char *big = malloc(4000);
    assert_non_null(big);
    memset(big, 'x', 3999);
    big[3999] = '\0';
    gw_cursor c = {big, (char *)"", 0, NOW + 10};
    assert_null(gw_cursor_encode(&k, &c));
    /* The largest binding that still fits decodes back. */
    size_t lo = 1, hi = 3999;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        big[mid] = '\0';
        char *t = gw_cursor_encode(&k, &c);
        if (t != NULL) {
            assert_true(strlen(t) <= GW_CURSOR_MAX_LEN);
            lo = mid;
        } else {
            hi = mid - 1;
        }
        free(t);
        memset(big, 'x', 3999);
        big[3999] = '\0';
    }
    big[lo] = '\0';
    char *t = gw_cursor_encode(&k, &c);
    assert_non_null(t);
    gw_cursor out;
    assert_int_equal(gw_cursor_decode(&k, t, NOW, &out), GW_CURSOR_OK);
    assert_int_equal(strlen(out.binding), lo);
    gw_cursor_clear(&out);
    free(t);
    free(big);
    gw_cursor nob = {NULL, NULL, 0, 0};
    assert_null(gw_cursor_encode(&k, &nob));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_shape_checks),
        cmocka_unit_test(test_encode_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
