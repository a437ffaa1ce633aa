/* tests/sim/test_ops.c - marketo-sim black box: getLead and
 * getMultipleLeads (selectors, key types, paging, parameter faults) and
 * authentication, against one sim with 10,000 generated leads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"

#define NLEADS 10000

static simh S;

static int setup(void **state)
{
    static const char *const extra[] = {"--leads", "10000", "--seed", "7",
                                        "--calls-per-window", "0", "--daily-quota", "0", NULL};
    soap_init();
    return simh_start(&S, extra);
}

static int teardown(void **state)
{
    int rc = simh_stop(&S);
    soap_cleanup();
    return rc == 0 ? 0 : -1;
}

/* W3C timestamp of now + delta seconds, UTC. */
static void ts_at(long delta, char out[SOAP_TIMESTAMP_LEN])
{
    assert_int_equal(soap_timestamp_format(time(NULL) + delta, 0, out), SOAP_OK);
}

/* Posts hand-built params and returns the fault code (-1 when none). */
static int fault_of(const char *inner)
{
    simh_resp r;
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, NULL), &r), 0);
    int code = simh_fault_code(&r);
    if (code > 0) {
        assert_int_equal(r.status, 500);
        assert_non_null(strstr(r.ctype, "text/xml"));
    }
    simh_resp_free(&r);
    return code;
}

static void test_get_lead_email_case_insensitive(void **state)
{
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_EMAIL, "JOE@Marketo.COM", &r, &f), SOAP_OK);
    assert_int_equal(r.return_count, 1);
    assert_int_equal(r.nleads, 1);
    assert_int_equal(r.leads[0].id, 67508);
    assert_string_equal(r.leads[0].email, "joe@marketo.com");
    assert_null(r.leads[0].foreign_sys_person_id);
    assert_int_equal(r.leads[0].nattrs, 5);
    assert_string_equal(r.leads[0].attrs[0].name, "Company");  /* sorted by name */
    assert_string_equal(simh_attr(&r.leads[0], "Company"), "Marketo");
    assert_string_equal(simh_attr(&r.leads[0], "Date_of_purchase"), "2012-04-04");
    assert_string_equal(r.leads[0].attrs[4].name, "LeadScore");
    assert_string_equal(r.leads[0].attrs[4].type, "integer");
    assert_string_equal(r.leads[0].attrs[4].value, "11");
    mkto_leads_clear(&r);
}

static void test_get_lead_not_found(void **state)
{
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_EMAIL, "nobody@nowhere.test", &r, &f),
                     SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20103);
    assert_string_equal(f.faultstring, "20103 - Lead Not Found");
    assert_string_equal(f.faultcode, "SOAP-ENV:Client");
    mkto_fault_clear(&f);
    mkto_leads_clear(&r);
}

/* Lead 1001234 is found by each of the nine key types; the owner keys
 * match every tenth lead. */
static void test_get_lead_all_key_types(void **state)
{
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_lead(&S, MKTO_KEY_IDNUM, "1001234", &r, &f), SOAP_OK);
    assert_int_equal(r.nleads, 1);
    const char *cookie = simh_attr(&r.leads[0], "Cookies");
    assert_non_null(cookie);
    assert_non_null(strstr(cookie, "id:1234&token:_mch-example.com-"));
    char cookie_copy[256];
    snprintf(cookie_copy, sizeof(cookie_copy), "%s", cookie);
    assert_string_equal(simh_attr(&r.leads[0], "LeadOwnerEmail"), "owner4@example.com");
    mkto_leads_clear(&r);
    struct {
        mkto_key_type t;
        const char *v;
        size_t want;
    } cases[] = {
        {MKTO_KEY_IDNUM, "1001234", 1},
        {MKTO_KEY_COOKIE, cookie_copy, 1},
        {MKTO_KEY_EMAIL, "lead1234@example.com", 1},
        {MKTO_KEY_LEADOWNEREMAIL, "OWNER4@example.com", NLEADS / 10},
        {MKTO_KEY_SFDCACCOUNTID, "001A1234", 1},
        {MKTO_KEY_SFDCCONTACTID, "003A1234", 1},
        {MKTO_KEY_SFDCLEADID, "00QA1234", 1},
        {MKTO_KEY_SFDCLEADOWNERID, "005A4", NLEADS / 10},
        {MKTO_KEY_SFDCOPPTYID, "006A1234", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(simh_get_lead(&S, cases[i].t, cases[i].v, &r, &f), SOAP_OK);
        assert_int_equal(r.nleads, cases[i].want);
        assert_int_equal(r.return_count, (int)cases[i].want);
        bool seen = false;
        for (size_t k = 0; k < r.nleads; k++)
            seen |= r.leads[k].id == 1001234;
        assert_true(seen);
        mkto_leads_clear(&r);
    }
}

