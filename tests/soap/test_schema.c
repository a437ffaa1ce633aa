/* tests/soap/test_schema.c - every envelope the builders produce is valid
 * against the WSDL's own XML Schema.
 *
 * The schema is taken from $MKTO_SHARED_DIR/mktows.wsdl at run time:
 * wsdl:types/xs:schema is copied into a document of its own, with the
 * namespace declarations of the WSDL root element (tns, xs, ...) copied onto its
 * root because QName attribute values (type="tns:LeadKey") use them. Each
 * envelope's AuthenticationHeader and Body child are validated with
 * xmlSchemaValidateOneElement. Without the reference the whole program
 * reports itself skipped.
 */
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
#include <libxml/xmlschemas.h>

#include "soap/soap.h"
#include "support.h"

#define WSDL_NS "http://schemas.xmlsoap.org/wsdl/"
#define XS_NS "http://www.w3.org/2001/XMLSchema"

/* The compiled schema, shared by all tests. */
static xmlSchemaPtr schema;
/* The last validation error, for failure messages. */
static char last_error[512];

static const soap_auth auth = {
    .user_id = "demo17_1_809934544BFABAE58E5D27",
    .encryption_key = "k",
    .timestamp = "2013-08-02T15:47:06-07:00",
};

/* Validation error sink: keeps the first message of a run. */
static void on_error(void *ctx, xmlErrorPtr e)
{
    (void)ctx;
    if (last_error[0] == '\0' && e != NULL && e->message != NULL)
        snprintf(last_error, sizeof(last_error), "line %d: %s", e->line, e->message);
}

/* Loads and compiles the WSDL's schema. */
static int setup(void **state)
{
    (void)state;
    const char *why;
    const char *dir = ts_shared_dir(&why);
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof(path), "%s/mktows.wsdl", dir);
    /* Read into memory: soap_init()'s entity loader refuses every URL,
     * files included. */
    size_t len;
    char *text = ts_read_file(path, &len);
    assert_non_null(text);
    xmlDocPtr wsdl = xmlReadMemory(text, (int)len, "mktows.wsdl", NULL, XML_PARSE_NONET);
    free(text);
    assert_non_null(wsdl);
    xmlNode *defs = xmlDocGetRootElement(wsdl);
    xmlNode *types = ts_child(defs, WSDL_NS, "types");
    assert_non_null(types);
    xmlNode *xs = ts_child(types, XS_NS, "schema");
    assert_non_null(xs);

    xmlDocPtr sdoc = xmlNewDoc(BAD_CAST "1.0");
    xmlNode *root = xmlDocCopyNode(xs, sdoc, 1);
    assert_non_null(root);
    xmlDocSetRootElement(sdoc, root);
    for (xmlNs *ns = defs->nsDef; ns != NULL; ns = ns->next) {
        bool have = false;
        for (xmlNs *r = root->nsDef; r != NULL; r = r->next) {
            if (xmlStrEqual(r->prefix, ns->prefix))
                have = true;
        }
        if (!have)
            xmlNewNs(root, ns->href, ns->prefix);
    }
    xmlFreeDoc(wsdl);

    xmlSchemaParserCtxtPtr pctx = xmlSchemaNewDocParserCtxt(sdoc);
    assert_non_null(pctx);
    last_error[0] = '\0';
    xmlSchemaSetParserStructuredErrors(pctx, on_error, NULL);
    schema = xmlSchemaParse(pctx);
    xmlSchemaFreeParserCtxt(pctx);
    if (schema == NULL)
        fail_msg("the WSDL's schema does not compile: %s", last_error);
    xmlFreeDoc(sdoc);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    xmlSchemaFree(schema);
    schema = NULL;
    return 0;
}

/* Validates one element in place; returns 0 when valid. */
static int validate(xmlNode *elem)
{
    xmlSchemaValidCtxtPtr v = xmlSchemaNewValidCtxt(schema);
    assert_non_null(v);
    last_error[0] = '\0';
    xmlSchemaSetValidStructuredErrors(v, on_error, NULL);
    int rc = xmlSchemaValidateOneElement(v, elem);
    xmlSchemaFreeValidCtxt(v);
    return rc;
}

