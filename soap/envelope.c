/* soap/envelope.c - request envelopes for the four lead operations.
 *
 * Every envelope is streamed with libxml2's xmlTextWriter into one xmlBuffer
 * (no tree, no pretty printing), which escapes every value. Values are
 * checked first: XML 1.0 cannot carry C0 controls (other than tab, LF, CR),
 * U+FFFE/U+FFFF, surrogates or malformed UTF-8, so such input is refused
 * with SOAP_ERR_INVALID and a message naming the field, never the value.
 *
 * Layout follows the documentation's examples: SOAP-ENV prefix for the
 * envelope, ns1 (mktows) and xsi declared on it, only the header and params
 * elements qualified, their children unqualified, element order as in the
 * WSDL's sequences.
 */
#include "soap/soap.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/chvalid.h>
#include <libxml/globals.h>
#include <libxml/tree.h>
#include <libxml/xmlstring.h>
#include <libxml/xmlwriter.h>

#include "soap/soap_internal.h"

/* The XML declaration written ahead of every envelope. */
static const char xml_decl[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/* One envelope under construction. */
typedef struct env {
    xmlBufferPtr buf;     /* output bytes */
    xmlTextWriterPtr w;   /* writer into buf */
    int failed;           /* a writer call failed (out of memory) */
    soap_err *err;        /* caller's error struct, may be NULL */
} env;

/* Returns true when s (len bytes) is well-formed UTF-8 whose every code
 * point is an XML 1.0 Char (so libxml2 can carry it as character data). */
static bool xml_text_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return false;
            i++;
            continue;
        }
        size_t left = len - i;
        int n = left > 4 ? 4 : (int)left;
        int cp = xmlGetUTF8Char(p + i, &n);
        /* xmlGetUTF8Char (2.9) checks the byte structure only: refuse
         * overlong forms and what the XML Char production excludes
         * (surrogates, U+FFFE/U+FFFF, beyond U+10FFFF) here. */
        if (cp < 0 || n <= 0 || !xmlIsCharQ(cp) || (n == 2 && cp < 0x80) ||
            (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
            return false;
        i += (size_t)n;
    }
    return true;
}

/* Checks one value that will be written; on failure fills err naming the
 * field (idx >= 0 adds "[idx]") and returns SOAP_ERR_INVALID. */
static int check_value(soap_err *err, const char *field, long idx, const char *v, bool required)
{
    if (v == NULL && !required)
        return SOAP_OK;
    if (v == NULL || (required && v[0] == '\0')) {
        if (idx >= 0)
            soap_set_err(err, SOAP_ERR_INVALID, "%s[%ld] is missing", field, idx);
        else
            soap_set_err(err, SOAP_ERR_INVALID, "%s is missing", field);
        return SOAP_ERR_INVALID;
    }
    if (!xml_text_ok(v, strlen(v))) {
        if (idx >= 0)
            soap_set_err(err, SOAP_ERR_INVALID,
                         "%s[%ld] is not valid UTF-8 or has a character XML cannot carry",
                         field, idx);
        else
            soap_set_err(err, SOAP_ERR_INVALID,
                         "%s is not valid UTF-8 or has a character XML cannot carry", field);
        return SOAP_ERR_INVALID;
    }
    return SOAP_OK;
}

/* Writer helpers: each records a failure in e->failed and does nothing once
 * a call has failed, so builders check once at the end. */
static void start(env *e, const char *name)
{
    if (!e->failed && xmlTextWriterStartElement(e->w, BAD_CAST name) < 0)
        e->failed = 1;
}

static void end(env *e)
{
    if (!e->failed && xmlTextWriterEndElement(e->w) < 0)
        e->failed = 1;
}

static void attr(env *e, const char *name, const char *value)
{
    if (!e->failed && xmlTextWriterWriteAttribute(e->w, BAD_CAST name, BAD_CAST value) < 0)
        e->failed = 1;
}

static void elem(env *e, const char *name, const char *text)
{
    if (!e->failed && xmlTextWriterWriteElement(e->w, BAD_CAST name, BAD_CAST text) < 0)
        e->failed = 1;
}

static void elem_i64(env *e, const char *name, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRId64, v);
    elem(e, name, num);
}