/* LeadKeySelector with each key type: the right leads, ascending ids. */
static void test_multiple_all_key_types(void **state)
{
    static const char *const vals[MKTO_KEY__COUNT][3] = {
        {"1000010", "1000020", "65835"},
        {NULL, NULL, NULL},
        {"lead10@example.com", "LEAD20@EXAMPLE.COM", "formtest1@marketo.com"},
        {"owner1@example.com", NULL, NULL},
        {"001A10", "001A20", "001Anone"},
        {"003A10", "003A20", "003Anone"},
        {"00QA10", "00QA20", "00QAnone"},
        {"005A0", NULL, NULL},
        {"006A10", "006A20", "006Anone"},
    };
    for (int t = 0; t < MKTO_KEY__COUNT; t++) {
        if (t == MKTO_KEY_COOKIE)
            continue;  /* tested through getLead with a real cookie */
        size_t n = 0;
        while (n < 3 && vals[t][n] != NULL)
            n++;
        mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = (mkto_key_type)t,
                               .keys = vals[t], .nkeys = n, .batch_size = 1000};
        mkto_leads r;
        mkto_fault f = {0};
        assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
        if (n == 1) {  /* owner keys: every tenth lead */
            assert_int_equal(r.return_count, NLEADS / 10);
        } else if (t == MKTO_KEY_IDNUM || t == MKTO_KEY_EMAIL) {
            assert_int_equal(r.return_count, 3);
            assert_int_equal(r.leads[0].id, 65835);
            assert_int_equal(r.leads[1].id, 1000010);
            assert_int_equal(r.leads[2].id, 1000020);
        } else {
            assert_int_equal(r.return_count, 2);
            assert_int_equal(r.leads[0].id, 1000010);
            assert_int_equal(r.leads[1].id, 1000020);
        }
        assert_int_equal(r.remaining_count, 0);
        assert_string_equal(r.new_stream_position, "");
        mkto_leads_clear(&r);
    }
}

/* 150 keys: only the first 100 count. */
static void test_first_100_keys(void **state)
{
    size_t cap = 64 * 1024;
    char *inner = malloc(cap);
    assert_non_null(inner);
    size_t off = (size_t)snprintf(inner, cap,
        "<ns1:paramsGetMultipleLeads><leadSelector xsi:type=\"ns1:LeadKeySelector\">"
        "<keyType>EMAIL</keyType><keyValues>");
    for (int i = 1; i <= 150; i++)
        off += (size_t)snprintf(inner + off, cap - off, "<stringItem>lead%d@example.com</stringItem>", i);
    snprintf(inner + off, cap - off, "</keyValues></leadSelector><batchSize>1000</batchSize>"
                                     "</ns1:paramsGetMultipleLeads>");
    simh_resp resp;
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, NULL), &resp), 0);
    free(inner);
    assert_int_equal(resp.status, 200);
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(soap_parse_get_multiple_leads(resp.body, resp.len, 0, &r, &f, NULL), SOAP_OK);
    assert_int_equal(r.return_count, 100);
    assert_int_equal(r.nleads, 100);
    for (size_t i = 0; i < r.nleads; i++)
        assert_int_equal(r.leads[i].id, 1000001 + (int64_t)i);
    mkto_leads_clear(&r);
    simh_resp_free(&resp);
}

