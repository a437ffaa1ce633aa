/* soap/parse.c - response and fault parsers.
 *
 * The body comes from the network, so it is treated as hostile: it becomes a
 * tree only through soap_xml_read (xmlsafe.c: size cap, no DOCTYPE, no
 * entities, no network, depth 64). The tree is then walked once by namespace
 * URI and local name, copying each value exactly once.
 */
#include "soap/soap.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/tree.h>

#include "marketo/codes.h"
#include "soap/soap_internal.h"
#include "soap/xmlsafe.h"

/* Which success element a parser expects. */
typedef enum op {
    OP_GET_LEAD = 0,
    OP_GET_MULTIPLE,
    OP_SYNC_LEAD,
    OP_SYNC_MULTIPLE,
} op;

/* Local names of the success elements, indexed by op. */
static const char *const success_names[] = {
    "successGetLead",
    "successGetMultipleLeads",
    "successSyncLead",
    "successSyncMultipleLeads",
};

/* ---- tree helpers ------------------------------------------------------- */

/* Whether node is an element named name in namespace ns (NULL: none). */
static bool is_elem(const xmlNode *node, const char *ns, const char *name)
{
    if (node == NULL || node->type != XML_ELEMENT_NODE || strcmp((const char *)node->name, name))
        return false;
    if (ns == NULL)
        return node->ns == NULL || node->ns->href == NULL || node->ns->href[0] == '\0';
    return node->ns != NULL && node->ns->href != NULL &&
           strcmp((const char *)node->ns->href, ns) == 0;
}

/* Whether node is an element with this local name and no namespace or
 * Marketo's (children are unqualified, but a qualified one is accepted). */
static bool is_child(const xmlNode *node, const char *name)
{
    return is_elem(node, NULL, name) || is_elem(node, SOAP_NS, name);
}

/* First child element of parent named like is_child(), or NULL. */
static xmlNode *find_child(const xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (is_child(c, name))
            return c;
    }
    return NULL;
}

/* Whether node carries xsi:nil="true" (or "1"). */
static bool is_nil(const xmlNode *node)
{
    for (const xmlAttr *a = node->properties; a != NULL; a = a->next) {
        if (a->ns == NULL || strcmp((const char *)a->name, "nil") != 0 ||
            strcmp((const char *)a->ns->href, SOAP_XSI_NS) != 0)
            continue;
        const xmlNode *v = a->children;
        if (v == NULL || v->content == NULL)
            return false;
        return strcmp((const char *)v->content, "true") == 0 ||
               strcmp((const char *)v->content, "1") == 0;
    }
    return false;
}

/* Whether c is character data (text or, should NOCDATA not apply, CDATA). */
static bool is_text(const xmlNode *c)
{
    return c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE;
}

/* Copies the text of node (its text children, concatenated) into a new
 * malloc'd string; *out stays NULL and SOAP_ERR_PARSE is returned if it
 * holds an entity reference, SOAP_ERR_OOM on allocation failure. */
static int text_dup(const xmlNode *node, char **out)
{
    size_t total = 0;
    *out = NULL;
    for (const xmlNode *c = node->children; c != NULL; c = c->next) {
        if (c->type == XML_ENTITY_REF_NODE || c->type == XML_ENTITY_NODE)
            return SOAP_ERR_PARSE;
        if (is_text(c) && c->content != NULL)
            total += strlen((const char *)c->content);
    }
    char *s = malloc(total + 1);
    if (s == NULL)
        return SOAP_ERR_OOM;
    size_t off = 0;
    for (const xmlNode *c = node->children; c != NULL; c = c->next) {
        if (is_text(c) && c->content != NULL) {
            size_t n = strlen((const char *)c->content);
            memcpy(s + off, c->content, n);
            off += n;
        }
    }
    s[off] = '\0';
    *out = s;
    return SOAP_OK;
}

/* Like text_dup() but NULL for a nil element. */
static int text_dup_nillable(const xmlNode *node, char **out)
{
    *out = NULL;
    if (is_nil(node))
        return SOAP_OK;
    return text_dup(node, out);
}

/* Parses node's text as a decimal integer in [lo, hi] (surrounding XML
 * whitespace allowed, as xs:int collapses it). empty_ok: an empty or nil
 * element gives 0. */
