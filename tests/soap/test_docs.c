/* tests/soap/test_docs.c - the official examples: the parsers read every
 * documented response and fault, and the builders reproduce the element
 * structure of every documented request. The XML is extracted at run time
 * from $MKTO_SHARED_DIR/docs/ pages (```xml blocks); without it the whole
 * program reports itself skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "soap/soap.h"
#include "support.h"

static void assert_str(const char *got, const char *want)
{
    if (want == NULL)
        assert_null(got);
    else {
        assert_non_null(got);
        assert_string_equal(got, want);
    }
}

/* One expected attribute. */
typedef struct want_attr {
    const char *name;  /* attrName */
    const char *type;  /* attrType */
    const char *value; /* attrValue */
} want_attr;

/* Asserts a parsed lead against the documented values. */
static void check_lead(const mkto_lead *l, int64_t id, const char *email, const want_attr *attrs,
                       size_t nattrs)
{
    assert_true(l->has_id);
    assert_int_equal(l->id, id);
    assert_str(l->email, email);
    assert_null(l->foreign_sys_person_id); /* xsi:nil in every example */
    assert_null(l->foreign_sys_type);
    assert_int_equal(l->nattrs, nattrs);
    for (size_t i = 0; i < nattrs; i++) {
        assert_str(l->attrs[i].name, attrs[i].name);
        assert_str(l->attrs[i].type, attrs[i].type);
        assert_str(l->attrs[i].value, attrs[i].value);
    }
}

static void test_doc_get_multiple_leads_response(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_doc_xml("getmultipleleads.md", 1, &len);
    mkto_leads r;
    mkto_fault f;
    soap_err err;
    assert_int_equal(soap_parse_get_multiple_leads(body, len, 0, &r, &f, &err), SOAP_OK);
    assert_int_equal(r.return_count, 2);
    assert_int_equal(r.remaining_count, 0);
    assert_str(r.new_stream_position, "");
    assert_int_equal(r.nleads, 2);
    static const want_attr a0[] = {
        {"Company", "string", "Marketo Test"}, {"FirstName", "string", "FnameForm1"},
        {"LastName", "string", "LnameForm1"},  {"LeadScore", "integer", "16"},
        {"Website", "url", "marketo.com"},
    };
    static const want_attr a1[] = {
        {"Company", "string", "Marketo"},  {"Date_of_purchase", "date", "2012-04-04"},
        {"FirstName", "string", "Joe"},    {"LastName", "string", "Orante"},
        {"LeadScore", "integer", "11"},
    };
    check_lead(&r.leads[0], 65835, "formtest1@marketo.com", a0, 5);
    check_lead(&r.leads[1], 67508, "joe@marketo.com", a1, 5);
    assert_null(f.faultstring);
    mkto_leads_clear(&r);
    free(body);
}