static void test_include_attributes(void **state)
{
    static const char *const keys[] = {"67508", "1000005"};
    static const char *const attrs[] = {"LeadScore", "FirstName", "NoSuchField", "leadscore"};
    mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_IDNUM, .keys = keys,
                           .nkeys = 2, .attrs = attrs, .nattrs = 4};
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    assert_int_equal(r.nleads, 2);
    for (size_t i = 0; i < r.nleads; i++) {
        assert_int_equal(r.leads[i].nattrs, 2);
        assert_string_equal(r.leads[i].attrs[0].name, "FirstName");
        assert_string_equal(r.leads[i].attrs[1].name, "LeadScore");
        assert_non_null(r.leads[i].email);  /* record elements always come */
    }
    assert_string_equal(simh_attr(&r.leads[0], "FirstName"), "Joe");
    mkto_leads_clear(&r);
}

static void test_batch_size(void **state)
{
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_name = "Demo.All"};
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);  /* no batchSize */
    assert_int_equal(r.return_count, 100);
    assert_int_equal(r.remaining_count, NLEADS - 100);
    mkto_leads_clear(&r);
    /* capped at 1000 (the builder refuses more, so build it by hand) */
    simh_resp resp;
    assert_int_equal(simh_soap(&S, simh_envelope("<ns1:paramsGetMultipleLeads><leadSelector "
                     "xsi:type=\"ns1:StaticListSelector\"><staticListName>Demo.All</staticListName>"
                     "</leadSelector><batchSize>5000</batchSize></ns1:paramsGetMultipleLeads>",
                     NULL, NULL, NULL), &resp), 0);
    assert_int_equal(soap_parse_get_multiple_leads(resp.body, resp.len, 0, &r, &f, NULL), SOAP_OK);
    simh_resp_free(&resp);
    assert_int_equal(r.return_count, 1000);
    assert_int_equal(r.nleads, 1000);
    assert_int_equal(r.remaining_count, NLEADS - 1000);
    mkto_leads_clear(&r);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:StaticListSelector\"><staticListId>1</staticListId>"
                              "</leadSelector><batchSize>0</batchSize></ns1:paramsGetMultipleLeads>"),
                     20110);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:StaticListSelector\"><staticListId>1</staticListId>"
                              "</leadSelector><batchSize>ten</batchSize></ns1:paramsGetMultipleLeads>"),
                     20012);
}

/* Pages through selector p, checking each lead comes once and the remaining
 * count counts down to 0. Returns the number of leads seen. */
static long page_all(mkto_query *p, unsigned char *seen, size_t nseen)
{
    char *pos = NULL;
    long total = 0, expect_remaining = -1;
    for (int page = 0; page < 1000; page++) {
        mkto_leads r;
        mkto_fault f = {0};
        p->stream_position = pos;
        assert_int_equal(simh_get_multiple(&S, p, &r, &f), SOAP_OK);
        free(pos);
        pos = NULL;
        assert_int_equal((size_t)r.return_count, r.nleads);
        if (expect_remaining >= 0)
            assert_int_equal(r.return_count + r.remaining_count, expect_remaining);
        expect_remaining = r.remaining_count;
        for (size_t i = 0; i < r.nleads; i++) {
            int64_t slot = r.leads[i].id - 1000000;
            if (slot <= 0 || (size_t)slot >= nseen)
                slot = 0;  /* the docs' leads */
            if (slot > 0) {
                assert_int_equal(seen[slot], 0);
                seen[slot] = 1;
            }
        }
        total += r.return_count;
        if (r.remaining_count == 0) {
            assert_string_equal(r.new_stream_position, "");
            mkto_leads_clear(&r);
            break;
        }
        assert_true(strlen(r.new_stream_position) > 0);
        pos = strdup(r.new_stream_position);
        mkto_leads_clear(&r);
    }
    free(pos);
    p->stream_position = NULL;
    return total;
}

static void test_paging_demo_all(void **state)
{
    unsigned char *seen = calloc(NLEADS + 1, 1);
    assert_non_null(seen);
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 1, .batch_size = 1000};
    assert_int_equal(page_all(&p, seen, NLEADS + 1), NLEADS);
    for (int i = 1; i <= NLEADS; i++)
        assert_int_equal(seen[i], 1);
    free(seen);
}

