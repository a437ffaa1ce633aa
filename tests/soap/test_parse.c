/* tests/soap/test_parse.c - response parsers on fixtures (tests/soap/data)
 * and on hostile input: every case ends in a clean status code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>

#include "soap/soap.h"
#include "support.h"

/* Asserts a string field equals want (NULL: must be NULL). */
static void assert_str(const char *got, const char *want)
{
    if (want == NULL)
        assert_null(got);
    else {
        assert_non_null(got);
        assert_string_equal(got, want);
    }
}

static void assert_attr(const mkto_attr *a, const char *name, const char *type,
                        const char *value)
{
    assert_str(a->name, name);
    assert_str(a->type, type);
    assert_str(a->value, value);
}

static void test_get_multiple_page(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_fixture("get_multiple_page.xml", &len);
    mkto_leads r;
    mkto_fault f;
    soap_err err;
    assert_int_equal(soap_parse_get_multiple_leads(body, len, 0, &r, &f, &err), SOAP_OK);
    assert_int_equal(r.return_count, 2);
    assert_int_equal(r.remaining_count, 1337);
    assert_str(r.new_stream_position, "id:4711&date:2013-07-01T00:00:00Z");
    assert_int_equal(r.nleads, 2);

    const mkto_lead *l = &r.leads[0];
    assert_true(l->has_id);
    assert_int_equal(l->id, 2147483647);
    assert_null(l->email);
    assert_str(l->foreign_sys_person_id, "SF-0031");
    assert_str(l->foreign_sys_type, "SFDC");
    assert_int_equal(l->nattrs, 4);
    assert_attr(&l->attrs[0], "Phone", "phone", NULL);
    assert_attr(&l->attrs[1], "Untyped", NULL, "no type element");
    assert_attr(&l->attrs[2], "NilType", NULL, "a <b> & c \xc3\xa9t\xc3\xa9");
    assert_attr(&l->attrs[3], "Empty", "string", "");

    l = &r.leads[1];
    assert_false(l->has_id);
    assert_str(l->email, "second@example.com");
    assert_null(l->foreign_sys_person_id);
    assert_null(l->foreign_sys_type);
    assert_int_equal(l->nattrs, 0);
    assert_null(l->attrs);
    mkto_leads_clear(&r);
    assert_null(r.leads);

    /* A getLead parser refuses the getMultipleLeads response. */
    assert_int_equal(soap_parse_get_lead(body, len, 0, &r, &f, &err), SOAP_ERR_PARSE);
    assert_int_equal(err.code, SOAP_ERR_PARSE);
    assert_non_null(strstr(err.msg, "successGetLead"));
    assert_null(r.leads);
    free(body);
}

