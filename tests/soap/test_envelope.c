/* tests/soap/test_envelope.c - request envelopes: layout, order, escaping,
 * input validation. Each envelope is parsed back with libxml2 and checked
 * by namespace and element order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "soap/soap.h"
#include "support.h"

/* Fixed credentials used by most tests. */
static const soap_auth auth = {
    .user_id = "demo17_1_809934544BFABAE58E5D27",
    .encryption_key = "not-the-docs-key",
    .timestamp = "2013-08-02T15:47:06-07:00",
};

/* Parses an envelope with plain libxml2 (fails the test if malformed). */
static xmlDocPtr reparse(const char *xml, size_t len)
{
    assert_int_equal(strlen(xml), len);
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, NULL, NULL, XML_PARSE_NONET);
    assert_non_null(doc);
    return doc;
}

/* Asserts node's element children have exactly these local names, all
 * unqualified, in this order. */
static void assert_children(const xmlNode *node, const char *const *names, size_t n)
{
    size_t i = 0;
    for (const xmlNode *c = node->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (i >= n)
            fail_msg("%s: unexpected extra child %s", node->name, c->name);
        if (strcmp((const char *)c->name, names[i]) != 0)
            fail_msg("%s: child %zu is %s, want %s", node->name, i, c->name, names[i]);
        if (c->ns != NULL)
            fail_msg("%s: child %s is qualified", node->name, c->name);
        i++;
    }
    if (i != n)
        fail_msg("%s: %zu children, want %zu", node->name, i, n);
}

/* Text content of node's child named local (must exist), as a static copy. */
static const char *text(const xmlNode *node, const char *local)
{
    static char buf[4][2048];
    static int slot;
    xmlNode *c = ts_child(node, NULL, local);
    if (c == NULL)
        fail_msg("%s has no %s", node->name, local);
    xmlChar *t = xmlNodeGetContent(c);
    char *out = buf[slot++ % 4];
    snprintf(out, sizeof(buf[0]), "%s", (const char *)t);
    xmlFree(t);
    return out;
}

/* Checks the envelope, its namespaces and the header; returns the params
 * element after checking its qualified name. */