static void test_paging_updated_at(void **state)
{
    char oldest[SOAP_TIMESTAMP_LEN], latest[SOAP_TIMESTAMP_LEN];
    ts_at(-20 * 86400, oldest);
    ts_at(60, latest);
    unsigned char *seen = calloc(NLEADS + 1, 1);
    assert_non_null(seen);
    mkto_query p = {.kind = MKTO_SEL_UPDATED_AT, .oldest_updated_at = oldest,
                           .latest_updated_at = latest, .batch_size = 700};
    long total = page_all(&p, seen, NLEADS + 1);
    /* updatedAt is spread over 60 days: about a third fall in 20 days */
    assert_true(total > NLEADS / 5 && total < NLEADS / 2);
    memset(seen, 0, NLEADS + 1);
    p.latest_updated_at = NULL;  /* open end: now */
    assert_int_equal(page_all(&p, seen, NLEADS + 1), total);
    free(seen);
}

static void test_static_list(void **state)
{
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 6926};
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    assert_int_equal(r.return_count, 2);
    assert_int_equal(r.leads[0].id, 65835);
    assert_string_equal(r.leads[0].email, "formtest1@marketo.com");
    assert_string_equal(simh_attr(&r.leads[0], "Website"), "marketo.com");
    assert_int_equal(r.leads[1].id, 67508);
    mkto_leads_clear(&r);
    p.list_id = 0;
    p.list_name = "SMSProgram.listForTesting";
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    assert_int_equal(r.return_count, 2);
    mkto_leads_clear(&r);
    p.list_name = "No.Such.List";
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20111);
    mkto_fault_clear(&f);
    p.list_name = NULL;
    p.list_id = 4242;
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20111);
    mkto_fault_clear(&f);
}

static void test_bad_stream_position(void **state)
{
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_id = 1, .batch_size = 10};
    mkto_leads r;
    mkto_fault f = {0};
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    char token[256];
    snprintf(token, sizeof(token), "%s", r.new_stream_position);
    mkto_leads_clear(&r);
    /* the token works with its own selector */
    p.stream_position = token;
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    assert_int_equal(r.leads[0].id, 1000011);
    mkto_leads_clear(&r);
    /* garbage */
    p.stream_position = "8UJZetaMb1V6uUZl+L7DcPP2jG+PMmtpF";
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20122);
    mkto_fault_clear(&f);
    /* tampered: the position moved */
    char bad[256];
    snprintf(bad, sizeof(bad), "%s", token);
    char *digit = strstr(bad, "1000010");
    assert_non_null(digit);
    digit[6] = '5';
    p.stream_position = bad;
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20122);
    mkto_fault_clear(&f);
    /* another selector's token */
    static const char *const keys[] = {"lead1@example.com"};
    mkto_query k = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                           .nkeys = 1, .stream_position = token};
    assert_int_equal(simh_get_multiple(&S, &k, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20122);
    mkto_fault_clear(&f);
    p.list_id = 6926;
    p.stream_position = token;
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20122);
    mkto_fault_clear(&f);
}

static void test_thirty_days(void **state)
{
    char oldest[SOAP_TIMESTAMP_LEN], latest[SOAP_TIMESTAMP_LEN];
    mkto_leads r;
    mkto_fault f = {0};
    ts_at(-40 * 86400, oldest);
    ts_at(0, latest);
    mkto_query p = {.kind = MKTO_SEL_UPDATED_AT, .oldest_updated_at = oldest,
                           .latest_updated_at = latest};
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20022);
    mkto_fault_clear(&f);
    ts_at(-31 * 86400, oldest);
    p.latest_updated_at = NULL;  /* latest = now */
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_ERR_FAULT);
    assert_int_equal(f.code, 20022);
    mkto_fault_clear(&f);
    ts_at(-29 * 86400, oldest);
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    assert_true(r.return_count > 0);
    mkto_leads_clear(&r);
    /* a 30-day window in the past, and the recent lead 67508 */
    ts_at(-2 * 3600, oldest);
    ts_at(0, latest);
    p.latest_updated_at = latest;
    p.batch_size = 1000;
    assert_int_equal(simh_get_multiple(&S, &p, &r, &f), SOAP_OK);
    bool found = false;
    for (size_t i = 0; i < r.nleads; i++)
        found |= r.leads[i].id == 67508;
    assert_true(found);
    mkto_leads_clear(&r);
}