/* Validates auth and works out the timestamp and signature to send. */
static int prepare_auth(const soap_auth *auth, char ts[SOAP_TIMESTAMP_LEN],
                        char sig[SOAP_SIGNATURE_LEN], soap_err *err)
{
    if (auth == NULL || auth->user_id == NULL || auth->encryption_key == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "credentials are missing");
        return SOAP_ERR_INVALID;
    }
    int rc = check_value(err, "mktowsUserId", -1, auth->user_id, true);
    if (rc != SOAP_OK)
        return rc;
    if (auth->timestamp != NULL) {
        time_t t;
        size_t n = strlen(auth->timestamp);
        if (n >= SOAP_TIMESTAMP_LEN || soap_timestamp_parse(auth->timestamp, &t) != SOAP_OK) {
            soap_set_err(err, SOAP_ERR_INVALID, "requestTimestamp is not a W3C date-time");
            return SOAP_ERR_INVALID;
        }
        memcpy(ts, auth->timestamp, n + 1);
    } else if (soap_timestamp_now(ts) != SOAP_OK) {
        soap_set_err(err, SOAP_ERR_INVALID, "cannot format the current time");
        return SOAP_ERR_INVALID;
    }
    rc = soap_sign(auth->encryption_key, ts, auth->user_id, sig);
    if (rc != SOAP_OK)
        soap_set_err(err, rc, "cannot sign the request");
    return rc;
}

/* Opens the envelope: declaration, Envelope, Header with the
 * AuthenticationHeader, Body, and the params element named params. */
static int env_open(env *e, const soap_auth *auth, const char *params, size_t size_hint,
                    soap_err *err)
{
    char ts[SOAP_TIMESTAMP_LEN], sig[SOAP_SIGNATURE_LEN];
    memset(e, 0, sizeof(*e));
    e->err = err;
    int rc = prepare_auth(auth, ts, sig, err);
    if (rc != SOAP_OK)
        return rc;

    if (size_hint > INT_MAX / 2)
        size_hint = INT_MAX / 2;
    e->buf = xmlBufferCreateSize(size_hint + 1024);
    if (e->buf == NULL)
        goto oom;
    xmlBufferSetAllocationScheme(e->buf, XML_BUFFER_ALLOC_DOUBLEIT);
    e->w = xmlNewTextWriterMemory(e->buf, 0);
    if (e->w == NULL)
        goto oom;
    if (xmlTextWriterWriteRaw(e->w, BAD_CAST xml_decl) < 0)
        goto oom;
    start(e, "SOAP-ENV:Envelope");
    attr(e, "xmlns:SOAP-ENV", SOAP_ENV_NS);
    attr(e, "xmlns:ns1", SOAP_NS);
    attr(e, "xmlns:xsi", SOAP_XSI_NS);
    start(e, "SOAP-ENV:Header");
    start(e, "ns1:AuthenticationHeader");
    elem(e, "mktowsUserId", auth->user_id);
    elem(e, "requestSignature", sig);
    elem(e, "requestTimestamp", ts);
    end(e); /* AuthenticationHeader */
    end(e); /* Header */
    start(e, "SOAP-ENV:Body");
    start(e, params);
    if (e->failed)
        goto oom;
    return SOAP_OK;
oom:
    soap_set_err(err, SOAP_ERR_OOM, "out of memory building the envelope");
    return SOAP_ERR_OOM;
}

/* Closes params, Body and Envelope and hands the bytes to the caller. */
static int env_close(env *e, char **out, size_t *outlen)
{
    end(e); /* params */
    end(e); /* Body */
    end(e); /* Envelope */
    if (!e->failed && xmlTextWriterFlush(e->w) < 0)
        e->failed = 1;
    if (e->failed)
        goto oom;
    xmlFreeTextWriter(e->w);
    e->w = NULL;

    size_t n = (size_t)xmlBufferLength(e->buf);
    char *bytes;
    if (xmlFree == (xmlFreeFunc)free) {
        /* libxml2 allocates with malloc: take the buffer as it is. */
        bytes = (char *)xmlBufferDetach(e->buf);
    } else {
        bytes = malloc(n + 1);
        if (bytes != NULL) {
            memcpy(bytes, xmlBufferContent(e->buf), n);
            bytes[n] = '\0';
        }
    }
    if (bytes == NULL)
        goto oom;
    xmlBufferFree(e->buf);
    e->buf = NULL;
    *out = bytes;
    if (outlen != NULL)
        *outlen = n;
    return SOAP_OK;
oom:
    soap_set_err(e->err, SOAP_ERR_OOM, "out of memory building the envelope");
    return SOAP_ERR_OOM;
}

/* Frees whatever an envelope still holds (safe after env_close). */
static void env_free(env *e)
{
    if (e->w != NULL)
        xmlFreeTextWriter(e->w);
    if (e->buf != NULL)
        xmlBufferFree(e->buf);
    e->w = NULL;
    e->buf = NULL;
}