static void test_sync_multiple_failed(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_fixture("sync_multiple_failed.xml", &len);
    mkto_sync_result r;
    assert_int_equal(soap_parse_sync_multiple_leads(body, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 3);
    assert_int_equal(r.statuses[0].lead_id, 1090241);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    assert_null(r.statuses[0].error);
    assert_int_equal(r.statuses[1].lead_id, 0);
    assert_int_equal(r.statuses[1].state, MKTO_SYNC_FAILED);
    assert_str(r.statuses[1].error, "20105 - Lead Attribute Bad: unknown attribute 'Colour'");
    assert_int_equal(r.statuses[2].lead_id, 1090239);
    assert_int_equal(r.statuses[2].state, MKTO_SYNC_UPDATED);
    assert_null(r.statuses[2].error);
    mkto_sync_result_clear(&r);
    free(body);
}

static void test_sync_lead_created(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_fixture("sync_lead_created.xml", &len);
    mkto_sync_result r;
    assert_int_equal(soap_parse_sync_lead(body, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.nstatuses, 1);
    /* syncStatus has no leadId: result/leadId is used. */
    assert_int_equal(r.statuses[0].lead_id, 1090300);
    assert_int_equal(r.statuses[0].state, MKTO_SYNC_CREATED);
    assert_null(r.statuses[0].error);
    mkto_sync_result_clear(&r);
    /* Not a syncMultipleLeads response. */
    assert_int_equal(soap_parse_sync_multiple_leads(body, len, 0, &r, NULL, NULL),
                     SOAP_ERR_PARSE);
    free(body);
}

/* Parses a fault fixture with each of the four parsers. */
static void check_fault(const char *fixture, int code, bool retryable, const char *faultcode,
                        const char *faultstring, const char *message)
{
    size_t len;
    char *body = ts_fixture(fixture, &len);
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
        assert_int_equal(f.code, code);
        assert_int_equal(f.retryable, retryable);
        assert_str(f.faultcode, faultcode);
        assert_str(f.faultstring, faultstring);
        assert_str(f.message, message);
        if (which < 2)
            assert_null(lr.leads);
        else
            assert_null(sr.statuses);
        mkto_fault_clear(&f);
    }
    /* The fault out-param is optional. */
    mkto_leads lr;
    assert_int_equal(soap_parse_get_lead(body, len, 0, &lr, NULL, NULL), SOAP_ERR_FAULT);
    free(body);
}

static void test_faults(void **state)
{
    (void)state;
    check_fault("fault_no_detail.xml", 20110, false, "SOAP-ENV:Server", "20110 - Bad Parameter",
                NULL);
    check_fault("fault_20023.xml", 20023, true, "SOAP-ENV:Client", "20023 - Rate limit exceeded",
                "Rate limit exceeded (20023)");
    /* serviceException/code wins over the faultstring's number. */
    check_fault("fault_20016.xml", 20016, true, "soapenv:Client",
                "99999 - deliberately different from the detail code",
                "Request Expired (20016)");
}

static void test_fault_code_fallbacks(void **state)
{
    (void)state;
    static const struct {
        const char *faultstring; /* faultstring element content */
        int code;                /* expected code */
        bool retryable;          /* expected retryable (marketo/codes.h) */
    } cases[] = {
        {"20024 - Concurrency limit", 20024, true},
        {"  10001 Internal Error", 10001, true},
        {"Internal Error", 0, false},
        {"", 0, false},
        {"12345678901234 - absurd", 0, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[1024];
        int n = snprintf(body, sizeof(body),
                         "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\"><e:Body><e:Fault>"
                         "<faultcode>e:Server</faultcode><faultstring>%s</faultstring>"
                         "<detail><other>x</other></detail></e:Fault></e:Body></e:Envelope>",
                         cases[i].faultstring);
        mkto_sync_result r;
        mkto_fault f;
        assert_int_equal(soap_parse_sync_lead(body, (size_t)n, 0, &r, &f, NULL), SOAP_ERR_FAULT);
        assert_int_equal(f.code, cases[i].code);
        assert_int_equal(f.retryable, cases[i].retryable);
        mkto_fault_clear(&f);
    }
}

/* Runs all four parsers on body and asserts each returns want with empty
 * outputs and an error message free of "root:". */
static void expect_all(const char *body, size_t len, size_t max_len, int want)
{
    for (int which = 0; which < 4; which++) {
        mkto_leads lr;
        mkto_sync_result sr;
        mkto_fault f;
        soap_err err;
        memset(&lr, 0xa5, sizeof(lr));
        memset(&sr, 0xa5, sizeof(sr));
        memset(&f, 0xa5, sizeof(f));
        int rc;
        switch (which) {
        case 0: rc = soap_parse_get_lead(body, len, max_len, &lr, &f, &err); break;
        case 1: rc = soap_parse_get_multiple_leads(body, len, max_len, &lr, &f, &err); break;
        case 2: rc = soap_parse_sync_lead(body, len, max_len, &sr, &f, &err); break;
        default: rc = soap_parse_sync_multiple_leads(body, len, max_len, &sr, &f, &err); break;
        }
        if (rc != want)
            fail_msg("parser %d returned %d (%s), want %d", which, rc, err.msg, want);
        assert_int_equal(err.code, want);
        assert_true(err.msg[0] != '\0');
        assert_null(strstr(err.msg, "root:"));
        if (which < 2) {
            assert_null(lr.leads);
            assert_int_equal(lr.nleads, 0);
            assert_null(lr.new_stream_position);
        } else {
            assert_null(sr.statuses);
            assert_int_equal(sr.nstatuses, 0);
        }
        assert_null(f.faultstring);
        assert_null(f.message);
        assert_null(f.faultcode);
    }
}

static void expect_fixture(const char *name, int want)
{
    size_t len;
    char *body = ts_fixture(name, &len);
    expect_all(body, len, 0, want);
    free(body);
}

static void test_hostile_entities(void **state)
{
    (void)state;
    expect_fixture("billion_laughs.xml", SOAP_ERR_PARSE);
    expect_fixture("xxe.xml", SOAP_ERR_PARSE);
    expect_fixture("xxe_external_dtd.xml", SOAP_ERR_PARSE);
    expect_fixture("param_entity.xml", SOAP_ERR_PARSE);
    /* An entity reference without any DTD is not well-formed. */
    static const char undeclared[] =
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\"><e:Body>"
        "<m:successSyncLead><result><syncStatus><leadId>1</leadId><status>CREATED</status>"
        "<error>&xxe;</error></syncStatus></result></m:successSyncLead></e:Body></e:Envelope>";
    expect_all(undeclared, sizeof(undeclared) - 1, 0, SOAP_ERR_PARSE);

    /* Any DOCTYPE is refused, even a harmless one on a valid response. */
    static const char *const doctypes[] = {
        "<!DOCTYPE e:Envelope>",
        "<!DOCTYPE e:Envelope [<!ENTITY unused \"x\">]>",
        "<!DOCTYPE e:Envelope [<!ATTLIST result xsi:nil CDATA \"true\">]>",
    };
    for (size_t i = 0; i < sizeof(doctypes) / sizeof(doctypes[0]); i++) {
        char body[1024];
        int n = snprintf(body, sizeof(body),
                         "<?xml version=\"1.0\"?>%s<e:Envelope xmlns:e=\"" SOAP_ENV_NS
                         "\" xmlns:m=\"" SOAP_NS "\"><e:Body><m:successSyncLead><result>"
                         "<syncStatus><leadId>1</leadId><status>CREATED</status></syncStatus>"
                         "</result></m:successSyncLead></e:Body></e:Envelope>",
                         doctypes[i]);
        mkto_sync_result r;
        assert_int_equal(soap_parse_sync_lead(body + 21 + strlen(doctypes[i]),
                                              (size_t)n - 21 - strlen(doctypes[i]), 0, &r,
                                              NULL, NULL),
                         SOAP_OK);
        mkto_sync_result_clear(&r);
        assert_int_equal(soap_parse_sync_lead(body, (size_t)n, 0, &r, NULL, NULL),
                         SOAP_ERR_PARSE);
        assert_null(r.statuses);
    }
}

static void test_hostile_not_soap(void **state)
{
    (void)state;
    expect_fixture("html_503.html", SOAP_ERR_PARSE);
    expect_all("", 0, 0, SOAP_ERR_PARSE);
    expect_all(NULL, 0, 0, SOAP_ERR_PARSE);
    expect_all("   \n", 4, 0, SOAP_ERR_PARSE);
    expect_all("503 Service Unavailable", 23, 0, SOAP_ERR_PARSE);
    expect_all("{\"error\":\"json\"}", 16, 0, SOAP_ERR_PARSE);
    /* Well-formed but not SOAP, or SOAP 1.2, or no Body, or empty Body. */
    static const char *const docs[] = {
        "<Envelope><Body/></Envelope>",
        "<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body>"
        "<e:Fault/></e:Body></e:Envelope>",
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\"><e:Header/></e:Envelope>",
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\"><e:Body>  </e:Body></e:Envelope>",
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\"><e:Body><x:successGetLead xmlns:x=\"http://"
        "example.com/\"><result><count>0</count></result></x:successGetLead>"
        "<x:successGetMultipleLeads xmlns:x=\"http://example.com/\"/>"
        "<x:successSyncLead xmlns:x=\"http://example.com/\"/></e:Body></e:Envelope>",
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\"><e:Body><successGetLead><result><count>0</count>"
        "</result></successGetLead></e:Body></e:Envelope>",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        expect_all(docs[i], strlen(docs[i]), 0, SOAP_ERR_PARSE);
}

static void test_hostile_truncated(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_fixture("sync_multiple_failed.xml", &len);
    /* Every cut short of the closing tag must fail cleanly. */
    for (size_t cut = 0; cut < len; cut += 7) {
        const char *end = strstr(body, "</SOAP-ENV:Envelope>");
        if (body + cut > end)
            break;
        mkto_sync_result r;
        soap_err err;
        int rc = soap_parse_sync_multiple_leads(body, cut, 0, &r, NULL, &err);
        if (rc != SOAP_ERR_PARSE)
            fail_msg("cut at %zu returned %d", cut, rc);
        assert_null(r.statuses);
    }
    free(body);
}

static void test_too_large(void **state)
{
    (void)state;
    size_t len;
    char *body = ts_fixture("sync_multiple_failed.xml", &len);
    expect_all(body, len, len - 1, SOAP_ERR_TOO_LARGE);
    mkto_sync_result r;
    assert_int_equal(soap_parse_sync_multiple_leads(body, len, len, &r, NULL, NULL), SOAP_OK);
    mkto_sync_result_clear(&r);
    /* 0 means the default cap; a claimed length over it is refused before
     * anything is read (body is shorter than len here on purpose). */
    expect_all(body, SOAP_DEFAULT_MAX_RESPONSE + 1, 0, SOAP_ERR_TOO_LARGE);
    free(body);
}

/* Builds a getMultipleLeads response with depth nested <a> elements
 * inside the first lead's Email. */
static char *deep_doc(int depth, size_t *len)
{
    static const char head[] =
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\"><e:Body>"
        "<m:successGetMultipleLeads><result><returnCount>1</returnCount>"
        "<remainingCount>0</remainingCount><newStreamPosition/><leadRecordList><leadRecord>"
        "<Email>";
    static const char tail[] =
        "</Email></leadRecord></leadRecordList></result></m:successGetMultipleLeads>"
        "</e:Body></e:Envelope>";
    size_t cap = sizeof(head) + sizeof(tail) + (size_t)depth * 7 + 1;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t n = 0;
    memcpy(s, head, sizeof(head) - 1);
    n += sizeof(head) - 1;
    for (int i = 0; i < depth; i++) {
        memcpy(s + n, "<a>", 3);
        n += 3;
    }
    for (int i = 0; i < depth; i++) {
        memcpy(s + n, "</a>", 4);
        n += 4;
    }
    memcpy(s + n, tail, sizeof(tail));
    n += sizeof(tail) - 1;
    *len = n;
    return s;
}

static void test_hostile_nesting(void **state)
{
    (void)state;
    size_t len;
    /* Envelope..Email is 7 levels: 57 more reach exactly 64. */
    char *s = deep_doc(57, &len);
    mkto_leads r;
    assert_int_equal(soap_parse_get_multiple_leads(s, len, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.nleads, 1);
    assert_str(r.leads[0].email, "");
    mkto_leads_clear(&r);
    free(s);

    s = deep_doc(58, &len);
    expect_all(s, len, 0, SOAP_ERR_PARSE);
    free(s);
    s = deep_doc(10000, &len);
    expect_all(s, len, 0, SOAP_ERR_PARSE);
    free(s);
}

static void test_malformed_values(void **state)
{
    (void)state;
    static const char *const bad_leads[] = {
        "<returnCount>x</returnCount><remainingCount>0</remainingCount>",
        "<returnCount>-1</returnCount><remainingCount>0</remainingCount>",
        "<returnCount>1</returnCount><remainingCount>99999999999</remainingCount>",
        "<returnCount>1</returnCount><remainingCount></remainingCount>",
        "<remainingCount>0</remainingCount>",
        "<returnCount>1</returnCount><remainingCount>0</remainingCount>"
        "<leadRecordList><leadRecord><Id>12x</Id></leadRecord></leadRecordList>",
        "<returnCount>1</returnCount><remainingCount>0</remainingCount>"
        "<leadRecordList><leadRecord><Id>99999999999999999999999</Id></leadRecord>"
        "</leadRecordList>",
        "<returnCount>1</returnCount><remainingCount>0</remainingCount>"
        "<leadRecordList><leadRecord><Id></Id></leadRecord></leadRecordList>",
        "<returnCount>1</returnCount><remainingCount>0</remainingCount>"
        "<leadRecordList><leadRecord><leadAttributeList><attribute><attrValue>v</attrValue>"
        "</attribute></leadAttributeList></leadRecord></leadRecordList>",
    };
    for (size_t i = 0; i < sizeof(bad_leads) / sizeof(bad_leads[0]); i++) {
        char body[2048];
        int n = snprintf(body, sizeof(body),
                         "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\">"
                         "<e:Body><m:successGetMultipleLeads><result>%s</result>"
                         "</m:successGetMultipleLeads></e:Body></e:Envelope>",
                         bad_leads[i]);
        mkto_leads r;
        soap_err err;
        int rc = soap_parse_get_multiple_leads(body, (size_t)n, 0, &r, NULL, &err);
        if (rc != SOAP_ERR_PARSE)
            fail_msg("case %zu returned %d", i, rc);
        assert_null(r.leads);
        assert_null(r.new_stream_position);
    }
    static const char *const bad_sync[] = {
        "<syncStatus><leadId>1</leadId><status>DELETED</status></syncStatus>",
        "<syncStatus><leadId>1</leadId></syncStatus>",
        "<syncStatus><leadId>one</leadId><status>CREATED</status></syncStatus>",
        "<syncStatus><leadId>1</leadId><status>CREATEDCREATEDCREATED</status></syncStatus>",
    };
    for (size_t i = 0; i < sizeof(bad_sync) / sizeof(bad_sync[0]); i++) {
        char body[2048];
        int n = snprintf(body, sizeof(body),
                         "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\">"
                         "<e:Body><m:successSyncMultipleLeads><result><syncStatusList>"
                         "<syncStatus><leadId>7</leadId><status>CREATED</status></syncStatus>"
                         "%s</syncStatusList></result></m:successSyncMultipleLeads></e:Body>"
                         "</e:Envelope>",
                         bad_sync[i]);
        mkto_sync_result r;
        int rc = soap_parse_sync_multiple_leads(body, (size_t)n, 0, &r, NULL, NULL);
        if (rc != SOAP_ERR_PARSE)
            fail_msg("sync case %zu returned %d", i, rc);
        assert_null(r.statuses);
    }
    /* Whitespace around numbers is fine (xs:int collapses it). */
    static const char ok[] =
        "<e:Envelope xmlns:e=\"" SOAP_ENV_NS "\" xmlns:m=\"" SOAP_NS "\"><e:Body>"
        "<m:successGetLead><result><count>\n 1 \n</count><leadRecordList><leadRecord>"
        "<Id> 42 </Id></leadRecord></leadRecordList></result></m:successGetLead></e:Body>"
        "</e:Envelope>";
    mkto_leads r;
    assert_int_equal(soap_parse_get_lead(ok, sizeof(ok) - 1, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.return_count, 1);
    assert_int_equal(r.remaining_count, 0);
    assert_null(r.new_stream_position);
    assert_int_equal(r.leads[0].id, 42);
    mkto_leads_clear(&r);
}

/* Values that must survive escaping in a response unchanged. */
static const char *const tricky[] = {
    "<a href=\"x\">&amp;</a>",
    "it's \"quoted\" & <escaped> ]]> done",
    "]]>",
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
    "tab\there\r\nCRLF\rCR\nLF",
    "  leading and trailing  ",
};

static void test_round_trip_response(void **state)
{
    (void)state;
    size_t n = sizeof(tricky) / sizeof(tricky[0]);
    /* Write a response with libxml2's writer (which escapes), parse it. */
    xmlBufferPtr buf = xmlBufferCreate();
    xmlTextWriterPtr w = xmlNewTextWriterMemory(buf, 0);
    assert_non_null(w);
    assert_true(xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL) >= 0);
    xmlTextWriterStartElement(w, BAD_CAST "SOAP-ENV:Envelope");
    xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns:SOAP-ENV", BAD_CAST SOAP_ENV_NS);
    xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns:ns1", BAD_CAST SOAP_NS);
    xmlTextWriterStartElement(w, BAD_CAST "SOAP-ENV:Body");
    xmlTextWriterStartElement(w, BAD_CAST "ns1:successGetMultipleLeads");
    xmlTextWriterStartElement(w, BAD_CAST "result");
    xmlTextWriterWriteElement(w, BAD_CAST "returnCount", BAD_CAST "6");
    xmlTextWriterWriteElement(w, BAD_CAST "remainingCount", BAD_CAST "0");
    xmlTextWriterWriteElement(w, BAD_CAST "newStreamPosition", BAD_CAST tricky[1]);
    xmlTextWriterStartElement(w, BAD_CAST "leadRecordList");
    for (size_t i = 0; i < n; i++) {
        xmlTextWriterStartElement(w, BAD_CAST "leadRecord");
        xmlTextWriterWriteElement(w, BAD_CAST "Email", BAD_CAST tricky[i]);
        xmlTextWriterWriteElement(w, BAD_CAST "ForeignSysPersonId", BAD_CAST tricky[n - 1 - i]);
        xmlTextWriterStartElement(w, BAD_CAST "leadAttributeList");
        xmlTextWriterStartElement(w, BAD_CAST "attribute");
        xmlTextWriterWriteElement(w, BAD_CAST "attrName", BAD_CAST tricky[i]);
        xmlTextWriterWriteElement(w, BAD_CAST "attrType", BAD_CAST tricky[n - 1 - i]);
        xmlTextWriterWriteElement(w, BAD_CAST "attrValue", BAD_CAST tricky[i]);
        xmlTextWriterEndElement(w);
        xmlTextWriterEndElement(w);
        xmlTextWriterEndElement(w);
    }
    assert_true(xmlTextWriterEndDocument(w) >= 0);
    xmlFreeTextWriter(w);

    mkto_leads r;
    soap_err err;
    assert_int_equal(soap_parse_get_multiple_leads((const char *)xmlBufferContent(buf),
                                                   (size_t)xmlBufferLength(buf), 0, &r, NULL,
                                                   &err),
                     SOAP_OK);
    assert_int_equal(r.nleads, n);
    assert_str(r.new_stream_position, tricky[1]);
    for (size_t i = 0; i < n; i++) {
        assert_str(r.leads[i].email, tricky[i]);
        assert_str(r.leads[i].foreign_sys_person_id, tricky[n - 1 - i]);
        assert_int_equal(r.leads[i].nattrs, 1);
        assert_attr(&r.leads[i].attrs[0], tricky[i], tricky[n - 1 - i], tricky[i]);
    }
    mkto_leads_clear(&r);
    xmlBufferFree(buf);
}

static void test_large_response(void **state)
{
    (void)state;
    /* 1000 leads x 20 attributes: parses, and every value lands. */
    size_t cap = 8u * 1024u * 1024u, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    n += (size_t)snprintf(s + n, cap - n,
                          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope "
                          "xmlns:SOAP-ENV=\"" SOAP_ENV_NS "\" xmlns:xsi=\"" SOAP_XSI_NS
                          "\" xmlns:ns1=\"" SOAP_NS "\"><SOAP-ENV:Body>"
                          "<ns1:successGetMultipleLeads><result><returnCount>1000</returnCount>"
                          "<remainingCount>5000</remainingCount><newStreamPosition>pos"
                          "</newStreamPosition><leadRecordList>\n");
    for (int i = 0; i < 1000; i++) {
        n += (size_t)snprintf(s + n, cap - n,
                              "<leadRecord><Id>%d</Id><Email>lead%d@example.com</Email>"
                              "<ForeignSysPersonId xsi:nil=\"true\" /><ForeignSysType "
                              "xsi:nil=\"true\" /><leadAttributeList>\n",
                              100000 + i, i);
        for (int j = 0; j < 20; j++)
            n += (size_t)snprintf(s + n, cap - n,
                                  "  <attribute><attrName>Field%d</attrName><attrType>string"
                                  "</attrType><attrValue>value %d/%d</attrValue></attribute>\n",
                                  j, i, j);
        n += (size_t)snprintf(s + n, cap - n, "</leadAttributeList></leadRecord>\n");
    }
    n += (size_t)snprintf(s + n, cap - n,
                          "</leadRecordList></result></ns1:successGetMultipleLeads>"
                          "</SOAP-ENV:Body></SOAP-ENV:Envelope>\n");
    assert_true(n < cap - 1);
    mkto_leads r;
    assert_int_equal(soap_parse_get_multiple_leads(s, n, 0, &r, NULL, NULL), SOAP_OK);
    assert_int_equal(r.return_count, 1000);
    assert_int_equal(r.remaining_count, 5000);
    assert_int_equal(r.nleads, 1000);
    for (int i = 0; i < 1000; i++) {
        char want[64];
        assert_int_equal(r.leads[i].id, 100000 + i);
        assert_int_equal(r.leads[i].nattrs, 20);
        snprintf(want, sizeof(want), "value %d/19", i);
        assert_string_equal(r.leads[i].attrs[19].value, want);
        assert_string_equal(r.leads[i].attrs[19].name, "Field19");
    }
    mkto_leads_clear(&r);
    free(s);
}

/* Bodies shared by the worker threads of test_threads. */
static char *thread_ok, *thread_bad;
static size_t thread_ok_len, thread_bad_len;

/* Parses the good and the hostile body repeatedly; returns the number of
 * unexpected results. */
static void *parse_worker(void *arg)
{
    (void)arg;
    uintptr_t bad = 0;
    for (int i = 0; i < 200; i++) {
        mkto_leads r;
        if (soap_parse_get_multiple_leads(thread_ok, thread_ok_len, 0, &r, NULL, NULL) !=
                SOAP_OK ||
            r.nleads != 2)
            bad++;
        mkto_leads_clear(&r);
        if (soap_parse_get_multiple_leads(thread_bad, thread_bad_len, 0, &r, NULL, NULL) !=
            SOAP_ERR_PARSE)
            bad++;
    }
    return (void *)bad;
}

static void test_threads(void **state)
{
    (void)state;
    /* The upstream engine parses on worker threads: same results there. */
    thread_ok = ts_fixture("get_multiple_page.xml", &thread_ok_len);
    thread_bad = ts_fixture("xxe.xml", &thread_bad_len);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, parse_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *res;
        assert_int_equal(pthread_join(th[i], &res), 0);
        assert_int_equal((uintptr_t)res, 0);
    }
    free(thread_ok);
    free(thread_bad);
}

int main(void)
{
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_multiple_page),
        cmocka_unit_test(test_sync_multiple_failed),
        cmocka_unit_test(test_sync_lead_created),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_fault_code_fallbacks),
        cmocka_unit_test(test_hostile_entities),
        cmocka_unit_test(test_hostile_not_soap),
        cmocka_unit_test(test_hostile_truncated),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_hostile_nesting),
        cmocka_unit_test(test_malformed_values),
        cmocka_unit_test(test_round_trip_response),
        cmocka_unit_test(test_large_response),
        cmocka_unit_test(test_threads),
    };
    int rc = cmocka_run_group_tests_name("soap_parse", tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