static void test_request_faults(void **state)
{
    /* bad keyType */
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:LeadKeySelector\"><keyType>PHONE</keyType><keyValues>"
                              "<stringItem>1</stringItem></keyValues></leadSelector>"
                              "</ns1:paramsGetMultipleLeads>"), 20102);
    assert_int_equal(fault_of("<ns1:paramsGetLead><leadKey><keyType>email</keyType>"
                              "<keyValue>joe@marketo.com</keyValue></leadKey></ns1:paramsGetLead>"),
                     20102);
    /* unknown operation */
    assert_int_equal(fault_of("<ns1:paramsGetLeadActivity><leadKey><keyType>IDNUM</keyType>"
                              "<keyValue>1</keyValue></leadKey></ns1:paramsGetLeadActivity>"), 20019);
    assert_int_equal(fault_of("<ns1:somethingElse/>"), 20019);
    /* missing parameters */
    assert_int_equal(fault_of("<ns1:paramsGetLead/>"), 20101);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><batchSize>10</batchSize>"
                              "</ns1:paramsGetMultipleLeads>"), 20109);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:LeadKeySelector\"><keyType>EMAIL</keyType><keyValues/>"
                              "</leadSelector></ns1:paramsGetMultipleLeads>"), 20109);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:LastUpdateAtSelector\"/></ns1:paramsGetMultipleLeads>"),
                     20109);
    /* selector without / with an unknown xsi:type */
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector><keyType>EMAIL</keyType>"
                              "<keyValues><stringItem>a@b.c</stringItem></keyValues></leadSelector>"
                              "</ns1:paramsGetMultipleLeads>"), 20017);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector xsi:type=\"ns1:Nope\">"
                              "</leadSelector></ns1:paramsGetMultipleLeads>"), 20017);
    /* WSDL order: latestUpdatedAt before oldestUpdatedAt */
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:LastUpdateAtSelector\">"
                              "<oldestUpdatedAt>2024-01-01T00:00:00Z</oldestUpdatedAt>"
                              "<latestUpdatedAt>2024-01-02T00:00:00Z</latestUpdatedAt>"
                              "</leadSelector></ns1:paramsGetMultipleLeads>"), 20012);
    /* unknown child */
    assert_int_equal(fault_of("<ns1:paramsGetLead><leadKey><keyType>IDNUM</keyType>"
                              "<keyValue>65835</keyValue></leadKey><extra/></ns1:paramsGetLead>"),
                     20012);
    assert_int_equal(fault_of("<ns1:paramsGetMultipleLeads><leadSelector "
                              "xsi:type=\"ns1:StaticListSelector\"><staticListId>x1</staticListId>"
                              "</leadSelector></ns1:paramsGetMultipleLeads>"), 20012);
}

static void test_unparsable_bodies(void **state)
{
    static const char *const bodies[] = {
        "this is not xml",
        "<?xml version=\"1.0\"?><a><b></a>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"boom\">]>"
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        "<SOAP-ENV:Body>&e;</SOAP-ENV:Body></SOAP-ENV:Envelope>",
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"/>",
        "<Envelope><Body><x/></Body></Envelope>",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        simh_resp r;
        assert_int_equal(simh_post(&S, "/soap/mktows/2_3", bodies[i], strlen(bodies[i]), &r), 0);
        assert_int_equal(r.status, 500);
        assert_int_equal(simh_fault_code(&r), 20012);
        assert_non_null(strstr(r.body, "<faultstring>20012 - Request Not Understood</faultstring>"));
        assert_non_null(strstr(r.body, "<message>Request Not Understood (20012)</message>"));
        simh_resp_free(&r);
    }
    /* over 16 MiB */
    size_t big = 17u * 1024u * 1024u;
    char *b = malloc(big);
    assert_non_null(b);
    memset(b, ' ', big);
    simh_resp r;
    assert_int_equal(simh_post(&S, "/soap/mktows/2_3", b, big, &r), 0);
    free(b);
    assert_int_equal(simh_fault_code(&r), 20012);
    simh_resp_free(&r);
}