/* Parses an envelope, validates its AuthenticationHeader and Body child;
 * returns the document (caller frees) for further mutation. */
static xmlDocPtr check_valid(char *xml, size_t len)
{
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, NULL, NULL, XML_PARSE_NONET);
    assert_non_null(doc);
    free(xml);
    xmlNode *hdr = ts_child(xmlDocGetRootElement(doc), SOAP_ENV_NS, "Header");
    xmlNode *ah = ts_child(hdr, SOAP_NS, "AuthenticationHeader");
    assert_non_null(ah);
    if (validate(ah) != 0)
        fail_msg("AuthenticationHeader invalid: %s", last_error);
    xmlNode *body = ts_body_child(doc);
    assert_non_null(body);
    if (validate(body) != 0)
        fail_msg("%s invalid: %s", body->name, last_error);
    return doc;
}

static void test_schema_get_lead(void **state)
{
    (void)state;
    for (int t = 0; t < MKTO_KEY__COUNT; t++) {
        char *xml;
        size_t len;
        assert_int_equal(soap_build_get_lead(&auth, (mkto_key_type)t, "v&<>", &xml, &len, NULL),
                         SOAP_OK);
        xmlFreeDoc(check_valid(xml, len));
    }
}

static void test_schema_get_multiple(void **state)
{
    (void)state;
    const char *keys[] = {"a@b.c", "d@e.f", "1234"};
    const char *attrs[] = {"FirstName", "LeadScore"};
    char *xml;
    size_t len;
    /* Key selector with each key type, minimal and full. */
    for (int t = 0; t < MKTO_KEY__COUNT; t++) {
        mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = (mkto_key_type)t,
                               .keys = keys, .nkeys = 3};
        assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
        xmlFreeDoc(check_valid(xml, len));
        p.stream_position = "c3RyZWFt";
        p.batch_size = 1000;
        p.attrs = attrs;
        p.nattrs = 2;
        assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
        xmlFreeDoc(check_valid(xml, len));
    }
    /* Static list by name, by id, by both, with paging fields. */
    mkto_query sl[] = {
        {.kind = MKTO_SEL_STATIC_LIST, .list_name = "My List"},
        {.kind = MKTO_SEL_STATIC_LIST, .list_id = 1001},
        {.kind = MKTO_SEL_STATIC_LIST, .list_name = "L", .list_id = 7, .batch_size = 10,
         .stream_position = "x", .attrs = attrs, .nattrs = 1},
    };
    for (size_t i = 0; i < sizeof(sl) / sizeof(sl[0]); i++) {
        assert_int_equal(soap_build_get_multiple_leads(&auth, &sl[i], &xml, &len, NULL),
                         SOAP_OK);
        xmlFreeDoc(check_valid(xml, len));
    }
    /* Updated-at with and without its latest end. */
    mkto_query ua[] = {
        {.kind = MKTO_SEL_UPDATED_AT, .oldest_updated_at = "2013-07-01T00:00:00-07:00"},
        {.kind = MKTO_SEL_UPDATED_AT, .oldest_updated_at = "2013-07-01T00:00:00Z",
         .latest_updated_at = "2013-07-20T12:00:00.5+02:00", .batch_size = 500,
         .stream_position = "p", .attrs = attrs, .nattrs = 2},
    };
    for (size_t i = 0; i < sizeof(ua) / sizeof(ua[0]); i++) {
        assert_int_equal(soap_build_get_multiple_leads(&auth, &ua[i], &xml, &len, NULL),
                         SOAP_OK);
        xmlFreeDoc(check_valid(xml, len));
    }
}