static int text_int(const xmlNode *node, int64_t lo, int64_t hi, bool empty_ok, int64_t *out)
{
    char buf[40];
    size_t n = 0;
    *out = 0;
    for (const xmlNode *c = node->children; c != NULL; c = c->next) {
        if (c->type == XML_ENTITY_REF_NODE)
            return SOAP_ERR_PARSE;
        if (!is_text(c) || c->content == NULL)
            continue;
        size_t cl = strlen((const char *)c->content);
        if (n + cl >= sizeof(buf))
            return SOAP_ERR_PARSE;
        memcpy(buf + n, c->content, cl);
        n += cl;
    }
    buf[n] = '\0';
    const char *p = buf;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0')
        return empty_ok ? SOAP_OK : SOAP_ERR_PARSE;
    if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == '+'))
        return SOAP_ERR_PARSE;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno != 0 || end == p)
        return SOAP_ERR_PARSE;
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
        end++;
    if (*end != '\0' || v < lo || v > hi)
        return SOAP_ERR_PARSE;
    *out = v;
    return SOAP_OK;
}

/* Counts the element children of parent named name. */
static size_t count_children(const xmlNode *parent, const char *name)
{
    size_t n = 0;
    for (const xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (is_child(c, name))
            n++;
    }
    return n;
}

/* ---- envelope ----------------------------------------------------------- */

/* Finds the Body's first element child: the success element or a Fault. */
static int body_child(xmlDocPtr doc, xmlNode **out, soap_err *err)
{
    xmlNode *root = xmlDocGetRootElement(doc);
    *out = NULL;
    if (!is_elem(root, SOAP_ENV_NS, "Envelope")) {
        soap_set_err(err, SOAP_ERR_PARSE, "response is not a SOAP 1.1 Envelope");
        return SOAP_ERR_PARSE;
    }
    xmlNode *body = NULL;
    for (xmlNode *c = root->children; c != NULL && body == NULL; c = c->next) {
        if (is_elem(c, SOAP_ENV_NS, "Body"))
            body = c;
    }
    if (body == NULL) {
        soap_set_err(err, SOAP_ERR_PARSE, "SOAP Envelope has no Body");
        return SOAP_ERR_PARSE;
    }
    for (xmlNode *c = body->children; c != NULL; c = c->next) {
        if (c->type == XML_ELEMENT_NODE) {
            *out = c;
            return SOAP_OK;
        }
        if (c->type == XML_ENTITY_REF_NODE)
            break;
    }
    soap_set_err(err, SOAP_ERR_PARSE, "SOAP Body is empty");
    return SOAP_ERR_PARSE;
}

/* Fills f from a Fault element. Returns SOAP_OK or SOAP_ERR_OOM/PARSE. */
static int parse_fault(const xmlNode *fnode, mkto_fault *f)
{
    int rc = SOAP_OK;
    const xmlNode *svc = NULL;
    for (const xmlNode *c = fnode->children; c != NULL && rc == SOAP_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        /* Fault's children are unqualified in SOAP 1.1; accept any. */
        const char *name = (const char *)c->name;
        if (strcmp(name, "faultcode") == 0 && f->faultcode == NULL) {
            rc = text_dup(c, &f->faultcode);
        } else if (strcmp(name, "faultstring") == 0 && f->faultstring == NULL) {
            rc = text_dup(c, &f->faultstring);
        } else if (strcmp(name, "detail") == 0) {
            for (const xmlNode *d = c->children; d != NULL; d = d->next) {
                if (is_elem(d, SOAP_NS, "serviceException")) {
                    svc = d;
                    break;
                }
            }
        }
    }
    if (rc != SOAP_OK)
        return rc;

    bool have_code = false;
    if (svc != NULL) {
        const xmlNode *m = find_child(svc, "message");
        if (m != NULL && (rc = text_dup(m, &f->message)) != SOAP_OK)
            return rc;
        const xmlNode *code = find_child(svc, "code");
        int64_t v;
        if (code != NULL && text_int(code, 0, INT_MAX, false, &v) == SOAP_OK) {
            f->code = (int)v;
            have_code = true;
        }
    }
    if (!have_code && f->faultstring != NULL) {
        /* "20014 - Authentication failed": the leading number. */
        const char *p = f->faultstring;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        long v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 9) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits > 0 && !(*p >= '0' && *p <= '9'))
            f->code = (int)v;
    }
    f->retryable = mkto_code_retryable(f->code);
    return SOAP_OK;
}

/* Parses the document and locates the expected success element's result
 * child. On a Fault, fills fault and returns SOAP_ERR_FAULT. */