/* Resets the caller's out-params so that every failure leaves them empty. */
static int begin(char **out, size_t *outlen, soap_err *err)
{
    if (err != NULL) {
        err->code = SOAP_OK;
        err->msg[0] = '\0';
    }
    if (outlen != NULL)
        *outlen = 0;
    if (out == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "no output pointer");
        return SOAP_ERR_INVALID;
    }
    *out = NULL;
    return SOAP_OK;
}

int soap_build_get_lead(const soap_auth *auth, mkto_key_type t, const char *key_value,
                        char **out, size_t *outlen, soap_err *err)
{
    int rc = begin(out, outlen, err);
    if (rc != SOAP_OK)
        return rc;
    const char *tname = mkto_key_type_name(t);
    if (tname == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "keyType is out of range");
        return SOAP_ERR_INVALID;
    }
    rc = check_value(err, "keyValue", -1, key_value, true);
    if (rc != SOAP_OK)
        return rc;

    env e;
    rc = env_open(&e, auth, "ns1:paramsGetLead", strlen(key_value), err);
    if (rc != SOAP_OK)
        goto out;
    start(&e, "leadKey");
    elem(&e, "keyType", tname);
    elem(&e, "keyValue", key_value);
    end(&e);
    rc = env_close(&e, out, outlen);
out:
    env_free(&e);
    return rc;
}

/* Validates a getMultipleLeads request; returns the byte count of its
 * values (a size hint) through *hint. */
static int check_get_multiple(const mkto_query *p, size_t *hint, soap_err *err)
{
    int rc;
    size_t total = 0;
    if (p == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "parameters are missing");
        return SOAP_ERR_INVALID;
    }
    switch (p->kind) {
    case MKTO_SEL_KEYS:
        if (mkto_key_type_name(p->key_type) == NULL) {
            soap_set_err(err, SOAP_ERR_INVALID, "keyType is out of range");
            return SOAP_ERR_INVALID;
        }
        if (p->keys == NULL || p->nkeys == 0 || p->nkeys > SOAP_MAX_KEYS_PER_CALL) {
            soap_set_err(err, SOAP_ERR_INVALID, "keyValues needs 1 to %d keys",
                         SOAP_MAX_KEYS_PER_CALL);
            return SOAP_ERR_INVALID;
        }
        for (size_t i = 0; i < p->nkeys; i++) {
            rc = check_value(err, "keyValues", (long)i, p->keys[i], true);
            if (rc != SOAP_OK)
                return rc;
            total += strlen(p->keys[i]) + 24;
        }
        break;
    case MKTO_SEL_STATIC_LIST:
        if ((p->list_name == NULL || p->list_name[0] == '\0') && p->list_id <= 0) {
            soap_set_err(err, SOAP_ERR_INVALID, "staticListName or staticListId is required");
            return SOAP_ERR_INVALID;
        }
        if (p->list_id > INT32_MAX) {
            soap_set_err(err, SOAP_ERR_INVALID, "staticListId is out of range");
            return SOAP_ERR_INVALID;
        }
        rc = check_value(err, "staticListName", -1, p->list_name, false);
        if (rc != SOAP_OK)
            return rc;
        break;
    case MKTO_SEL_UPDATED_AT: {
        time_t t;
        if (p->oldest_updated_at == NULL ||
            soap_timestamp_parse(p->oldest_updated_at, &t) != SOAP_OK) {
            soap_set_err(err, SOAP_ERR_INVALID, "oldestUpdatedAt is not a W3C date-time");
            return SOAP_ERR_INVALID;
        }
        if (p->latest_updated_at != NULL &&
            soap_timestamp_parse(p->latest_updated_at, &t) != SOAP_OK) {
            soap_set_err(err, SOAP_ERR_INVALID, "latestUpdatedAt is not a W3C date-time");
            return SOAP_ERR_INVALID;
        }
        break;
    }
    default:
        soap_set_err(err, SOAP_ERR_INVALID, "leadSelector kind is out of range");
        return SOAP_ERR_INVALID;
    }
    rc = check_value(err, "streamPosition", -1, p->stream_position, false);
    if (rc != SOAP_OK)
        return rc;
    if (p->batch_size < 0 || p->batch_size > SOAP_MAX_BATCH_SIZE) {
        soap_set_err(err, SOAP_ERR_INVALID, "batchSize must be 0 to %d", SOAP_MAX_BATCH_SIZE);
        return SOAP_ERR_INVALID;
    }
    if (p->nattrs > 0 && p->attrs == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "includeAttributes is missing");
        return SOAP_ERR_INVALID;
    }
    for (size_t i = 0; i < p->nattrs; i++) {
        rc = check_value(err, "includeAttributes", (long)i, p->attrs[i], true);
        if (rc != SOAP_OK)
            return rc;
        total += strlen(p->attrs[i]) + 24;
    }
    *hint = total + (p->stream_position != NULL ? strlen(p->stream_position) : 0);
    return SOAP_OK;
}