static xmlNode *check_envelope(xmlDocPtr doc, const char *xml, const soap_auth *a,
                               const char *params)
{
    assert_true(strncmp(xml, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>", 38) == 0);
    /* Lean: no pretty printing after the declaration. */
    assert_null(strchr(strchr(xml, '>') + 2, '\n'));

    xmlNode *env = xmlDocGetRootElement(doc);
    assert_string_equal((const char *)env->name, "Envelope");
    assert_non_null(env->ns);
    assert_string_equal((const char *)env->ns->href, SOAP_ENV_NS);
    assert_string_equal((const char *)env->ns->prefix, "SOAP-ENV");
    xmlNs *ns1 = xmlSearchNs(doc, env, BAD_CAST "ns1");
    xmlNs *xsi = xmlSearchNs(doc, env, BAD_CAST "xsi");
    assert_non_null(ns1);
    assert_non_null(xsi);
    assert_string_equal((const char *)ns1->href, SOAP_NS);
    assert_string_equal((const char *)xsi->href, SOAP_XSI_NS);

    xmlNode *hdr = ts_child(env, SOAP_ENV_NS, "Header");
    assert_non_null(hdr);
    xmlNode *ah = ts_child(hdr, SOAP_NS, "AuthenticationHeader");
    assert_non_null(ah);
    assert_string_equal((const char *)ah->ns->prefix, "ns1");
    static const char *const hnames[] = {"mktowsUserId", "requestSignature", "requestTimestamp"};
    assert_children(ah, hnames, 3);
    assert_string_equal(text(ah, "mktowsUserId"), a->user_id);
    const char *ts = text(ah, "requestTimestamp");
    if (a->timestamp != NULL)
        assert_string_equal(ts, a->timestamp);
    char sig[SOAP_SIGNATURE_LEN];
    assert_int_equal(soap_sign(a->encryption_key, ts, a->user_id, sig), SOAP_OK);
    assert_string_equal(text(ah, "requestSignature"), sig);
    /* The key itself never appears. */
    assert_null(strstr(xml, a->encryption_key));

    xmlNode *p = ts_body_child(doc);
    assert_non_null(p);
    assert_string_equal((const char *)p->name, params);
    assert_non_null(p->ns);
    assert_string_equal((const char *)p->ns->href, SOAP_NS);
    assert_string_equal((const char *)p->ns->prefix, "ns1");
    return p;
}

/* xsi:type of node as written (prefixed). */
static void assert_xsi_type(const xmlNode *node, const char *want)
{
    xmlChar *v = xmlGetNsProp(node, BAD_CAST "type", BAD_CAST SOAP_XSI_NS);
    assert_non_null(v);
    assert_string_equal((const char *)v, want);
    xmlFree(v);
}

static void test_get_lead(void **state)
{
    (void)state;
    char *xml = NULL;
    size_t len = 0;
    soap_err err;
    assert_int_equal(soap_build_get_lead(&auth, MKTO_KEY_EMAIL, "rufus@marketo.com", &xml, &len,
                                         &err),
                     SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *p = check_envelope(doc, xml, &auth, "paramsGetLead");
    static const char *const pn[] = {"leadKey"};
    assert_children(p, pn, 1);
    xmlNode *lk = ts_child(p, NULL, "leadKey");
    static const char *const kn[] = {"keyType", "keyValue"};
    assert_children(lk, kn, 2);
    assert_string_equal(text(lk, "keyType"), "EMAIL");
    assert_string_equal(text(lk, "keyValue"), "rufus@marketo.com");
    xmlFreeDoc(doc);
    free(xml);

    /* Every key type is spelled as in the WSDL. */
    for (int t = 0; t < MKTO_KEY__COUNT; t++) {
        assert_int_equal(soap_build_get_lead(&auth, (mkto_key_type)t, "v", &xml, &len, NULL),
                         SOAP_OK);
        doc = reparse(xml, len);
        lk = ts_child(ts_body_child(doc), NULL, "leadKey");
        assert_string_equal(text(lk, "keyType"), mkto_key_type_name((mkto_key_type)t));
        xmlFreeDoc(doc);
        free(xml);
    }
}

static void test_timestamp_now_is_signed(void **state)
{
    (void)state;
    soap_auth a = auth;
    a.timestamp = NULL;
    char *xml = NULL;
    size_t len = 0;
    time_t before = time(NULL);
    assert_int_equal(soap_build_get_lead(&a, MKTO_KEY_IDNUM, "42", &xml, &len, NULL), SOAP_OK);
    time_t after = time(NULL);
    xmlDocPtr doc = reparse(xml, len);
    /* check_envelope verifies the signature over the timestamp sent. */
    check_envelope(doc, xml, &a, "paramsGetLead");
    xmlChar *ts = ts_text_of(xmlDocGetRootElement(doc), "requestTimestamp");
    time_t t;
    assert_int_equal(soap_timestamp_parse((const char *)ts, &t), SOAP_OK);
    assert_true(t >= before && t <= after);
    xmlFree(ts);
    xmlFreeDoc(doc);
    free(xml);
}

static void test_get_multiple_keys(void **state)
{
    (void)state;
    const char *keys[] = {"formtest1@marketo.com", "joe@marketo.com"};
    const char *attrs[] = {"FirstName", "LastName", "Email"};
    mkto_query p = {
        .kind = MKTO_SEL_KEYS,
        .key_type = MKTO_KEY_EMAIL,
        .keys = keys,
        .nkeys = 2,
        .stream_position = "abc==",
        .batch_size = 100,
        .attrs = attrs,
        .nattrs = 3,
    };
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *pm = check_envelope(doc, xml, &auth, "paramsGetMultipleLeads");
    static const char *const pn[] = {"leadSelector", "streamPosition", "batchSize",
                                     "includeAttributes"};
    assert_children(pm, pn, 4);
    xmlNode *sel = ts_child(pm, NULL, "leadSelector");
    assert_xsi_type(sel, "ns1:LeadKeySelector");
    static const char *const sn[] = {"keyType", "keyValues"};
    assert_children(sel, sn, 2);
    assert_string_equal(text(sel, "keyType"), "EMAIL");
    xmlNode *kv = ts_child(sel, NULL, "keyValues");
    static const char *const kn[] = {"stringItem", "stringItem"};
    assert_children(kv, kn, 2);
    assert_string_equal((const char *)kv->children->children->content, "formtest1@marketo.com");
    assert_string_equal(text(pm, "streamPosition"), "abc==");
    assert_string_equal(text(pm, "batchSize"), "100");
    xmlNode *ia = ts_child(pm, NULL, "includeAttributes");
    static const char *const in[] = {"stringItem", "stringItem", "stringItem"};
    assert_children(ia, in, 3);
    xmlFreeDoc(doc);
    free(xml);

    /* Minimal: no stream position (NULL or ""), no batch size, no attrs. */
    p.stream_position = "";
    p.batch_size = 0;
    p.attrs = NULL;
    p.nattrs = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    pm = ts_body_child(doc);
    static const char *const pn2[] = {"leadSelector"};
    assert_children(pm, pn2, 1);
    xmlFreeDoc(doc);
    free(xml);

    /* 100 keys is the maximum and fine. */
    const char *many[SOAP_MAX_KEYS_PER_CALL];
    for (int i = 0; i < SOAP_MAX_KEYS_PER_CALL; i++)
        many[i] = "k";
    p.keys = many;
    p.nkeys = SOAP_MAX_KEYS_PER_CALL;
    p.batch_size = SOAP_MAX_BATCH_SIZE;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    kv = ts_child(ts_child(ts_body_child(doc), NULL, "leadSelector"), NULL, "keyValues");
    assert_int_equal(xmlChildElementCount(kv), SOAP_MAX_KEYS_PER_CALL);
    xmlFreeDoc(doc);
    free(xml);
}

static void test_get_multiple_static_list(void **state)
{
    (void)state;
    mkto_query p = {.kind = MKTO_SEL_STATIC_LIST, .list_name = "My List", .list_id = 77};
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *sel = ts_child(check_envelope(doc, xml, &auth, "paramsGetMultipleLeads"), NULL,
                            "leadSelector");
    assert_xsi_type(sel, "ns1:StaticListSelector");
    static const char *const both[] = {"staticListName", "staticListId"};
    assert_children(sel, both, 2);
    assert_string_equal(text(sel, "staticListName"), "My List");
    assert_string_equal(text(sel, "staticListId"), "77");
    xmlFreeDoc(doc);
    free(xml);

    p.list_name = NULL;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    sel = ts_child(ts_body_child(doc), NULL, "leadSelector");
    static const char *const idonly[] = {"staticListId"};
    assert_children(sel, idonly, 1);
    xmlFreeDoc(doc);
    free(xml);

    p.list_name = "L";
    p.list_id = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    sel = ts_child(ts_body_child(doc), NULL, "leadSelector");
    static const char *const nameonly[] = {"staticListName"};
    assert_children(sel, nameonly, 1);
    xmlFreeDoc(doc);
    free(xml);
}

static void test_get_multiple_updated_at(void **state)
{
    (void)state;
    mkto_query p = {
        .kind = MKTO_SEL_UPDATED_AT,
        .oldest_updated_at = "2013-07-01T00:00:00-07:00",
        .latest_updated_at = "2013-07-20T00:00:00Z",
        .batch_size = 10,
    };
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *pm = check_envelope(doc, xml, &auth, "paramsGetMultipleLeads");
    xmlNode *sel = ts_child(pm, NULL, "leadSelector");
    assert_xsi_type(sel, "ns1:LastUpdateAtSelector");
    static const char *const both[] = {"latestUpdatedAt", "oldestUpdatedAt"};
    assert_children(sel, both, 2);
    assert_string_equal(text(sel, "oldestUpdatedAt"), "2013-07-01T00:00:00-07:00");
    assert_string_equal(text(sel, "latestUpdatedAt"), "2013-07-20T00:00:00Z");
    static const char *const pn[] = {"leadSelector", "batchSize"};
    assert_children(pm, pn, 2);
    xmlFreeDoc(doc);
    free(xml);

    p.latest_updated_at = NULL;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    sel = ts_child(ts_body_child(doc), NULL, "leadSelector");
    static const char *const oldest[] = {"oldestUpdatedAt"};
    assert_children(sel, oldest, 1);
    xmlFreeDoc(doc);
    free(xml);
}

static void test_sync_lead(void **state)
{
    (void)state;
    mkto_attr attrs[] = {
        {.name = "FirstName", .type = "string", .value = "George"},
        {.name = "LastName", .value = "of the Jungle"},
        {.name = "Blank", .value = NULL},
    };
    mkto_lead l = {
        .has_id = true,
        .id = 1089965,
        .email = "t@t.com",
        .foreign_sys_person_id = "F-1",
        .foreign_sys_type = "SFDC",
        .attrs = attrs,
        .nattrs = 3,
    };
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_sync_lead(&auth, &l, true, "id:561-HYG-937&token:_mch-x", &xml,
                                          &len, NULL),
                     SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *p = check_envelope(doc, xml, &auth, "paramsSyncLead");
    static const char *const pn[] = {"leadRecord", "returnLead", "marketoCookie"};
    assert_children(p, pn, 3);
    assert_string_equal(text(p, "returnLead"), "true");
    assert_string_equal(text(p, "marketoCookie"), "id:561-HYG-937&token:_mch-x");
    xmlNode *lr = ts_child(p, NULL, "leadRecord");
    static const char *const ln[] = {"Id", "Email", "ForeignSysPersonId", "ForeignSysType",
                                     "leadAttributeList"};
    assert_children(lr, ln, 5);
    assert_string_equal(text(lr, "Id"), "1089965");
    assert_string_equal(text(lr, "Email"), "t@t.com");
    assert_string_equal(text(lr, "ForeignSysPersonId"), "F-1");
    assert_string_equal(text(lr, "ForeignSysType"), "SFDC");
    xmlNode *al = ts_child(lr, NULL, "leadAttributeList");
    static const char *const an[] = {"attribute", "attribute", "attribute"};
    assert_children(al, an, 3);
    xmlNode *a0 = ts_child(al, NULL, "attribute");
    /* Types are never sent. */
    static const char *const a0n[] = {"attrName", "attrValue"};
    assert_children(a0, a0n, 2);
    assert_string_equal(text(a0, "attrName"), "FirstName");
    assert_string_equal(text(a0, "attrValue"), "George");
    assert_null(strstr(xml, "attrType"));
    /* A NULL value goes out as an empty attrValue. */
    xmlNode *a2 = xmlLastElementChild(al);
    assert_string_equal(text(a2, "attrName"), "Blank");
    assert_string_equal(text(a2, "attrValue"), "");
    xmlFreeDoc(doc);
    free(xml);

    /* Email only, no cookie, returnLead false, no attributes. */
    mkto_lead e = {.email = "t@t.com"};
    assert_int_equal(soap_build_sync_lead(&auth, &e, false, NULL, &xml, &len, NULL), SOAP_OK);
    doc = reparse(xml, len);
    p = ts_body_child(doc);
    static const char *const pn2[] = {"leadRecord", "returnLead"};
    assert_children(p, pn2, 2);
    assert_string_equal(text(p, "returnLead"), "false");
    static const char *const ln2[] = {"Email"};
    assert_children(ts_child(p, NULL, "leadRecord"), ln2, 1);
    xmlFreeDoc(doc);
    free(xml);
}

static void test_sync_multiple(void **state)
{
    (void)state;
    mkto_attr a1[] = {{.name = "Company", .value = "Marketo1000"},
                      {.name = "Phone", .value = "650-555-1000"}};
    mkto_attr a2[] = {{.name = "Company", .value = "Marketo1001"}};
    mkto_lead leads[] = {
        {.email = "em1000@etestd.marketo.net", .attrs = a1, .nattrs = 2},
        {.has_id = true, .id = 5, .attrs = a2, .nattrs = 1},
        {.foreign_sys_person_id = "X9", .foreign_sys_type = "CUSTOM"},
    };
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_sync_multiple_leads(&auth, leads, 3, true, &xml, &len, NULL),
                     SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *p = check_envelope(doc, xml, &auth, "paramsSyncMultipleLeads");
    static const char *const pn[] = {"leadRecordList", "dedupEnabled"};
    assert_children(p, pn, 2);
    assert_string_equal(text(p, "dedupEnabled"), "true");
    xmlNode *list = ts_child(p, NULL, "leadRecordList");
    static const char *const rn[] = {"leadRecord", "leadRecord", "leadRecord"};
    assert_children(list, rn, 3);
    xmlNode *r = xmlFirstElementChild(list);
    static const char *const r0[] = {"Email", "leadAttributeList"};
    assert_children(r, r0, 2);
    r = xmlNextElementSibling(r);
    static const char *const r1[] = {"Id", "leadAttributeList"};
    assert_children(r, r1, 2);
    assert_string_equal(text(r, "Id"), "5");
    r = xmlNextElementSibling(r);
    static const char *const r2[] = {"ForeignSysPersonId", "ForeignSysType"};
    assert_children(r, r2, 2);
    xmlFreeDoc(doc);
    free(xml);

    assert_int_equal(soap_build_sync_multiple_leads(&auth, leads, 1, false, &xml, &len, NULL),
                     SOAP_OK);
    doc = reparse(xml, len);
    assert_string_equal(text(ts_body_child(doc), "dedupEnabled"), "false");
    xmlFreeDoc(doc);
    free(xml);

    /* 300 records is the maximum and fine. */
    mkto_lead *many = calloc(SOAP_MAX_SYNC_PER_CALL, sizeof(*many));
    assert_non_null(many);
    for (int i = 0; i < SOAP_MAX_SYNC_PER_CALL; i++) {
        many[i].email = "x@y.z";
        many[i].attrs = a1;
        many[i].nattrs = 2;
    }
    assert_int_equal(
        soap_build_sync_multiple_leads(&auth, many, SOAP_MAX_SYNC_PER_CALL, true, &xml, &len, NULL),
        SOAP_OK);
    doc = reparse(xml, len);
    list = ts_child(ts_body_child(doc), NULL, "leadRecordList");
    assert_int_equal(xmlChildElementCount(list), SOAP_MAX_SYNC_PER_CALL);
    xmlFreeDoc(doc);
    free(xml);
    free(many);
}

/* Asserts a builder call failed with SOAP_ERR_INVALID, left *out NULL,
 * named field in its message and did not echo value. */
#define ASSERT_INVALID(call, field, value)                                        \
    do {                                                                          \
        char *o_ = (char *)"sentinel";                                            \
        size_t l_ = 99;                                                           \
        soap_err e_ = {0};                                                        \
        xml_out = &o_;                                                            \
        len_out = &l_;                                                            \
        err_out = &e_;                                                            \
        assert_int_equal((call), SOAP_ERR_INVALID);                               \
        assert_null(o_);                                                          \
        assert_int_equal(l_, 0);                                                  \
        assert_int_equal(e_.code, SOAP_ERR_INVALID);                              \
        check_msg(&e_, (field), (value));                                         \
    } while (0)

/* Fails unless err names field and does not contain value (may be NULL). */
static void check_msg(const soap_err *e, const char *field, const char *value)
{
    if (strstr(e->msg, field) == NULL)
        fail_msg("message '%s' does not name %s", e->msg, field);
    if (value != NULL && value[0] != '\0' && strstr(e->msg, value) != NULL)
        fail_msg("message '%s' echoes the value", e->msg);
}

static char **xml_out;
static size_t *len_out;
static soap_err *err_out;

static void test_invalid_input(void **state)
{
    (void)state;
    static const char *const bad_values[] = {
        "ctl\x01here",           /* C0 control */
        "esc\x1b[0m",            /* escape */
        "bad\xffutf8",           /* invalid byte */
        "over\xc0\xaflong",      /* overlong '/' */
        "surr\xed\xa0\x80gate",  /* UTF-16 surrogate */
        "nonchar\xef\xbf\xbe",   /* U+FFFE */
        "trunc\xe6\x97",         /* truncated sequence */
    };
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        const char *v = bad_values[i];
        ASSERT_INVALID(soap_build_get_lead(&auth, MKTO_KEY_EMAIL, v, xml_out, len_out, err_out),
                       "keyValue", v);
        const char *keys[] = {"ok", v};
        mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                               .nkeys = 2};
        ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                       "keyValues[1]", v);
        mkto_attr at[] = {{.name = "A", .value = "ok"}, {.name = "B", .value = (char *)v}};
        mkto_lead l = {.email = "a@b.c", .attrs = at, .nattrs = 2};
        ASSERT_INVALID(soap_build_sync_lead(&auth, &l, false, NULL, xml_out, len_out, err_out),
                       "attrValue[1]", v);
        mkto_lead ls[] = {{.email = "a@b.c"}, {.email = (char *)v}};
        ASSERT_INVALID(
            soap_build_sync_multiple_leads(&auth, ls, 2, true, xml_out, len_out, err_out),
            "leadRecord.Email[1]", v);
        soap_auth a = auth;
        a.user_id = v;
        ASSERT_INVALID(soap_build_get_lead(&a, MKTO_KEY_EMAIL, "x", xml_out, len_out, err_out),
                       "mktowsUserId", v);
    }

    /* Structural problems. */
    const char *keys[SOAP_MAX_KEYS_PER_CALL + 1];
    for (int i = 0; i <= SOAP_MAX_KEYS_PER_CALL; i++)
        keys[i] = "k";
    mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_EMAIL, .keys = keys,
                           .nkeys = 0};
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "keyValues", NULL);
    p.nkeys = SOAP_MAX_KEYS_PER_CALL + 1;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "keyValues", NULL);
    p.nkeys = 1;
    p.key_type = MKTO_KEY__COUNT;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "keyType", NULL);
    p.key_type = MKTO_KEY_EMAIL;
    p.batch_size = SOAP_MAX_BATCH_SIZE + 1;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "batchSize", NULL);
    p.batch_size = -1;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "batchSize", NULL);
    p.batch_size = 0;
    p.stream_position = "sp\x02";
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "streamPosition", "sp\x02");
    p.stream_position = NULL;
    const char *attrs[] = {"A", ""};
    p.attrs = attrs;
    p.nattrs = 2;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &p, xml_out, len_out, err_out),
                   "includeAttributes[1]", NULL);

    mkto_query sl = {.kind = MKTO_SEL_STATIC_LIST};
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &sl, xml_out, len_out, err_out),
                   "staticList", NULL);
    sl.list_id = (int64_t)INT32_MAX + 1;
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &sl, xml_out, len_out, err_out),
                   "staticListId", NULL);
    mkto_query ua = {.kind = MKTO_SEL_UPDATED_AT};
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &ua, xml_out, len_out, err_out),
                   "oldestUpdatedAt", NULL);
    ua.oldest_updated_at = "yesterday";
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &ua, xml_out, len_out, err_out),
                   "oldestUpdatedAt", NULL);
    ua.oldest_updated_at = "2013-07-01T00:00:00Z";
    ua.latest_updated_at = "2013-07-01";
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &ua, xml_out, len_out, err_out),
                   "latestUpdatedAt", NULL);
    mkto_query bk = {.kind = (mkto_selector_kind)9};
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, &bk, xml_out, len_out, err_out),
                   "leadSelector", NULL);
    ASSERT_INVALID(soap_build_get_multiple_leads(&auth, NULL, xml_out, len_out, err_out),
                   "parameters", NULL);

    ASSERT_INVALID(soap_build_get_lead(&auth, MKTO_KEY_EMAIL, "", xml_out, len_out, err_out),
                   "keyValue", NULL);
    ASSERT_INVALID(soap_build_get_lead(&auth, MKTO_KEY_EMAIL, NULL, xml_out, len_out, err_out),
                   "keyValue", NULL);
    ASSERT_INVALID(soap_build_get_lead(&auth, (mkto_key_type)-1, "x", xml_out, len_out, err_out),
                   "keyType", NULL);

    mkto_lead none = {.foreign_sys_type = "SFDC"};
    ASSERT_INVALID(soap_build_sync_lead(&auth, &none, false, NULL, xml_out, len_out, err_out),
                   "leadRecord[0]", NULL);
    mkto_lead badtype = {.email = "a@b.c", .foreign_sys_type = "ORACLE"};
    ASSERT_INVALID(soap_build_sync_lead(&auth, &badtype, false, NULL, xml_out, len_out, err_out),
                   "ForeignSysType", NULL);
    mkto_lead badid = {.has_id = true, .id = -3};
    ASSERT_INVALID(soap_build_sync_lead(&auth, &badid, false, NULL, xml_out, len_out, err_out),
                   "Id", NULL);
    mkto_attr noname[] = {{.name = NULL, .value = "v"}};
    mkto_lead nn = {.email = "a@b.c", .attrs = noname, .nattrs = 1};
    ASSERT_INVALID(soap_build_sync_lead(&auth, &nn, false, NULL, xml_out, len_out, err_out),
                   "attrName[0]", NULL);
    mkto_lead ok = {.email = "a@b.c"};
    ASSERT_INVALID(soap_build_sync_lead(&auth, &ok, false, "c\x01", xml_out, len_out, err_out),
                   "marketoCookie", "c\x01");
    ASSERT_INVALID(soap_build_sync_lead(&auth, NULL, false, NULL, xml_out, len_out, err_out),
                   "leadRecord", NULL);

    mkto_lead *many = calloc(SOAP_MAX_SYNC_PER_CALL + 1, sizeof(*many));
    assert_non_null(many);
    for (int i = 0; i <= SOAP_MAX_SYNC_PER_CALL; i++)
        many[i].email = "x@y.z";
    ASSERT_INVALID(soap_build_sync_multiple_leads(&auth, many, SOAP_MAX_SYNC_PER_CALL + 1, true,
                                                  xml_out, len_out, err_out),
                   "leadRecordList", NULL);
    ASSERT_INVALID(
        soap_build_sync_multiple_leads(&auth, many, 0, true, xml_out, len_out, err_out),
        "leadRecordList", NULL);
    many[7].email = NULL;
    ASSERT_INVALID(
        soap_build_sync_multiple_leads(&auth, many, 10, true, xml_out, len_out, err_out),
        "leadRecord[7]", NULL);
    free(many);

    /* Credentials. */
    ASSERT_INVALID(soap_build_get_lead(NULL, MKTO_KEY_EMAIL, "x", xml_out, len_out, err_out),
                   "credentials", NULL);
    soap_auth a = auth;
    a.encryption_key = NULL;
    ASSERT_INVALID(soap_build_get_lead(&a, MKTO_KEY_EMAIL, "x", xml_out, len_out, err_out),
                   "credentials", NULL);
    a = auth;
    a.timestamp = "2013-08-02 15:47";
    ASSERT_INVALID(soap_build_get_lead(&a, MKTO_KEY_EMAIL, "x", xml_out, len_out, err_out),
                   "requestTimestamp", NULL);
    a.timestamp = "2013-08-02T15:47:06.000000000000000000000-07:00";
    ASSERT_INVALID(soap_build_get_lead(&a, MKTO_KEY_EMAIL, "x", xml_out, len_out, err_out),
                   "requestTimestamp", NULL);
}

