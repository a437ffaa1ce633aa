/* tests/fuzz/fuzz_query.c - GET /leads query string -> selector -> binding.
 *
 * Input: the raw query string (a NUL-terminated copy of the bytes).
 * gw_query_parse_string() with limits {1000, 1000, 100}; when it accepts
 * and the selector has a binding (list or updated-at selector), the binding
 * must parse again to a selector that is cursor-compatible with the first
 * and whose own binding is the same string (what a cursor relies on). Keys
 * come out normalised and distinct (what the lookup route relies on).
 * Every accepted selector must also encode as a getMultipleLeads envelope
 * (keys 100 per call, list, or updated-at window; fields as
 * includeAttributes) that is well-formed XML: the query parser must not let
 * through a value the SOAP builder refuses (that would be a 500, not a 400).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "gateway/leads/query.h"
#include "marketo/leadkey.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the invariants of an accepted selector. */
static void check_selector(const gw_selector *s, const gw_query_limits *lim)
{
    if (s->has_selector && s->kind == MKTO_SEL_KEYS &&
        (s->nkeys == 0 || s->nkeys > lim->max_keys || s->keys == NULL))
        fuzz_fail("keys selector with %zu keys", s->nkeys);
    for (size_t i = 0; i < s->nkeys; i++) {
        size_t n = strlen(s->keys[i]);
        if (n == 0 || n > GW_QUERY_MAX_VALUE || !gw_utf8_valid(s->keys[i], n))
            fuzz_fail("key %zu: empty, too long or not UTF-8 (%zu bytes)", i, n);
        /* lookups send, cache and match these keys as they are */
        char norm[MKTO_KEY_MAX_LEN + 1];
        if (mkto_key_normalize(s->key_type, s->keys[i], norm, sizeof norm) != 0 ||
            strcmp(norm, s->keys[i]) != 0)
            fuzz_fail("key %zu is not normalised", i);
        for (size_t j = 0; j < i; j++)
            if (mkto_key_eq(s->key_type, s->keys[j], s->keys[i]))
                fuzz_fail("keys %zu and %zu are the same key", j, i);
    }
    if (s->limit < 1 || s->limit > lim->max_page_size)
        fuzz_fail("limit %d out of 1..%d", s->limit, lim->max_page_size);
    if (s->nfields > 0 && s->fields == NULL)
        fuzz_fail("nfields %zu with fields NULL", s->nfields);
    for (size_t i = 1; i < s->nfields; i++)
        if (strcmp(s->fields[i - 1], s->fields[i]) >= 0)
            fuzz_fail("fields not sorted or not unique at %zu", i);
    if (!s->has_selector && s->cursor == NULL)
        fuzz_fail("accepted a query with neither selector nor cursor");
}

/* Builds the getMultipleLeads envelope(s) of an accepted selector and checks
 * each is accepted by the builder and parses as XML. */