int soap_build_get_multiple_leads(const soap_auth *auth, const mkto_query *p,
                                  char **out, size_t *outlen, soap_err *err)
{
    size_t hint = 0;
    int rc = begin(out, outlen, err);
    if (rc != SOAP_OK)
        return rc;
    rc = check_get_multiple(p, &hint, err);
    if (rc != SOAP_OK)
        return rc;

    env e;
    rc = env_open(&e, auth, "ns1:paramsGetMultipleLeads", hint, err);
    if (rc != SOAP_OK)
        goto out;
    start(&e, "leadSelector");
    switch (p->kind) {
    case MKTO_SEL_KEYS:
        attr(&e, "xsi:type", "ns1:LeadKeySelector");
        elem(&e, "keyType", mkto_key_type_name(p->key_type));
        start(&e, "keyValues");
        for (size_t i = 0; i < p->nkeys; i++)
            elem(&e, "stringItem", p->keys[i]);
        end(&e);
        break;
    case MKTO_SEL_STATIC_LIST:
        attr(&e, "xsi:type", "ns1:StaticListSelector");
        if (p->list_name != NULL && p->list_name[0] != '\0')
            elem(&e, "staticListName", p->list_name);
        if (p->list_id > 0)
            elem_i64(&e, "staticListId", p->list_id);
        break;
    case MKTO_SEL_UPDATED_AT:
        /* The WSDL's sequence puts latestUpdatedAt first. */
        attr(&e, "xsi:type", "ns1:LastUpdateAtSelector");
        if (p->latest_updated_at != NULL)
            elem(&e, "latestUpdatedAt", p->latest_updated_at);
        elem(&e, "oldestUpdatedAt", p->oldest_updated_at);
        break;
    }
    end(&e); /* leadSelector */
    /* lastUpdatedAt is deprecated and never sent. */
    if (p->stream_position != NULL && p->stream_position[0] != '\0')
        elem(&e, "streamPosition", p->stream_position);
    if (p->batch_size > 0)
        elem_i64(&e, "batchSize", p->batch_size);
    if (p->nattrs > 0) {
        start(&e, "includeAttributes");
        for (size_t i = 0; i < p->nattrs; i++)
            elem(&e, "stringItem", p->attrs[i]);
        end(&e);
    }
    rc = env_close(&e, out, outlen);
out:
    env_free(&e);
    return rc;
}

/* The three ForeignSysType values of the WSDL. */
static bool foreign_sys_type_ok(const char *s)
{
    return strcmp(s, "CUSTOM") == 0 || strcmp(s, "SFDC") == 0 || strcmp(s, "NETSUITE") == 0;
}

/* Validates one lead to sync (idx: its position, for messages); adds its
 * size to *hint. */
static int check_lead(const mkto_lead *l, long idx, size_t *hint, soap_err *err)
{
    int rc;
    if (!l->has_id && (l->email == NULL || l->email[0] == '\0') &&
        (l->foreign_sys_person_id == NULL || l->foreign_sys_person_id[0] == '\0')) {
        soap_set_err(err, SOAP_ERR_INVALID,
                     "leadRecord[%ld] needs Id, Email or ForeignSysPersonId", idx);
        return SOAP_ERR_INVALID;
    }
    if (l->has_id && (l->id < 0 || l->id > INT32_MAX)) {
        soap_set_err(err, SOAP_ERR_INVALID, "leadRecord[%ld].Id is out of range", idx);
        return SOAP_ERR_INVALID;
    }
    if ((rc = check_value(err, "leadRecord.Email", idx, l->email, false)) != SOAP_OK ||
        (rc = check_value(err, "leadRecord.ForeignSysPersonId", idx, l->foreign_sys_person_id,
                          false)) != SOAP_OK)
        return rc;
    if (l->foreign_sys_type != NULL && !foreign_sys_type_ok(l->foreign_sys_type)) {
        soap_set_err(err, SOAP_ERR_INVALID,
                     "leadRecord[%ld].ForeignSysType must be CUSTOM, SFDC or NETSUITE", idx);
        return SOAP_ERR_INVALID;
    }
    if (l->nattrs > 0 && l->attrs == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "leadRecord[%ld].leadAttributeList is missing", idx);
        return SOAP_ERR_INVALID;
    }
    size_t total = 64 + (l->email ? strlen(l->email) : 0) +
                   (l->foreign_sys_person_id ? strlen(l->foreign_sys_person_id) : 0);
    char fname[64], fvalue[64];
    snprintf(fname, sizeof(fname), "leadRecord[%ld].attrName", idx);
    snprintf(fvalue, sizeof(fvalue), "leadRecord[%ld].attrValue", idx);
    for (size_t i = 0; i < l->nattrs; i++) {
        const mkto_attr *a = &l->attrs[i];
        if ((rc = check_value(err, fname, (long)i, a->name, true)) != SOAP_OK ||
            (rc = check_value(err, fvalue, (long)i, a->value, false)) != SOAP_OK)
            return rc;
        total += 80 + strlen(a->name) + (a->value ? strlen(a->value) : 0);
    }
    *hint += total;
    return SOAP_OK;
}