static int open_response(const char *body, size_t len, size_t max_len, op which,
                         xmlDocPtr *docp, xmlNode **resultp, mkto_fault *fault, soap_err *err)
{
    xmlNode *top = NULL;
    *resultp = NULL;
    int rc = soap_xml_read(body, len, max_len, docp, err);
    if (rc != SOAP_OK)
        return rc;
    if ((rc = body_child(*docp, &top, err)) != SOAP_OK)
        return rc;

    if (is_elem(top, SOAP_ENV_NS, "Fault")) {
        mkto_fault tmp = {0};
        mkto_fault *f = fault != NULL ? fault : &tmp;
        rc = parse_fault(top, f);
        int code = f->code;
        mkto_fault_clear(&tmp);
        if (rc != SOAP_OK) {
            mkto_fault_clear(fault);
            soap_set_err(err, rc, rc == SOAP_ERR_OOM ? "out of memory reading a SOAP fault"
                                                     : "malformed SOAP fault");
            return rc;
        }
        soap_set_err(err, SOAP_ERR_FAULT, "SOAP fault %d", code);
        return SOAP_ERR_FAULT;
    }
    if (!is_elem(top, SOAP_NS, success_names[which])) {
        soap_set_err(err, SOAP_ERR_PARSE, "expected %s in the SOAP Body", success_names[which]);
        return SOAP_ERR_PARSE;
    }
    xmlNode *result = find_child(top, "result");
    if (result == NULL) {
        soap_set_err(err, SOAP_ERR_PARSE, "%s has no result", success_names[which]);
        return SOAP_ERR_PARSE;
    }
    *resultp = result;
    return SOAP_OK;
}

/* Resets the caller's out-params so every failure leaves them empty. */
static void reset_outs(mkto_fault *fault, soap_err *err)
{
    if (fault != NULL)
        memset(fault, 0, sizeof(*fault));
    if (err != NULL) {
        err->code = SOAP_OK;
        err->msg[0] = '\0';
    }
}

/* ---- leads -------------------------------------------------------------- */

/* Fills a from an attribute element. */
static int parse_attr(const xmlNode *node, mkto_attr *a, soap_err *err)
{
    int rc = SOAP_OK;
    bool have_name = false;
    for (const xmlNode *c = node->children; c != NULL && rc == SOAP_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is_child(c, "attrName") && !have_name) {
            rc = text_dup(c, &a->name);
            have_name = true;
        } else if (is_child(c, "attrType") && a->type == NULL) {
            rc = text_dup_nillable(c, &a->type);
        } else if (is_child(c, "attrValue") && a->value == NULL) {
            rc = text_dup_nillable(c, &a->value);
        }
    }
    if (rc == SOAP_OK && !have_name)
        rc = SOAP_ERR_PARSE;
    if (rc != SOAP_OK)
        soap_set_err(err, rc, rc == SOAP_ERR_OOM ? "out of memory reading an attribute"
                                                 : "malformed lead attribute");
    return rc;
}

/* Fills l from a leadRecord element. */
static int parse_lead(const xmlNode *node, mkto_lead *l, soap_err *err)
{
    int rc = SOAP_OK;
    for (const xmlNode *c = node->children; c != NULL && rc == SOAP_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is_child(c, "Id")) {
            if (!is_nil(c)) {
                rc = text_int(c, 0, INT64_MAX, false, &l->id);
                l->has_id = rc == SOAP_OK;
                if (rc != SOAP_OK)
                    soap_set_err(err, rc, "leadRecord Id is not an integer");
            }
        } else if (is_child(c, "Email") && l->email == NULL) {
            rc = text_dup_nillable(c, &l->email);
        } else if (is_child(c, "ForeignSysPersonId") && l->foreign_sys_person_id == NULL) {
            rc = text_dup_nillable(c, &l->foreign_sys_person_id);
        } else if (is_child(c, "ForeignSysType") && l->foreign_sys_type == NULL) {
            rc = text_dup_nillable(c, &l->foreign_sys_type);
        } else if (is_child(c, "leadAttributeList") && l->attrs == NULL && !is_nil(c)) {
            size_t n = count_children(c, "attribute");
            if (n == 0)
                continue;
            l->attrs = calloc(n, sizeof(*l->attrs));
            if (l->attrs == NULL) {
                rc = SOAP_ERR_OOM;
                break;
            }
            for (const xmlNode *a = c->children; a != NULL && rc == SOAP_OK; a = a->next) {
                if (!is_child(a, "attribute"))
                    continue;
                /* nattrs counts the entries that may hold memory. */
                rc = parse_attr(a, &l->attrs[l->nattrs++], err);
            }
            if (rc != SOAP_OK)
                return rc;
        }
    }
    if (rc == SOAP_ERR_OOM)
        soap_set_err(err, rc, "out of memory reading a lead");
    return rc;
}