static void check_envelopes(const gw_selector *s)
{
    if (!s->has_selector)
        return;
    static const soap_auth auth = {"bigcorp1_461839624B16E06BA2D663",
                                   "899756834129871744AAEE88DDCC77CDEEDEC1AAAD66",
                                   "2013-08-02T15:47:06-07:00"};
    char oldest[SOAP_TIMESTAMP_LEN];
    char latest[SOAP_TIMESTAMP_LEN];
    mkto_query p;
    memset(&p, 0, sizeof p);
    p.kind = s->kind;
    p.batch_size = s->limit;
    p.attrs = (const char *const *)s->fields;
    p.nattrs = s->fields != NULL ? s->nfields : 0;
    if (s->kind == MKTO_SEL_STATIC_LIST) {
        p.list_name = s->list_name;
        p.list_id = s->list_id;
    } else if (s->kind == MKTO_SEL_UPDATED_AT) {
        if (soap_timestamp_format((time_t)s->updated_since, 0, oldest) != SOAP_OK)
            fuzz_fail("updatedSince %lld cannot be formatted", (long long)s->updated_since);
        p.oldest_updated_at = oldest;
        if (s->updated_until != 0) {
            if (soap_timestamp_format((time_t)s->updated_until, 0, latest) != SOAP_OK)
                fuzz_fail("updatedUntil %lld cannot be formatted",
                          (long long)s->updated_until);
            p.latest_updated_at = latest;
        }
    }
    size_t off = 0;
    do {
        if (s->kind == MKTO_SEL_KEYS) {
            p.key_type = s->key_type;
            p.keys = (const char *const *)s->keys + off;
            p.nkeys = s->nkeys - off < SOAP_MAX_KEYS_PER_CALL ? s->nkeys - off
                                                              : SOAP_MAX_KEYS_PER_CALL;
            off += p.nkeys;
        }
        char *xml = NULL;
        size_t xlen = 0;
        soap_err serr;
        memset(&serr, 0, sizeof serr);
        int rc = soap_build_get_multiple_leads(&auth, &p, &xml, &xlen, &serr);
        if (rc != SOAP_OK)
            fuzz_fail("accepted selector (kind %d) does not encode: %d %s", (int)s->kind, rc,
                      serr.msg);
        xmlDocPtr doc = xmlReadMemory(xml, (int)xlen, "envelope.xml", NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR |
                                          XML_PARSE_NOWARNING);
        if (doc == NULL)
            fuzz_fail("getMultipleLeads envelope is not well-formed XML");
        xmlFreeDoc(doc);
        free(xml);
    } while (s->kind == MKTO_SEL_KEYS && off < s->nkeys);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        soap_init();
        inited = true;
    }
    static const gw_query_limits lim = {1000, 1000, 100};
    char *qs = fuzz_strndup(data, size);
    char *binding = NULL;
    char *binding2 = NULL;
    gw_err err = {0};
    gw_selector s;
    gw_selector s2;
    memset(&s, 0, sizeof s);
    memset(&s2, 0, sizeof s2);

    if (gw_query_parse_string(qs, &lim, &s, &err) != 0) {
        if (err.msg[0] == '\0' || memchr(err.msg, '\0', sizeof err.msg) == NULL)
            fuzz_fail("rejected query without a message");
        if (err.status != 400 && err.status != 500)
            fuzz_fail("rejected query with status %d", err.status);
        goto out;
    }
    check_selector(&s, &lim);
    check_envelopes(&s);
    binding = gw_selector_binding(&s);
    if (binding == NULL) {
        if (s.has_selector && s.kind != MKTO_SEL_KEYS)
            fuzz_fail("list/updated-at selector without a binding");
        goto out;
    }
    err = (gw_err){0};
    if (gw_query_parse_string(binding, &lim, &s2, &err) != 0)
        fuzz_fail("binding does not parse back: \"%s\": %s", binding, err.msg);
    check_selector(&s2, &lim);
    binding2 = gw_selector_binding(&s2);
    if (binding2 == NULL || strcmp(binding, binding2) != 0)
        fuzz_fail("binding not stable: \"%s\" -> \"%s\"", binding,
                  binding2 != NULL ? binding2 : "(null)");
    if (!gw_selector_cursor_compatible(&s, &s2))
        fuzz_fail("selector not compatible with its own binding \"%s\"", binding);
    if (s2.kind != s.kind || s2.list_id != s.list_id ||
        !fuzz_str_eq(s2.list_name, s.list_name) || s2.updated_since != s.updated_since ||
        s2.updated_until != s.updated_until || !fuzz_str_eq(s2.fieldset, s.fieldset) ||
        s2.limit != s.limit)
        fuzz_fail("re-parsed binding \"%s\" is a different selector", binding);
out:
    free(binding);
    free(binding2);
    gw_selector_clear(&s);
    gw_selector_clear(&s2);
    free(qs);
    return 0;
}