static void test_schema_sync(void **state)
{
    (void)state;
    mkto_attr attrs[] = {{.name = "FirstName", .type = "string", .value = "George"},
                         {.name = "Blank", .value = NULL}};
    mkto_lead full = {.has_id = true, .id = 42, .email = "a@b.c",
                      .foreign_sys_person_id = "F1", .foreign_sys_type = "NETSUITE",
                      .attrs = attrs, .nattrs = 2};
    mkto_lead email_only = {.email = "t@t.com"};
    char *xml;
    size_t len;
    assert_int_equal(soap_build_sync_lead(&auth, &full, true, "cookie", &xml, &len, NULL),
                     SOAP_OK);
    xmlFreeDoc(check_valid(xml, len));
    assert_int_equal(soap_build_sync_lead(&auth, &email_only, false, NULL, &xml, &len, NULL),
                     SOAP_OK);
    xmlFreeDoc(check_valid(xml, len));

    mkto_lead leads[] = {full, email_only, {.foreign_sys_person_id = "X", .foreign_sys_type =
                                                                            "CUSTOM"}};
    assert_int_equal(soap_build_sync_multiple_leads(&auth, leads, 3, true, &xml, &len, NULL),
                     SOAP_OK);
    xmlFreeDoc(check_valid(xml, len));
    assert_int_equal(soap_build_sync_multiple_leads(&auth, leads, 1, false, &xml, &len, NULL),
                     SOAP_OK);
    xmlFreeDoc(check_valid(xml, len));
}

static void test_schema_bites(void **state)
{
    (void)state;
    const char *keys[] = {"a@b.c"};
    mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                           .nkeys = 1};
    char *xml;
    size_t len;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    xmlDocPtr doc = check_valid(xml, len);
    /* Without xsi:type the selector is the abstract LeadSelector. */
    xmlNode *params = ts_body_child(doc);
    xmlNode *sel = ts_child(params, NULL, "leadSelector");
    xmlNs *xsi = xmlSearchNsByHref(doc, sel, BAD_CAST SOAP_XSI_NS);
    assert_int_equal(xmlUnsetNsProp(sel, xsi, BAD_CAST "type"), 0);
    assert_int_not_equal(validate(params), 0);
    if (strstr(last_error, "abstract") == NULL)
        fail_msg("unexpected error: %s", last_error);
    xmlFreeDoc(doc);

    /* oldestUpdatedAt before latestUpdatedAt breaks the sequence. */
    mkto_query ua = {.kind = MKTO_SEL_UPDATED_AT,
                            .oldest_updated_at = "2013-07-01T00:00:00Z",
                            .latest_updated_at = "2013-07-02T00:00:00Z"};
    assert_int_equal(soap_build_get_multiple_leads(&auth, &ua, &xml, &len, NULL), SOAP_OK);
    doc = check_valid(xml, len);
    params = ts_body_child(doc);
    sel = ts_child(params, NULL, "leadSelector");
    xmlNode *latest = ts_child(sel, NULL, "latestUpdatedAt");
    xmlNode *oldest = ts_child(sel, NULL, "oldestUpdatedAt");
    assert_non_null(latest);
    assert_non_null(oldest);
    xmlUnlinkNode(oldest);
    xmlAddPrevSibling(latest, oldest);
    assert_int_not_equal(validate(params), 0);
    xmlFreeDoc(doc);

    /* A qualified child (ns1:leadKey) is not what the schema says. */
    assert_int_equal(soap_build_get_lead(&auth, MKTO_KEY_IDNUM, "1", &xml, &len, NULL), SOAP_OK);
    doc = check_valid(xml, len);
    params = ts_body_child(doc);
    xmlSetNs(ts_child(params, NULL, "leadKey"), params->ns);
    assert_int_not_equal(validate(params), 0);
    xmlFreeDoc(doc);

    /* A header missing its signature is invalid. */
    assert_int_equal(soap_build_get_lead(&auth, MKTO_KEY_IDNUM, "1", &xml, &len, NULL), SOAP_OK);
    doc = check_valid(xml, len);
    xmlNode *ah = ts_child(ts_child(xmlDocGetRootElement(doc), SOAP_ENV_NS, "Header"), SOAP_NS,
                           "AuthenticationHeader");
    xmlNode *sig = ts_child(ah, NULL, "requestSignature");
    xmlUnlinkNode(sig);
    xmlFreeNode(sig);
    assert_int_not_equal(validate(ah), 0);
    xmlFreeDoc(doc);
}

int main(void)
{
    if (ts_skip_without_shared())
        return 0;
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_get_lead),
        cmocka_unit_test(test_schema_get_multiple),
        cmocka_unit_test(test_schema_sync),
        cmocka_unit_test(test_schema_bites),
    };
    int rc = cmocka_run_group_tests_name("soap_schema", tests, setup, teardown);
    soap_cleanup();
    return rc;
}
