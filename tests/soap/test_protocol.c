/* tests/soap/test_protocol.c - SOAP behind the engine's protocol interface
 * (soap/protocol.c, marketo/protocol.h): requests built, answers read. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "marketo/protocol.h"
#include "soap/soap.h"
#include "tests/soap/support.h"

#define ENDPOINT "http://127.0.0.1:9/soap/mktows/2_3"
#define USER "proto_user"
#define KEY "proto-secret-key"

static mkto_protocol *proto(size_t max_response)
{
    mkto_protocol *p = soap_protocol_new(ENDPOINT, USER, KEY, max_response);
    assert_non_null(p);
    return p;
}

/* Whether req has header line h. */
static bool has_header(const mkto_request *req, const char *h)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i], h) == 0)
            return true;
    return false;
}

static void test_limits_and_names(void **state)
{
    (void)state;
    mkto_protocol *p = proto(0);
    assert_string_equal(p->name, "soap");
    assert_string_equal(p->op_names[MKTO_OP_GET_LEADS], "getMultipleLeads");
    assert_string_equal(p->op_names[MKTO_OP_SYNC_LEADS], "syncMultipleLeads");
    assert_int_equal(p->max_keys_per_call, 100);
    assert_int_equal(p->max_sync_per_call, 300);
    assert_int_equal(p->max_batch_size, 1000);
    assert_int_equal(p->max_response, SOAP_DEFAULT_MAX_RESPONSE);
    mkto_protocol_free(p);
    assert_null(soap_protocol_new("", USER, KEY, 0));
}

static void test_build_get_leads(void **state)
{
    (void)state;
    mkto_protocol *p = proto(0);
    const char *keys[] = {"a@x.io", "b@x.io"};
    mkto_query q = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                    .nkeys = 2, .batch_size = 1000};
    mkto_call call = {.op = MKTO_OP_GET_LEADS, .query = &q};
    mkto_request req = {0};
    mkto_err err = {{0}};
    assert_int_equal(p->ops->build(p, &call, &req, &err), 0);
    assert_string_equal(req.method, "POST");
    assert_string_equal(req.url, ENDPOINT);
    assert_true(has_header(&req, "Content-Type: text/xml; charset=UTF-8"));
    assert_true(has_header(&req, "SOAPAction: \"\""));
    assert_non_null(req.body);
    assert_int_equal(strlen(req.body), req.body_len);
    /* a signed envelope for the user, without the secret */
    assert_non_null(strstr(req.body, "<mktowsUserId>" USER "</mktowsUserId>"));
    assert_non_null(strstr(req.body, "requestSignature"));
    assert_non_null(strstr(req.body, "paramsGetMultipleLeads"));
    assert_non_null(strstr(req.body, "b@x.io"));
    assert_null(strstr(req.body, KEY));
    xmlDocPtr doc = xmlReadMemory(req.body, (int)req.body_len, NULL, NULL, XML_PARSE_NONET);
    assert_non_null(doc);
    xmlFreeDoc(doc);
    mkto_request_clear(&req);
    assert_null(req.url);
    assert_int_equal(req.nheaders, 0);

    /* input XML cannot carry: refused, nothing to send */
    const char *bad[] = {"a\x01@x.io"};
    q.keys = bad;
    q.nkeys = 1;
    assert_int_equal(p->ops->build(p, &call, &req, &err), -1);
    assert_true(err.msg[0] != '\0');
    assert_null(req.body);
    assert_null(req.url);
    mkto_protocol_free(p);
}

static void test_build_sync(void **state)
{
    (void)state;
    mkto_protocol *p = proto(0);
    mkto_attr attr = {.name = "FirstName", .value = "Ada"};
    mkto_lead lead = {.email = "ada@x.io", .attrs = &attr, .nattrs = 1};
    mkto_call call = {.op = MKTO_OP_SYNC_LEADS, .leads = &lead, .nleads = 1, .dedup = true};
    mkto_request req = {0};
    mkto_err err = {{0}};
    assert_int_equal(p->ops->build(p, &call, &req, &err), 0);
    assert_non_null(strstr(req.body, "paramsSyncMultipleLeads"));
    assert_non_null(strstr(req.body, "<dedupEnabled>true</dedupEnabled>"));
    assert_non_null(strstr(req.body, "ada@x.io"));
    mkto_request_clear(&req);
    mkto_protocol_free(p);
}

static void test_parse_answers(void **state)
{
    (void)state;
    mkto_protocol *p = proto(0);
    mkto_leads leads = {0};
    mkto_sync_result sync = {0};
    mkto_fault fault = {0};
    mkto_answer ans = {.leads = &leads, .sync = &sync, .fault = &fault};
    mkto_err err = {{0}};
    size_t len = 0;

    char *body = ts_fixture("get_multiple_page.xml", &len);
    assert_int_equal(p->ops->parse(p, MKTO_OP_GET_LEADS, 200, body, len, &ans, &err),
                     MKTO_PARSED_OK);
    assert_true(leads.nleads > 0);
    mkto_leads_clear(&leads);
    free(body);

    body = ts_fixture("sync_multiple_failed.xml", &len);
    assert_int_equal(p->ops->parse(p, MKTO_OP_SYNC_LEADS, 200, body, len, &ans, &err),
                     MKTO_PARSED_OK);
    assert_true(sync.nstatuses > 0);
    mkto_sync_result_clear(&sync);
    free(body);

    body = ts_fixture("fault_20023.xml", &len);
    assert_int_equal(p->ops->parse(p, MKTO_OP_GET_LEADS, 500, body, len, &ans, &err),
                     MKTO_PARSED_FAULT);
    assert_int_equal(fault.code, 20023);
    assert_int_equal(leads.nleads, 0);
    mkto_fault_clear(&fault);
    free(body);

    body = ts_fixture("html_503.html", &len);
    assert_int_equal(p->ops->parse(p, MKTO_OP_GET_LEADS, 503, body, len, &ans, &err),
                     MKTO_PARSED_FOREIGN);
    assert_true(err.msg[0] != '\0');
    free(body);

    body = ts_fixture("xxe.xml", &len);
    assert_int_equal(p->ops->parse(p, MKTO_OP_GET_LEADS, 200, body, len, &ans, &err),
                     MKTO_PARSED_FOREIGN);
    free(body);
    mkto_protocol_free(p);

    /* the response cap is the protocol's */
    p = proto(64);
    body = ts_fixture("get_multiple_page.xml", &len);
    assert_true(len > 64);
    assert_int_equal(p->ops->parse(p, MKTO_OP_GET_LEADS, 200, body, len, &ans, &err),
                     MKTO_PARSED_TOO_LARGE);
    assert_int_equal(leads.nleads, 0);
    free(body);
    mkto_protocol_free(p);
}

int main(void)
{
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_and_names),
        cmocka_unit_test(test_build_get_leads),
        cmocka_unit_test(test_build_sync),
        cmocka_unit_test(test_parse_answers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