/* Values with markup characters, CDATA terminators, non-ASCII text and
 * whitespace controls must come back byte for byte. */
static const char *const tricky[] = {
    "<a href=\"x\">&amp;</a>",
    "it's \"quoted\" & <escaped> ]]> done",
    "]]>",
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
    "tab\there\r\nCRLF\rCR\nLF",
    "  leading and trailing  ",
    "&#65; &lt; not entities",
};

static void test_round_trip_values(void **state)
{
    (void)state;
    size_t n = sizeof(tricky) / sizeof(tricky[0]);
    mkto_query p = {.kind = MKTO_SEL_KEYS, .key_type = MKTO_KEY_COOKIE,
                           .keys = (const char *const *)tricky, .nkeys = n,
                           .attrs = (const char *const *)tricky, .nattrs = n,
                           .stream_position = tricky[1]};
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(soap_build_get_multiple_leads(&auth, &p, &xml, &len, NULL), SOAP_OK);
    xmlDocPtr doc = reparse(xml, len);
    xmlNode *pm = ts_body_child(doc);
    xmlNode *kv = ts_child(ts_child(pm, NULL, "leadSelector"), NULL, "keyValues");
    xmlNode *ia = ts_child(pm, NULL, "includeAttributes");
    xmlNode *k = xmlFirstElementChild(kv), *a = xmlFirstElementChild(ia);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(k);
        assert_non_null(a);
        xmlChar *tk = xmlNodeGetContent(k), *ta = xmlNodeGetContent(a);
        assert_string_equal((const char *)tk, tricky[i]);
        assert_string_equal((const char *)ta, tricky[i]);
        xmlFree(tk);
        xmlFree(ta);
        k = xmlNextElementSibling(k);
        a = xmlNextElementSibling(a);
    }
    assert_string_equal(text(pm, "streamPosition"), tricky[1]);
    xmlFreeDoc(doc);
    free(xml);

    /* Same through a sync record: email, foreign id, attribute names and
     * values, cookie. */
    mkto_attr *at = calloc(n, sizeof(*at));
    assert_non_null(at);
    for (size_t i = 0; i < n; i++) {
        at[i].name = (char *)tricky[i];
        at[i].value = (char *)tricky[n - 1 - i];
    }
    mkto_lead l = {.email = (char *)tricky[3], .foreign_sys_person_id = (char *)tricky[4],
                   .attrs = at, .nattrs = n};
    assert_int_equal(soap_build_sync_lead(&auth, &l, true, tricky[1], &xml, &len, NULL),
                     SOAP_OK);
    doc = reparse(xml, len);
    pm = ts_body_child(doc);
    xmlNode *lr = ts_child(pm, NULL, "leadRecord");
    assert_string_equal(text(lr, "Email"), tricky[3]);
    assert_string_equal(text(lr, "ForeignSysPersonId"), tricky[4]);
    assert_string_equal(text(pm, "marketoCookie"), tricky[1]);
    xmlNode *attr = xmlFirstElementChild(ts_child(lr, NULL, "leadAttributeList"));
    for (size_t i = 0; i < n; i++) {
        assert_non_null(attr);
        assert_string_equal(text(attr, "attrName"), tricky[i]);
        assert_string_equal(text(attr, "attrValue"), tricky[n - 1 - i]);
        attr = xmlNextElementSibling(attr);
    }
    xmlFreeDoc(doc);
    free(xml);
    free(at);
}

int main(void)
{
    soap_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_lead),
        cmocka_unit_test(test_timestamp_now_is_signed),
        cmocka_unit_test(test_get_multiple_keys),
        cmocka_unit_test(test_get_multiple_static_list),
        cmocka_unit_test(test_get_multiple_updated_at),
        cmocka_unit_test(test_sync_lead),
        cmocka_unit_test(test_sync_multiple),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_round_trip_values),
    };
    int rc = cmocka_run_group_tests_name("soap_envelope", tests, NULL, NULL);
    soap_cleanup();
    return rc;
}