static void test_doc_get_lead_response(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_doc_xml("getlead.md", 1, &len);
    mkto_leads r;
    assert_int_equal(soap_parse_get_lead(body, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.return_count, 1);
    assert_int_equal(r.remaining_count, 0);
    assert_null(r.new_stream_position);
    assert_int_equal(r.nleads, 1);
    static const want_attr a[] = {
        {"AnonymousIP", "string", "172.249.34.240"},
        {"Company", "string", "Marketo"},
        {"FirstName", "string", "Travis"},
        {"InferredCompany", "string", "Time Warner Cable"},
        {"InferredCountry", "string", "United States"},
        {"LastName", "string", "Kaufman"},
        {"LeadScore", "integer", "62"},
        {"Website", "url", "gmail.com"},
    };
    check_lead(&r.leads[0], 1089965, "rufus@marketo.com", a, 8);
    mkto_leads_clear(&r);
    /* The getMultipleLeads parser wants another success element. */
    assert_int_equal(soap_parse_get_multiple_leads(body, len, 0, &r, NULL, NULL),
                     SOAP_ERR_PARSE);
    free(body);
}

static void test_doc_sync_lead_response(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_doc_xml("synclead.md", 1, &len);
    mkto_sync_result r;
    assert_int_equal(soap_parse_sync_lead(body, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 1);
    assert_int_equal(r.statuses[0].lead_id, 1089965);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_null(r.statuses[0].error);
    mkto_sync_result_clear(&r);
    free(body);
}

static void test_doc_sync_multiple_response(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_doc_xml("syncmultipleleads.md", 1, &len);
    mkto_sync_result r;
    assert_int_equal(soap_parse_sync_multiple_leads(body, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 2);
    assert_int_equal(r.statuses[0].lead_id, 1090240);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_UPDATED);
    assert_null(r.statuses[0].error);
    assert_int_equal(r.statuses[1].lead_id, 1090239);
    assert_int_equal(r.statuses[1].state, MKTO_SYNC_UPDATED);
    assert_null(r.statuses[1].error);
    mkto_sync_result_clear(&r);
    free(body);
}

static void test_doc_fault(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_doc_xml("authentication-signature.md", 2, &len);
    for (int which = 0; which < 4; which++) {
        mkto_leads lr;
        mkto_sync_result sr;
        mkto_fault f;
        soap_err err;
        int rc;
        switch (which) {
        case 0: rc = soap_parse_get_lead(body, len, 0, &lr, &f, &err); break;
        case 1: rc = soap_parse_get_multiple_leads(body, len, 0, &lr, &f, &err); break;
        case 2: rc = soap_parse_sync_lead(body, len, 0, &sr, &f, &err); break;
        default: rc = soap_parse_sync_multiple_leads(body, len, 0, &sr, &f, &err); break;
        }
        assert_int_equal(rc, SOAP_ERR_FAULT);
        assert_int_equal(err.code, SOAP_ERR_FAULT);
        assert_int_equal(f.code, 20014);
        assert_false(f.retryable);
        assert_str(f.faultcode, "SOAP-ENV:Client");
        assert_str(f.faultstring, "20014 - Authentication failed");
        assert_str(f.message, "Authentication failed (20014)");
        mkto_fault_clear(&f);
    }
    free(body);
}

static void test_doc_truncated_activity(void **state)
{
    (void)state;
    /* The getLeadActivity success example ends in "</SOAP-ENV:Envelope"
     * without '>': not well-formed, and not our operation anyway. */
    size_t len;
    char *body = ts_doc_xml("authentication-signature.md", 1, &len);
    assert_non_null(strstr(body, "successGetLeadActivity"));
    mkto_leads r;
    soap_err err;
    assert_int_equal(soap_parse_get_multiple_leads(body, len, 0, &r, NULL, &err),
                     SOAP_ERR_PARSE);
    assert_int_equal(err.code, SOAP_ERR_PARSE);
    assert_null(r.leads);
    /* Mended, it parses as XML but is still the wrong success element. */
    char *mended = malloc(len + 2);
    assert_non_null(mended);
    memcpy(mended, body, len);
    while (len > 0 && (mended[len - 1] == '\n' || mended[len - 1] == ' '))
        len--;
    mended[len] = '>';
    mended[len + 1] = '\0';
    assert_int_equal(soap_parse_get_multiple_leads(mended, len + 1, 0, &r, NULL, &err),
                     SOAP_ERR_PARSE);
    assert_non_null(strstr(err.msg, "successGetMultipleLeads"));
    free(mended);
    free(body);
}

/* Parses XML with plain libxml2 for structural comparison. */
static xmlDocPtr load(const char *xml, size_t len)
{
    xmlDocPtr d = xmlReadMemory(xml, (int)len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOBLANKS);
    assert_non_null(d);
    return d;
}

/* Takes the user id and timestamp of a documented request, so that the
 * built envelope can match it text for text (the signature cannot: the
 * docs' keys are unknown). */
static void doc_auth(xmlDocPtr doc, xmlChar **user, xmlChar **ts)
{
    *user = ts_text_of(xmlDocGetRootElement(doc), "mktowsUserId");
    *ts = ts_text_of(xmlDocGetRootElement(doc), "requestTimestamp");
    assert_non_null(*user);
    assert_non_null(*ts);
}

/* Compares a built envelope with the documented request. */
static void compare(xmlDocPtr docs, const char *built, size_t len)
{
    xmlDocPtr mine = load(built, len);
    char why[512] = "";
    if (!ts_same_structure(xmlDocGetRootElement(mine), xmlDocGetRootElement(docs),
                           "requestSignature", why, sizeof(why)))
        fail_msg("differs from the documented request: %s", why);
    xmlFreeDoc(mine);
}

static void test_doc_get_multiple_request(void **state)
{
    (void)state;
    size_t len;
    char *ref = ts_doc_xml("getmultipleleads.md", 0, &len);
    xmlDocPtr docs = load(ref, len);
    const char *keys[] = {"formtest1@marketo.com", "joe@marketo.com"};
    soap_auth a = {.user_id = "demo17_1_809934544BFABAE58E5D27",
                   .encryption_key = "any key",
                   .timestamp = "2013-08-02T15:47:06-07:00"};
    mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                           .nkeys = 2, .batch_size = 100};
    char *xml;
    size_t xlen;
    assert_int_equal(soap_build_get_multiple_leads(&a, &p, &xml, &xlen, NULL), SOAP_OK);
    compare(docs, xml, xlen);
    free(xml);

    /* And the check bites: one key fewer, or another batch size, differ. */
    p.nkeys = 1;
    assert_int_equal(soap_build_get_multiple_leads(&a, &p, &xml, &xlen, NULL), SOAP_OK);
    xmlDocPtr mine = load(xml, xlen);
    char why[512];
    assert_false(ts_same_structure(xmlDocGetRootElement(mine), xmlDocGetRootElement(docs),
                                   "requestSignature", why, sizeof(why)));
    xmlFreeDoc(mine);
    free(xml);
    p.nkeys = 2;
    p.batch_size = 99;
    assert_int_equal(soap_build_get_multiple_leads(&a, &p, &xml, &xlen, NULL), SOAP_OK);
    mine = load(xml, xlen);
    assert_false(ts_same_structure(xmlDocGetRootElement(mine), xmlDocGetRootElement(docs),
                                   "requestSignature", why, sizeof(why)));
    xmlFreeDoc(mine);
    free(xml);
    xmlFreeDoc(docs);
    free(ref);
}

static void test_doc_get_lead_request(void **state)
{
    (void)state;
    size_t len;
    char *ref = ts_doc_xml("getlead.md", 0, &len);
    xmlDocPtr docs = load(ref, len);
    xmlChar *user, *ts;
    doc_auth(docs, &user, &ts);
    soap_auth a = {.user_id = (const char *)user, .encryption_key = "k",
                   .timestamp = (const char *)ts};
    char *xml;
    size_t xlen;
    assert_int_equal(soap_build_get_lead(&a, MKTO_KEY_EMAIL, "rufus@marketo.com", &xml, &xlen,
                                         NULL),
                     SOAP_OK);
    compare(docs, xml, xlen);
    free(xml);
    xmlFree(user);
    xmlFree(ts);
    xmlFreeDoc(docs);
    free(ref);
}

static void test_doc_sync_lead_request(void **state)
{
    (void)state;
    size_t len;
    char *ref = ts_doc_xml("synclead.md", 0, &len);
    xmlDocPtr docs = load(ref, len);
    xmlChar *user, *ts;
    doc_auth(docs, &user, &ts);
    soap_auth a = {.user_id = (const char *)user, .encryption_key = "k",
                   .timestamp = (const char *)ts};
    mkto_attr attrs[] = {{.name = "FirstName", .value = "George"},
                         {.name = "LastName", .value = "of the Jungle"}};
    mkto_lead l = {.email = "t@t.com", .attrs = attrs, .nattrs = 2};
    char *xml;
    size_t xlen;
    assert_int_equal(soap_build_sync_lead(&a, &l, false, NULL, &xml, &xlen, NULL), SOAP_OK);
    compare(docs, xml, xlen);
    free(xml);
    xmlFree(user);
    xmlFree(ts);
    xmlFreeDoc(docs);
    free(ref);
}

static void test_doc_sync_multiple_request(void **state)
{
    (void)state;
    size_t len;
    char *ref = ts_doc_xml("syncmultipleleads.md", 0, &len);
    xmlDocPtr docs = load(ref, len);
    xmlChar *user, *ts;
    doc_auth(docs, &user, &ts);
    soap_auth a = {.user_id = (const char *)user, .encryption_key = "k",
                   .timestamp = (const char *)ts};
    mkto_attr a0[] = {{.name = "Company", .value = "Marketo1000"},
                      {.name = "Phone", .value = "650-555-1000"}};
    mkto_attr a1[] = {{.name = "Company", .value = "Marketo1001"},
                      {.name = "Phone", .value = "650-555-1001"}};
    mkto_lead leads[] = {
        {.email = "em1000@etestd.marketo.net", .attrs = a0, .nattrs = 2},
        {.email = "em1001@etestd.marketo.net", .attrs = a1, .nattrs = 2},
    };
    char *xml;
    size_t xlen;
    assert_int_equal(soap_build_sync_multiple_leads(&a, leads, 2, true, &xml, &xlen, NULL),
                     SOAP_OK);
    compare(docs, xml, xlen);
    free(xml);
    xmlFree(user);
    xmlFree(ts);
    xmlFreeDoc(docs);
    free(ref);
}

int main(void)
{
    if (ts_skip_without_shared())
        return 0;
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_get_multiple_leads_response),
        cmocka_unit_test(test_doc_get_lead_response),
        cmocka_unit_test(test_doc_sync_lead_response),
        cmocka_unit_test(test_doc_sync_multiple_response),
        cmocka_unit_test(test_doc_fault),
        cmocka_unit_test(test_doc_truncated_activity),
        cmocka_unit_test(test_doc_get_multiple_request),
        cmocka_unit_test(test_doc_get_lead_request),
        cmocka_unit_test(test_doc_sync_lead_request),
        cmocka_unit_test(test_doc_sync_multiple_request),
    };
    int rc = cmocka_run_group_tests_name("soap_docs", tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
