/* sim/xmlio.c - reading request elements and writing SOAP answers with
 * libxml2 (see ops.h). */
#include "sim/ops.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "marketo/codes.h"
#include "soap/soap.h"

/* ---- reading ----------------------------------------------------------------- */

xmlNodePtr sx_first_elem(xmlNodePtr parent)
{
    if (parent == NULL)
        return NULL;
    for (xmlNodePtr c = parent->children; c != NULL; c = c->next)
        if (c->type == XML_ELEMENT_NODE)
            return c;
    return NULL;
}

xmlNodePtr sx_next_elem(xmlNodePtr node)
{
    for (xmlNodePtr c = node != NULL ? node->next : NULL; c != NULL; c = c->next)
        if (c->type == XML_ELEMENT_NODE)
            return c;
    return NULL;
}

bool sx_is(xmlNodePtr node, const char *name)
{
    return node != NULL && node->name != NULL && strcmp((const char *)node->name, name) == 0;
}

int sx_seq(xmlNodePtr parent, const char *const *names, size_t n, xmlNodePtr *out)
{
    size_t next = 0;
    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    for (xmlNodePtr c = parent->children; c != NULL; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_COMMENT_NODE)
            continue;  /* whitespace (and comments) between elements */
        if (c->type != XML_ELEMENT_NODE)
            return 20012;
        size_t i = next;
        while (i < n && !sx_is(c, names[i]))
            i++;
        if (i == n)
            return 20012;  /* unknown, repeated or before an earlier one */
        out[i] = c;
        next = i + 1;
    }
    return 0;
}

bool sx_is_nil(xmlNodePtr node)
{
    xmlChar *v = xmlGetNsProp(node, BAD_CAST "nil", BAD_CAST SOAP_XSI_NS);
    bool nil = v != NULL && (strcmp((const char *)v, "true") == 0 || strcmp((const char *)v, "1") == 0);
    xmlFree(v);
    return nil;
}

char *sx_text(xmlNodePtr node)
{
    xmlChar *c = xmlNodeGetContent(node);
    if (c == NULL)
        return strdup("");
    char *s = strdup((const char *)c);
    xmlFree(c);
    return s;
}

/* Text of node with surrounding XML whitespace removed, in buf (bounded).
 * Returns 0, or -1 when it does not fit. */
static int trimmed(xmlNodePtr node, char *buf, size_t cap)
{
    xmlChar *c = xmlNodeGetContent(node);
    const char *s = c != NULL ? (const char *)c : "";
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    int rc = -1;
    if (n < cap) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        rc = 0;
    }
    xmlFree(c);
    return rc;
}

int sx_int(xmlNodePtr node, int64_t *out)
{
    char buf[32];
    if (trimmed(node, buf, sizeof(buf)) != 0 || buf[0] == '\0')
        return 20012;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
        return 20012;
    *out = v;
    return 0;
}

int sx_bool(xmlNodePtr node, bool *out)
{
    char buf[8];
    if (trimmed(node, buf, sizeof(buf)) != 0)
        return 20012;
    if (strcmp(buf, "true") == 0 || strcmp(buf, "1") == 0)
        *out = true;
    else if (strcmp(buf, "false") == 0 || strcmp(buf, "0") == 0)
        *out = false;
    else
        return 20012;
    return 0;
}

int sx_time(xmlNodePtr node, time_t *out)
{
    char buf[64];
    if (trimmed(node, buf, sizeof(buf)) != 0 || soap_timestamp_parse(buf, out) != SOAP_OK)
        return 20012;
    return 0;
}

/* ---- writing ------------------------------------------------------------------ */

/* Records a failed writer call (negative return) in x->bad. */
static void chk(xout *x, int rc)
{
    if (rc < 0)
        x->bad = 1;
}

/* Creates the buffer and writer of x. Returns 0 or -1. */
static int xout_open(xout *x)
{
    memset(x, 0, sizeof(*x));
    x->buf = xmlBufferCreateSize(4096);
    if (x->buf == NULL)
        return -1;
    xmlBufferSetAllocationScheme(x->buf, XML_BUFFER_ALLOC_DOUBLEIT);
    x->w = xmlNewTextWriterMemory(x->buf, 0);
    if (x->w == NULL) {
        xmlBufferFree(x->buf);
        x->buf = NULL;
        return -1;
    }
    chk(x, xmlTextWriterStartDocument(x->w, NULL, "UTF-8", NULL));
    return 0;
}

int xout_begin(xout *x, const char *success_elem)
{
    if (xout_open(x) != 0)
        return -1;
    char name[96];
    snprintf(name, sizeof(name), "ns1:%s", success_elem);
    xout_start(x, "SOAP-ENV:Envelope");
    chk(x, xmlTextWriterWriteAttribute(x->w, BAD_CAST "xmlns:SOAP-ENV", BAD_CAST SOAP_ENV_NS));
    chk(x, xmlTextWriterWriteAttribute(x->w, BAD_CAST "xmlns:xsi", BAD_CAST SOAP_XSI_NS));
    chk(x, xmlTextWriterWriteAttribute(x->w, BAD_CAST "xmlns:ns1", BAD_CAST SOAP_NS));
    xout_start(x, "SOAP-ENV:Body");
    xout_start(x, name);
    return x->bad ? -1 : 0;
}