/* Parses leadRecordList (may be NULL or nil) into out->leads. */
static int parse_lead_list(const xmlNode *list, mkto_leads *out, soap_err *err)
{
    if (list == NULL || is_nil(list))
        return SOAP_OK;
    size_t n = count_children(list, "leadRecord");
    if (n == 0)
        return SOAP_OK;
    out->leads = calloc(n, sizeof(*out->leads));
    if (out->leads == NULL) {
        soap_set_err(err, SOAP_ERR_OOM, "out of memory reading leads");
        return SOAP_ERR_OOM;
    }
    for (const xmlNode *c = list->children; c != NULL; c = c->next) {
        if (!is_child(c, "leadRecord"))
            continue;
        int rc = parse_lead(c, &out->leads[out->nleads++], err);
        if (rc != SOAP_OK)
            return rc;
    }
    return SOAP_OK;
}

/* Reads a required non-negative int child of result into *v. */
static int required_count(const xmlNode *result, const char *name, int *v, soap_err *err)
{
    const xmlNode *c = find_child(result, name);
    int64_t x;
    if (c == NULL || text_int(c, 0, INT_MAX, false, &x) != SOAP_OK) {
        soap_set_err(err, SOAP_ERR_PARSE, "result has no valid %s", name);
        return SOAP_ERR_PARSE;
    }
    *v = (int)x;
    return SOAP_OK;
}

/* Shared body of the two lead parsers. */
static int parse_leads(const char *body, size_t len, size_t max_len, op which,
                       mkto_leads *out, mkto_fault *fault, soap_err *err)
{
    xmlDocPtr doc = NULL;
    xmlNode *result = NULL;
    reset_outs(fault, err);
    if (out == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "no output struct");
        return SOAP_ERR_INVALID;
    }
    memset(out, 0, sizeof(*out));
    int rc = open_response(body, len, max_len, which, &doc, &result, fault, err);
    if (rc != SOAP_OK)
        goto out;

    if (which == OP_GET_LEAD) {
        if ((rc = required_count(result, "count", &out->return_count, err)) != SOAP_OK)
            goto out;
    } else {
        if ((rc = required_count(result, "returnCount", &out->return_count, err)) != SOAP_OK ||
            (rc = required_count(result, "remainingCount", &out->remaining_count, err)) !=
                SOAP_OK)
            goto out;
        const xmlNode *sp = find_child(result, "newStreamPosition");
        if (sp != NULL && !is_nil(sp)) {
            rc = text_dup(sp, &out->new_stream_position);
        } else {
            out->new_stream_position = strdup("");
            rc = out->new_stream_position != NULL ? SOAP_OK : SOAP_ERR_OOM;
        }
        if (rc != SOAP_OK) {
            soap_set_err(err, rc, "cannot read newStreamPosition");
            goto out;
        }
    }
    rc = parse_lead_list(find_child(result, "leadRecordList"), out, err);
out:
    if (rc != SOAP_OK)
        mkto_leads_clear(out);
    if (doc != NULL)
        xmlFreeDoc(doc);
    return rc;
}

int soap_parse_get_lead(const char *body, size_t len, size_t max_len, mkto_leads *out,
                        mkto_fault *fault, soap_err *err)
{
    return parse_leads(body, len, max_len, OP_GET_LEAD, out, fault, err);
}

int soap_parse_get_multiple_leads(const char *body, size_t len, size_t max_len,
                                  mkto_leads *out, mkto_fault *fault, soap_err *err)
{
    return parse_leads(body, len, max_len, OP_GET_MULTIPLE, out, fault, err);
}

/* ---- sync --------------------------------------------------------------- */

/* Fills s from a syncStatus element; fallback_id is used when it has no
 * leadId (syncLead's result carries one beside it). */
