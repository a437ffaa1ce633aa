/* tests/gateway/test_leadjson.c - lead JSON out, sync bodies in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/leads/leadjson.h"

/* Compact dump with the members in insertion order, reals at 15 significant
 * digits (what the gateway's replies should use: jansson's default of 17
 * prints 19.99 as 19.989999999999998); caller frees. */
static char *dump(json_t *j)
{
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                JSON_REAL_PRECISION(15));
    assert_non_null(s);
    return s;
}

static void expect_attr(const char *type, const char *value, const char *want)
{
    mkto_attr a = {(char *)"X", (char *)type, (char *)value};
    json_t *j = gw_attr_to_json(&a);
    char *s = dump(j);
    if (strcmp(s, want) != 0)
        fail_msg("type %s value %s: got %s want %s", type ? type : "(null)",
                 value ? value : "(nil)", s, want);
    free(s);
    json_decref(j);
}

/* Lead 67508 of the getMultipleLeads page, as the gateway shows it. */
static void test_docs_lead(void **state)
{
    (void)state;
    mkto_attr attrs[] = {
        {(char *)"Company", (char *)"string", (char *)"Marketo"},
        {(char *)"Date_of_purchase", (char *)"date", (char *)"2012-04-04"},
        {(char *)"FirstName", (char *)"string", (char *)"Joe"},
        {(char *)"LastName", (char *)"string", (char *)"Orante"},
        {(char *)"LeadScore", (char *)"integer", (char *)"11"},
    };
    mkto_lead l = {.has_id = true, .id = 67508, .email = (char *)"joe@marketo.com",
                   .attrs = attrs, .nattrs = 5};
    json_t *j = gw_lead_to_json(&l);
    char *s = dump(j);
    assert_string_equal(s, "{\"id\":67508,\"email\":\"joe@marketo.com\","
                           "\"foreignSysPersonId\":null,\"foreignSysType\":null,"
                           "\"attributes\":{\"Company\":\"Marketo\","
                           "\"Date_of_purchase\":\"2012-04-04\",\"FirstName\":\"Joe\","
                           "\"LastName\":\"Orante\",\"LeadScore\":11}}");
    free(s);
    json_decref(j);

    /* No id, foreign system set, no attributes. */
    mkto_lead m = {.has_id = false, .foreign_sys_person_id = (char *)"F-1",
                   .foreign_sys_type = (char *)"SFDC"};
    j = gw_lead_to_json(&m);
    s = dump(j);
    assert_string_equal(s, "{\"id\":null,\"email\":null,\"foreignSysPersonId\":\"F-1\","
                           "\"foreignSysType\":\"SFDC\",\"attributes\":{}}");
    free(s);
    json_decref(j);
}