void xout_start(xout *x, const char *name)
{
    chk(x, xmlTextWriterStartElement(x->w, BAD_CAST name));
}

void xout_end(xout *x)
{
    chk(x, xmlTextWriterEndElement(x->w));
}

void xout_text(xout *x, const char *name, const char *text)
{
    chk(x, xmlTextWriterWriteElement(x->w, BAD_CAST name, BAD_CAST(text != NULL ? text : "")));
}

void xout_int(xout *x, const char *name, int64_t v)
{
    chk(x, xmlTextWriterWriteFormatElement(x->w, BAD_CAST name, "%lld", (long long)v));
}

void xout_nil(xout *x, const char *name)
{
    xout_start(x, name);
    chk(x, xmlTextWriterWriteAttribute(x->w, BAD_CAST "xsi:nil", BAD_CAST "true"));
    xout_end(x);
}

/* <name>text</name>, or <name xsi:nil="true"/> for NULL. */
static void text_or_nil(xout *x, const char *name, const char *text)
{
    if (text == NULL)
        xout_nil(x, name);
    else
        xout_text(x, name, text);
}

void xout_lead(xout *x, const sim_lead *l, const bool *include)
{
    xout_start(x, "leadRecord");
    xout_int(x, "Id", l->id);
    text_or_nil(x, "Email", l->email);
    text_or_nil(x, "ForeignSysPersonId", l->fsp_id);
    text_or_nil(x, "ForeignSysType", l->fsp_type);
    xout_start(x, "leadAttributeList");
    for (int i = 0; i < SIM_NFIELDS; i++) {
        if (l->vals[i] == NULL || l->vals[i][0] == '\0' || (include != NULL && !include[i]))
            continue;
        xout_start(x, "attribute");
        xout_text(x, "attrName", sim_fields[i].name);
        xout_text(x, "attrType", sim_fields[i].type);
        xout_text(x, "attrValue", l->vals[i]);
        xout_end(x);
    }
    xout_end(x);
    xout_end(x);
}

void xout_abort(xout *x)
{
    if (x->w != NULL)
        xmlFreeTextWriter(x->w);
    if (x->buf != NULL)
        xmlBufferFree(x->buf);
    memset(x, 0, sizeof(*x));
}

int xout_finish(xout *x, char **body, size_t *len)
{
    chk(x, xmlTextWriterEndDocument(x->w));
    xmlFreeTextWriter(x->w);  /* flushes into buf */
    x->w = NULL;
    int rc = -1;
    if (!x->bad) {
        size_t n = (size_t)xmlBufferLength(x->buf);
        char *b = malloc(n + 1);
        if (b != NULL) {
            memcpy(b, xmlBufferContent(x->buf), n);
            b[n] = '\0';
            *body = b;
            *len = n;
            rc = 0;
        }
    }
    xout_abort(x);
    return rc;
}

/* The row of a SOAP fault code in marketo/codes.h, or NULL (unknown, or a
 * REST code). */
static const mkto_code_info *soap_code(int code)
{
    const mkto_code_info *c = mkto_code_find(code);
    return c != NULL && (c->apis & MKTO_API_SOAP) ? c : NULL;
}

/* Marketo's documented message; "Internal Error" for a code that is not a
 * SOAP fault. */
const char *sim_fault_message(int code)
{
    const mkto_code_info *c = soap_code(code);
    return c != NULL ? c->message : "Internal Error";
}

int sim_fault_body(int code, char **body, size_t *len)
{
    xout x;
    if (xout_open(&x) != 0)
        return -1;
    const char *msg = sim_fault_message(code);
    char buf[160];
    xout_start(&x, "SOAP-ENV:Envelope");
    chk(&x, xmlTextWriterWriteAttribute(x.w, BAD_CAST "xmlns:SOAP-ENV", BAD_CAST SOAP_ENV_NS));
    xout_start(&x, "SOAP-ENV:Body");
    xout_start(&x, "SOAP-ENV:Fault");
    /* Marketo's own failures (10001, 20011: retried after a backoff) are the
     * server's fault, everything else the client's. */
    const mkto_code_info *c = soap_code(code);
    bool server = c != NULL && c->retry == MKTO_RETRY_BACKOFF;
    xout_text(&x, "faultcode", server ? "SOAP-ENV:Server" : "SOAP-ENV:Client");
    snprintf(buf, sizeof(buf), "%d - %s", code, msg);
    xout_text(&x, "faultstring", buf);
    xout_start(&x, "detail");
    xout_start(&x, "ns1:serviceException");
    chk(&x, xmlTextWriterWriteAttribute(x.w, BAD_CAST "xmlns:ns1", BAD_CAST SOAP_NS));
    xout_text(&x, "name", "mktServiceException");
    snprintf(buf, sizeof(buf), "%s (%d)", msg, code);
    xout_text(&x, "message", buf);
    xout_int(&x, "code", code);
    return xout_finish(&x, body, len);
}
