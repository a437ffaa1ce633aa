/* tests/fuzz/fuzz_sync_body.c - POST /leads/sync body -> leads -> envelopes.
 *
 * Input: the raw request body. gw_sync_request_parse() with at most 10000
 * leads; when it accepts the body, every lead must also be encodable:
 * soap_build_sync_multiple_leads() in chunks of 300 (fixed credentials and
 * timestamp) must succeed, and each envelope must be well-formed XML
 * (libxml2, no network) whose leadRecords carry exactly the leads' values
 * back (Id, Email, ForeignSysPersonId, ForeignSysType, attributes).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "gateway/leads/leadjson.h"
#include "soap/soap.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LEADS 10000
#define CHUNK SOAP_MAX_SYNC_PER_CALL

/* The element child of n named name (local name), or NULL. */
static xmlNodePtr child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n != NULL ? n->children : NULL; c != NULL; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
            return c;
    return NULL;
}

/* The first element named name at any depth below n, or NULL. */
static xmlNodePtr find(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n != NULL ? n->children : NULL; c != NULL; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (strcmp((const char *)c->name, name) == 0)
            return c;
        xmlNodePtr r = find(c, name);
        if (r != NULL)
            return r;
    }
    return NULL;
}

/* Fails unless element name under n holds want's text (want NULL: no such
 * element). what names the lead for the message. */
static void expect_text(xmlNodePtr n, const char *name, const char *want, size_t li)
{
    xmlNodePtr c = child(n, name);
    if (want == NULL) {
        if (c != NULL)
            fuzz_fail("lead %zu: unexpected <%s>", li, name);
        return;
    }
    if (c == NULL)
        fuzz_fail("lead %zu: <%s> missing", li, name);
    xmlChar *got = xmlNodeGetContent(c);
    int same = got != NULL && strcmp((const char *)got, want) == 0;
    if (!same)
        fuzz_fail("lead %zu: <%s> does not round-trip (sent %zu bytes, read back %zu)", li,
                  name, strlen(want), got != NULL ? strlen((const char *)got) : 0);
    xmlFree(got);
}

/* Parses one envelope back and compares its leadRecords with leads[0..n). */
static void check_envelope(const char *xml, size_t len, const mkto_lead *leads, size_t n)
{
    if (len > (size_t)INT32_MAX)
        fuzz_fail("envelope of %zu bytes", len);
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, "envelope.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == NULL)
        fuzz_fail("envelope is not well-formed XML (%zu leads)", n);
    xmlNodePtr list = find((xmlNodePtr)doc, "leadRecordList");
    if (list == NULL)
        fuzz_fail("envelope without leadRecordList");
    size_t i = 0;
    for (xmlNodePtr r = list->children; r != NULL; r = r->next) {
        if (r->type != XML_ELEMENT_NODE)
            continue;
        if (strcmp((const char *)r->name, "leadRecord") != 0)
            fuzz_fail("unexpected <%s> in leadRecordList", (const char *)r->name);
        if (i >= n)
            fuzz_fail("more leadRecords than the %zu leads given", n);
        const mkto_lead *l = &leads[i];
        char idbuf[32];
        if (l->has_id)
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)l->id);
        expect_text(r, "Id", l->has_id ? idbuf : NULL, i);
        expect_text(r, "Email", l->email, i);
        expect_text(r, "ForeignSysPersonId", l->foreign_sys_person_id, i);
        expect_text(r, "ForeignSysType", l->foreign_sys_type, i);
        xmlNodePtr al = child(r, "leadAttributeList");
        size_t a = 0;
        for (xmlNodePtr at = al != NULL ? al->children : NULL; at != NULL; at = at->next) {
            if (at->type != XML_ELEMENT_NODE)
                continue;
            if (a >= l->nattrs)
                fuzz_fail("lead %zu: more attributes than the %zu given", i, l->nattrs);
            expect_text(at, "attrName", l->attrs[a].name, i);
            expect_text(at, "attrValue", l->attrs[a].value != NULL ? l->attrs[a].value : "", i);
            a++;
        }
        if (a != l->nattrs)
            fuzz_fail("lead %zu: %zu attributes sent, %zu in the envelope", i, l->nattrs, a);
        i++;
    }
    if (i != n)
        fuzz_fail("%zu leads given, %zu leadRecords in the envelope", n, i);
    xmlFreeDoc(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        soap_init();
        inited = true;
    }
    /* The parser gets exactly the body's bytes, in a buffer of that size. */
    char *body = malloc(size > 0 ? size : 1);
    if (body == NULL)
        return 0;
    if (size > 0)
        memcpy(body, data, size);

    gw_sync_request req;
    gw_err err = {0};
    memset(&req, 0, sizeof req);
    int rc = gw_sync_request_parse(body, size, MAX_LEADS, &req, &err);
    if (rc != 0) {
        if (req.leads != NULL || req.nleads != 0)
            fuzz_fail("rejected body left %zu leads in out", req.nleads);
        if (err.msg[0] == '\0' || memchr(err.msg, '\0', sizeof err.msg) == NULL)
            fuzz_fail("rejected body without a message");
        if (err.status != 400 && err.status != 500)
            fuzz_fail("rejected body with status %d", err.status);
        goto out;
    }
    if (req.nleads == 0 || req.nleads > MAX_LEADS || req.leads == NULL)
        fuzz_fail("accepted body with %zu leads", req.nleads);

    const soap_auth auth = {
        .user_id = "bigcorp1_461839624B16E06BA2D663",
        .encryption_key = "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66",
        .timestamp = "2013-08-02T15:47:06-07:00",
    };
    for (size_t off = 0; off < req.nleads; off += CHUNK) {
        size_t n = req.nleads - off < CHUNK ? req.nleads - off : CHUNK;
        char *xml = NULL;
        size_t xlen = 0;
        soap_err serr;
        memset(&serr, 0, sizeof serr);
        int brc = soap_build_sync_multiple_leads(&auth, req.leads + off, n, req.dedup, &xml,
                                                 &xlen, &serr);
        if (brc != SOAP_OK)
            fuzz_fail("accepted body, but leads %zu..%zu do not encode: %d %s", off,
                      off + n - 1, brc, serr.msg);
        if (xml == NULL || strlen(xml) != xlen)
            fuzz_fail("envelope NULL or its length wrong");
        check_envelope(xml, xlen, req.leads + off, n);
        free(xml);
    }
out:
    gw_sync_request_clear(&req);
    free(body);
    return 0;
}