static void test_auth(void **state)
{
    const char *inner = "<ns1:paramsGetLead><leadKey><keyType>IDNUM</keyType>"
                        "<keyValue>65835</keyValue></leadKey></ns1:paramsGetLead>";
    simh_resp r;
    /* good */
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, NULL), &r), 0);
    assert_int_equal(r.status, 200);
    simh_resp_free(&r);
    /* signed with another key */
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, "wrong-key", NULL), &r), 0);
    assert_int_equal(simh_fault_code(&r), 20014);
    assert_non_null(strstr(r.body, "<faultstring>20014 - Authentication failed</faultstring>"));
    simh_resp_free(&r);
    /* another user, correctly signed for it */
    assert_int_equal(simh_soap(&S, simh_envelope(inner, "someone_else", NULL, NULL), &r), 0);
    assert_int_equal(simh_fault_code(&r), 20014);
    simh_resp_free(&r);
    /* correctly signed but old */
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, "2013-07-30T14:15:06-07:00"),
                               &r), 0);
    assert_int_equal(simh_fault_code(&r), 20016);
    simh_resp_free(&r);
    char future[SOAP_TIMESTAMP_LEN];
    ts_at(20 * 60, future);
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, future), &r), 0);
    assert_int_equal(simh_fault_code(&r), 20016);
    simh_resp_free(&r);
    /* a few minutes off is fine */
    ts_at(-5 * 60, future);
    assert_int_equal(simh_soap(&S, simh_envelope(inner, NULL, NULL, future), &r), 0);
    assert_int_equal(r.status, 200);
    simh_resp_free(&r);
    /* no header at all */
    const char *nohdr =
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" "
        "xmlns:ns1=\"http://www.marketo.com/mktows/\"><SOAP-ENV:Body><ns1:paramsGetLead><leadKey>"
        "<keyType>IDNUM</keyType><keyValue>65835</keyValue></leadKey></ns1:paramsGetLead>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>";
    assert_int_equal(simh_post(&S, "/soap/mktows/2_3", nohdr, strlen(nohdr), &r), 0);
    assert_int_equal(simh_fault_code(&r), 20014);
    simh_resp_free(&r);
}

/* Other paths and methods. */
static void test_routes(void **state)
{
    simh_resp r;
    assert_int_equal(simh_get(&S, "/soap/mktows/2_3", &r), 0);
    assert_int_equal(r.status, 405);
    simh_resp_free(&r);
    assert_int_equal(simh_get(&S, "/nothing", &r), 0);
    assert_int_equal(r.status, 404);
    simh_resp_free(&r);
    /* any path under /soap/mktows/ */
    char *env = simh_envelope("<ns1:paramsGetLead><leadKey><keyType>IDNUM</keyType>"
                              "<keyValue>65835</keyValue></leadKey></ns1:paramsGetLead>",
                              NULL, NULL, NULL);
    assert_int_equal(simh_post(&S, "/soap/mktows/2_9", env, strlen(env), &r), 0);
    free(env);
    assert_int_equal(r.status, 200);
    simh_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_lead_email_case_insensitive),
        cmocka_unit_test(test_get_lead_not_found),
        cmocka_unit_test(test_get_lead_all_key_types),
        cmocka_unit_test(test_multiple_all_key_types),
        cmocka_unit_test(test_first_100_keys),
        cmocka_unit_test(test_include_attributes),
        cmocka_unit_test(test_batch_size),
        cmocka_unit_test(test_paging_demo_all),
        cmocka_unit_test(test_paging_updated_at),
        cmocka_unit_test(test_static_list),
        cmocka_unit_test(test_bad_stream_position),
        cmocka_unit_test(test_thirty_days),
        cmocka_unit_test(test_request_faults),
        cmocka_unit_test(test_unparsable_bodies),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests_name("sim_ops", tests, setup, teardown);
}