/* Writes one LeadRecord in the WSDL's element order. A NULL attribute value
 * is sent as an empty attrValue (the element is not nillable). */
static void write_lead(env *e, const mkto_lead *l)
{
    start(e, "leadRecord");
    if (l->has_id)
        elem_i64(e, "Id", l->id);
    if (l->email != NULL)
        elem(e, "Email", l->email);
    if (l->foreign_sys_person_id != NULL)
        elem(e, "ForeignSysPersonId", l->foreign_sys_person_id);
    if (l->foreign_sys_type != NULL)
        elem(e, "ForeignSysType", l->foreign_sys_type);
    if (l->nattrs > 0) {
        start(e, "leadAttributeList");
        for (size_t i = 0; i < l->nattrs; i++) {
            start(e, "attribute");
            elem(e, "attrName", l->attrs[i].name);
            elem(e, "attrValue", l->attrs[i].value != NULL ? l->attrs[i].value : "");
            end(e);
        }
        end(e);
    }
    end(e);
}

int soap_build_sync_lead(const soap_auth *auth, const mkto_lead *lead, bool return_lead,
                         const char *marketo_cookie, char **out, size_t *outlen, soap_err *err)
{
    size_t hint = 0;
    int rc = begin(out, outlen, err);
    if (rc != SOAP_OK)
        return rc;
    if (lead == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "leadRecord is missing");
        return SOAP_ERR_INVALID;
    }
    if ((rc = check_lead(lead, 0, &hint, err)) != SOAP_OK ||
        (rc = check_value(err, "marketoCookie", -1, marketo_cookie, false)) != SOAP_OK)
        return rc;

    env e;
    rc = env_open(&e, auth, "ns1:paramsSyncLead", hint, err);
    if (rc != SOAP_OK)
        goto out;
    write_lead(&e, lead);
    elem(&e, "returnLead", return_lead ? "true" : "false");
    if (marketo_cookie != NULL)
        elem(&e, "marketoCookie", marketo_cookie);
    rc = env_close(&e, out, outlen);
out:
    env_free(&e);
    return rc;
}

int soap_build_sync_multiple_leads(const soap_auth *auth, const mkto_lead *leads, size_t nleads,
                                   bool dedup_enabled, char **out, size_t *outlen, soap_err *err)
{
    size_t hint = 0;
    int rc = begin(out, outlen, err);
    if (rc != SOAP_OK)
        return rc;
    if (leads == NULL || nleads == 0 || nleads > SOAP_MAX_SYNC_PER_CALL) {
        soap_set_err(err, SOAP_ERR_INVALID, "leadRecordList needs 1 to %d records",
                     SOAP_MAX_SYNC_PER_CALL);
        return SOAP_ERR_INVALID;
    }
    for (size_t i = 0; i < nleads; i++) {
        if ((rc = check_lead(&leads[i], (long)i, &hint, err)) != SOAP_OK)
            return rc;
    }

    env e;
    rc = env_open(&e, auth, "ns1:paramsSyncMultipleLeads", hint, err);
    if (rc != SOAP_OK)
        goto out;
    start(&e, "leadRecordList");
    for (size_t i = 0; i < nleads; i++)
        write_lead(&e, &leads[i]);
    end(&e);
    elem(&e, "dedupEnabled", dedup_enabled ? "true" : "false");
    rc = env_close(&e, out, outlen);
out:
    env_free(&e);
    return rc;
}