static void test_typed_values(void **state)
{
    (void)state;
    expect_attr("integer", "11", "11");
    expect_attr("integer", "-42", "-42");
    expect_attr("integer", "9223372036854775807", "9223372036854775807");
    expect_attr("integer", "9223372036854775808", "\"9223372036854775808\"");
    expect_attr("integer", "12abc", "\"12abc\"");
    expect_attr("integer", " 12", "\" 12\"");
    expect_attr("integer", "+12", "\"+12\"");
    expect_attr("integer", "1.5", "\"1.5\"");
    expect_attr("integer", "", "\"\"");
    expect_attr("float", "1.5", "1.5");
    expect_attr("float", "-0.25", "-0.25");
    expect_attr("float", "1e3", "1000.0");
    expect_attr("float", "12", "12.0");
    expect_attr("currency", "19.99", "19.99");
    mkto_attr cur = {(char *)"Price", (char *)"currency", (char *)"19.99"};
    json_t *jc = gw_attr_to_json(&cur);
    assert_true(json_is_real(jc));
    assert_true(json_real_value(jc) == 19.99);
    json_decref(jc);
    expect_attr("currency", "$19.99", "\"$19.99\"");
    expect_attr("float", "nan", "\"nan\"");
    expect_attr("float", "inf", "\"inf\"");
    expect_attr("float", "1e999", "\"1e999\"");
    expect_attr("float", "0x10", "\"0x10\"");
    expect_attr("float", "1.5 ", "\"1.5 \"");
    expect_attr("boolean", "true", "true");
    expect_attr("boolean", "TRUE", "true");
    expect_attr("boolean", "1", "true");
    expect_attr("boolean", "False", "false");
    expect_attr("boolean", "0", "false");
    expect_attr("boolean", "yes", "\"yes\"");
    expect_attr("string", "11", "\"11\"");
    expect_attr("date", "2012-04-04", "\"2012-04-04\"");
    expect_attr(NULL, "11", "\"11\"");
    expect_attr("integer", NULL, "null");
    expect_attr("string", NULL, "null");
    expect_attr("Integer", "5", "5");
    /* Invalid UTF-8 never reaches jansson: each bad byte becomes U+FFFD. */
    expect_attr("string", "a\xFF" "b\xC3\xA9", "\"a\xEF\xBF\xBD" "b\xC3\xA9\"");
    expect_attr("string", "\xED\xA0\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
    expect_attr("string", "line\nbreak\"q\"", "\"line\\nbreak\\\"q\\\"\"");
}

/* ---- sync bodies ---------------------------------------------------------------- */

/* Parses body; asserts success; the caller clears r. */
static void sync_ok(const char *body, size_t max, gw_sync_request *r)
{
    gw_err err = {0};
    memset(r, 0, sizeof(*r));
    if (gw_sync_request_parse(body, strlen(body), max, r, &err) != 0)
        fail_msg("rejected: %s (%.100s)", err.msg, body);
}

static void sync_bad_len(const char *body, size_t len, const char *want)
{
    gw_err err = {0};
    gw_sync_request r;
    memset(&r, 0, sizeof(r));
    int rc = gw_sync_request_parse(body, len, 300, &r, &err);
    if (rc == 0) {
        gw_sync_request_clear(&r);
        fail_msg("accepted: %.100s", body);
    }
    assert_null(r.leads);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message '%s' lacks '%s' (%.100s)", err.msg, want, body);
    if (strstr(err.msg, "secret") != NULL)
        fail_msg("message echoes a value: %s", err.msg);
    if (err.status != 400)
        fail_msg("status %d, not 400 (%.100s)", err.status, body);
}

static void sync_bad(const char *body, const char *want)
{
    sync_bad_len(body, strlen(body), want);
}

static const char *attr_value(const mkto_lead *l, const char *name)
{
    for (size_t i = 0; i < l->nattrs; i++) {
        if (strcmp(l->attrs[i].name, name) == 0)
            return l->attrs[i].value;
    }
    return NULL;
}

static void test_sync_accept(void **state)
{
    (void)state;
    gw_sync_request r;
    sync_ok("{\"leads\":[{\"email\":\"a@x.com\",\"attributes\":{\"FirstName\":\"Ann\","
            "\"LeadScore\":11,\"Rate\":0.1,\"Big\":1e300,\"Opt\":true,\"Out\":false,"
            "\"Gone\":null,\"Note\":\"tab\\tnl\\ncr\\r \\u00e9\"}},"
            "{\"id\":1090240},"
            "{\"foreignSysPersonId\":\"F1\",\"foreignSysType\":\"SFDC\",\"id\":null,"
            "\"email\":null,\"attributes\":null}],"
            "\"dedup\":false}",
            300, &r);
    assert_int_equal(r.nleads, 3);
    assert_false(r.dedup);
    mkto_lead *a = &r.leads[0];
    assert_false(a->has_id);
    assert_string_equal(a->email, "a@x.com");
    assert_int_equal(a->nattrs, 8);
    assert_string_equal(a->attrs[0].name, "FirstName");
    assert_null(a->attrs[0].type);
    assert_string_equal(attr_value(a, "FirstName"), "Ann");
    assert_string_equal(attr_value(a, "LeadScore"), "11");
    assert_string_equal(attr_value(a, "Rate"), "0.1");
    assert_string_equal(attr_value(a, "Big"), "1e+300");
    assert_string_equal(attr_value(a, "Opt"), "true");
    assert_string_equal(attr_value(a, "Out"), "false");
    assert_string_equal(attr_value(a, "Gone"), "");
    assert_string_equal(attr_value(a, "Note"), "tab\tnl\ncr\r \xC3\xA9");
    assert_true(r.leads[1].has_id);
    assert_int_equal(r.leads[1].id, 1090240);
    assert_null(r.leads[1].email);
    assert_int_equal(r.leads[1].nattrs, 0);
    assert_string_equal(r.leads[2].foreign_sys_person_id, "F1");
    assert_string_equal(r.leads[2].foreign_sys_type, "SFDC");
    assert_false(r.leads[2].has_id);
    gw_sync_request_clear(&r);
    assert_null(r.leads);

    /* dedup defaults to true; exactly max_leads is fine. */
    sync_ok("{\"leads\":[{\"id\":1},{\"id\":2}]}", 2, &r);
    assert_true(r.dedup);
    gw_sync_request_clear(&r);

    /* A 64 KiB value is the largest accepted. */
    size_t n = 64 * 1024;
    static char body[100 * 1024 + 128];
    int o = snprintf(body, 128, "{\"leads\":[{\"id\":1,\"attributes\":{\"Notes\":\"");
    memset(body + o, 'v', n);
    snprintf(body + o + n, 64, "\"}}]}");
    sync_ok(body, 300, &r);
    assert_int_equal(strlen(r.leads[0].attrs[0].value), n);
    gw_sync_request_clear(&r);
}

static void test_sync_reject(void **state)
{
    (void)state;
    sync_bad_len(NULL, 0, "empty");
    sync_bad("", "empty");
    sync_bad("not json", "not valid JSON");
    sync_bad("{\"leads\":[{\"email\":\"secret\"}", "not valid JSON");
    sync_bad("[]", "must be a JSON object");
    sync_bad("{}", "leads: required");
    sync_bad("{\"leads\":{}}", "leads: must be an array");
    sync_bad("{\"leads\":[]}", "leads: must not be empty");
    sync_bad("{\"leads\":[{\"id\":1},{\"id\":2},{\"id\":3}],\"x\":1}", "unknown member 'x'");
    sync_bad("{\"leads\":[{\"id\":1}],\"dedup\":\"yes\"}", "dedup: must be true or false");
    sync_bad("{\"leads\":[{\"id\":1}],\"leads\":[{\"id\":2}]}", "duplicate member");
    sync_bad("{\"leads\":[{\"id\":1,\"id\":2}]}", "duplicate member");
    sync_bad("{\"leads\":[1]}", "leads[0]: must be an object");
    sync_bad("{\"leads\":[{\"id\":1},{},{\"id\":3}]}",
             "leads[1]: needs id, email or foreignSysPersonId");
    sync_bad("{\"leads\":[{\"id\":1},{\"id\":1},{\"id\":1},{\"foreignSysType\":\"SFDC\"}]}",
             "leads[3]: needs id, email or foreignSysPersonId");
    sync_bad("{\"leads\":[{\"attributes\":{\"A\":\"secret\"}}]}", "leads[0]: needs id");
    sync_bad("{\"leads\":[{\"id\":0}]}", "leads[0].id: must be an integer from 1 to 2147483647");
    sync_bad("{\"leads\":[{\"id\":2147483648}]}", "leads[0].id: must be an integer");
    sync_bad("{\"leads\":[{\"id\":1.0}]}", "leads[0].id: must be an integer");
    sync_bad("{\"leads\":[{\"id\":\"5\"}]}", "leads[0].id: must be an integer");
    sync_bad("{\"leads\":[{\"email\":5}]}", "leads[0].email: must be a string");
    sync_bad("{\"leads\":[{\"email\":\"\"}]}", "leads[0].email: must not be empty");
    sync_bad("{\"leads\":[{\"email\":\"secret\\u0001\"}]}", "leads[0].email: contains a control");
    sync_bad("{\"leads\":[{\"foreignSysPersonId\":[]}]}", "leads[0].foreignSysPersonId: must be");
    sync_bad("{\"leads\":[{\"id\":1,\"foreignSysType\":\"secret\"}]}",
             "leads[0].foreignSysType: must be CUSTOM, SFDC or NETSUITE");
    sync_bad("{\"leads\":[{\"id\":1,\"Company\":\"secret\"}]}", "leads[0]: unknown member 'Company'");
    sync_bad("{\"leads\":[{\"id\":1,\"secret@x\":1}]}", "leads[0]: unknown member");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":[]}]}", "leads[0].attributes: must be an object");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"Company\":{\"a\":\"secret\"}}}]}",
             "leads[0].attributes.Company: must be a string, number, boolean or null");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"Company\":[\"secret\"]}}]}",
             "leads[0].attributes.Company: must be a string");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"Bad-Name\":\"secret\"}}]}",
             "leads[0].attributes: invalid attribute name");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"\":\"secret\"}}]}",
             "leads[0].attributes: invalid attribute name");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"secret\\u0000x\"}}]}",
             "not valid JSON");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"secret\\u001b\"}}]}",
             "leads[0].attributes.A: contains a control character");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"secret\\u007f\"}}]}",
             "control character");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"secret\\uffff\"}}]}",
             "leads[0].attributes.A: contains a character XML cannot carry");
    sync_bad("{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"secret\\ud800\"}}]}",
             "not valid JSON");

    /* Invalid UTF-8 bytes anywhere. */
    const char raw[] = "{\"leads\":[{\"email\":\"secret\xC0\xAF\"}]}";
    sync_bad_len(raw, sizeof(raw) - 1, "not valid UTF-8");
    const char raw2[] = "{\"leads\":[{\"id\":1,\"attributes\":{\"A\":\"\xED\xA0\x80\"}}]}";
    sync_bad_len(raw2, sizeof(raw2) - 1, "not valid UTF-8");
    const char raw3[] = "{\"leads\":[{\"id\":1}]}\xFF";
    sync_bad_len(raw3, sizeof(raw3) - 1, "not valid");
    /* A raw NUL inside the body. */
    const char nul[] = "{\"leads\":[{\"id\":1}]}\0";
    sync_bad_len(nul, sizeof(nul), "not valid JSON");

    /* More than max_leads. */
    gw_err err = {0};
    gw_sync_request r;
    memset(&r, 0, sizeof(r));
    const char *three = "{\"leads\":[{\"id\":1},{\"id\":2},{\"id\":3}]}";
    assert_int_equal(gw_sync_request_parse(three, strlen(three), 2, &r, &err), -1);
    assert_string_equal(err.msg, "leads: at most 2 leads per request");
    assert_int_equal(err.status, 400);

    /* A 100 KB value. */
    size_t n = 100 * 1024;
    static char body[100 * 1024 + 128];
    int o = snprintf(body, 128, "{\"leads\":[{\"id\":1,\"attributes\":{\"Notes\":\"");
    memset(body + o, 's', n);
    snprintf(body + o + n, 64, "\"}}]}");
    sync_bad(body, "leads[0].attributes.Notes: longer than 65536 bytes");
    /* And as an e-mail. */
    o = snprintf(body, 128, "{\"leads\":[{\"email\":\"");
    memset(body + o, 's', n);
    snprintf(body + o + n, 64, "\"}]}");
    sync_bad(body, "leads[0].email: longer than 65536 bytes");

    /* Bodies over the cap are refused before parsing. */
    sync_bad_len("{}", (size_t)GW_SYNC_MAX_BODY + 1, "larger than");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_lead),
        cmocka_unit_test(test_typed_values),
        cmocka_unit_test(test_sync_accept),
        cmocka_unit_test(test_sync_reject),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