static int parse_status(const xmlNode *node, int64_t fallback_id, mkto_sync_status *s,
                        soap_err *err)
{
    int rc = SOAP_OK;
    bool have_id = false, have_status = false;
    for (const xmlNode *c = node->children; c != NULL && rc == SOAP_OK; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is_child(c, "leadId") && !have_id) {
            rc = text_int(c, 0, INT64_MAX, true, &s->lead_id);
            have_id = true;
        } else if (is_child(c, "status") && !have_status) {
            char st[16];
            size_t n = 0;
            for (const xmlNode *t = c->children; t != NULL; t = t->next) {
                if (!is_text(t) || t->content == NULL)
                    continue;
                size_t cl = strlen((const char *)t->content);
                if (n + cl >= sizeof(st)) {
                    n = sizeof(st);
                    break;
                }
                memcpy(st + n, t->content, cl);
                n += cl;
            }
            if (n >= sizeof(st)) {
                rc = SOAP_ERR_PARSE;
                break;
            }
            st[n] = '\0';
            if (strcmp(st, "CREATED") == 0)
                s->state = MKTO_SYNC_CREATED;
            else if (strcmp(st, "UPDATED") == 0)
                s->state = MKTO_SYNC_UPDATED;
            else if (strcmp(st, "FAILED") == 0)
                s->state = MKTO_SYNC_FAILED;
            else
                rc = SOAP_ERR_PARSE;
            have_status = true;
        } else if (is_child(c, "error") && s->error == NULL) {
            rc = text_dup_nillable(c, &s->error);
        }
    }
    if (rc == SOAP_OK && !have_status)
        rc = SOAP_ERR_PARSE;
    if (rc == SOAP_OK && !have_id)
        s->lead_id = fallback_id;
    if (rc != SOAP_OK)
        soap_set_err(err, rc, rc == SOAP_ERR_OOM ? "out of memory reading a sync status"
                                                 : "malformed syncStatus");
    return rc;
}

/* Shared body of the two sync parsers. */
static int parse_sync(const char *body, size_t len, size_t max_len, op which,
                      mkto_sync_result *out, mkto_fault *fault, soap_err *err)
{
    xmlDocPtr doc = NULL;
    xmlNode *result = NULL;
    reset_outs(fault, err);
    if (out == NULL) {
        soap_set_err(err, SOAP_ERR_INVALID, "no output struct");
        return SOAP_ERR_INVALID;
    }
    memset(out, 0, sizeof(*out));
    int rc = open_response(body, len, max_len, which, &doc, &result, fault, err);
    if (rc != SOAP_OK)
        goto out;

    if (which == OP_SYNC_LEAD) {
        const xmlNode *st = find_child(result, "syncStatus");
        const xmlNode *idn = find_child(result, "leadId");
        int64_t id = 0;
        if (st == NULL) {
            rc = SOAP_ERR_PARSE;
            soap_set_err(err, rc, "syncLead result has no syncStatus");
            goto out;
        }
        if (idn != NULL && text_int(idn, 0, INT64_MAX, true, &id) != SOAP_OK) {
            rc = SOAP_ERR_PARSE;
            soap_set_err(err, rc, "syncLead result has a malformed leadId");
            goto out;
        }
        out->statuses = calloc(1, sizeof(*out->statuses));
        if (out->statuses == NULL) {
            rc = SOAP_ERR_OOM;
            soap_set_err(err, rc, "out of memory reading a sync status");
            goto out;
        }
        out->nstatuses = 1;
        rc = parse_status(st, id, &out->statuses[0], err);
        goto out;
    }

    const xmlNode *list = find_child(result, "syncStatusList");
    if (list == NULL) {
        rc = SOAP_ERR_PARSE;
        soap_set_err(err, rc, "syncMultipleLeads result has no syncStatusList");
        goto out;
    }
    size_t n = count_children(list, "syncStatus");
    if (n > 0) {
        out->statuses = calloc(n, sizeof(*out->statuses));
        if (out->statuses == NULL) {
            rc = SOAP_ERR_OOM;
            soap_set_err(err, rc, "out of memory reading sync statuses");
            goto out;
        }
    }
    for (const xmlNode *c = list->children; c != NULL && rc == SOAP_OK; c = c->next) {
        if (is_child(c, "syncStatus"))
            rc = parse_status(c, 0, &out->statuses[out->nstatuses++], err);
    }
out:
    if (rc != SOAP_OK)
        mkto_sync_result_clear(out);
    if (doc != NULL)
        xmlFreeDoc(doc);
    return rc;
}

int soap_parse_sync_lead(const char *body, size_t len, size_t max_len, mkto_sync_result *out,
                         mkto_fault *fault, soap_err *err)
{
    return parse_sync(body, len, max_len, OP_SYNC_LEAD, out, fault, err);
}

int soap_parse_sync_multiple_leads(const char *body, size_t len, size_t max_len,
                                   mkto_sync_result *out, mkto_fault *fault, soap_err *err)
{
    return parse_sync(body, len, max_len, OP_SYNC_MULTIPLE, out, fault, err);
}
