/* sim/opsync.c - syncLead and syncMultipleLeads: parse the LeadRecords,
 * upsert them under the store's write lock, answer with the statuses. */
#include "sim/ops.h"

#include <stdlib.h>
#include <string.h>

#include "soap/soap.h"

/* One parsed LeadRecord; owns its strings. */
typedef struct rec {
    sim_sync_rec r;       /* what the store reads (points into the fields below) */
    char *email;          /* Email */
    char *fsp_id;         /* ForeignSysPersonId */
    char *fsp_type;       /* ForeignSysType */
    sim_sync_attr *attrs; /* attributes (names and values malloc'd) */
    size_t nattrs;        /* entries in attrs */
} rec;

/* Frees what rec owns. */
static void rec_free(rec *x)
{
    free(x->email);
    free(x->fsp_id);
    free(x->fsp_type);
    for (size_t i = 0; i < x->nattrs; i++) {
        free((char *)x->attrs[i].name);
        free((char *)x->attrs[i].value);
    }
    free(x->attrs);
    memset(x, 0, sizeof(*x));
}

/* Text of an optional, nillable element: NULL when absent or nil; *oom on
 * allocation failure. */
static char *opt_text(xmlNodePtr n, bool *oom)
{
    if (n == NULL || sx_is_nil(n))
        return NULL;
    char *s = sx_text(n);
    if (s == NULL)
        *oom = true;
    return s;
}

/* Parses one leadAttributeList/attribute into a. Returns 0 or a fault. */
static int parse_attr(xmlNodePtr node, sim_sync_attr *a)
{
    static const char *const seq[] = {"attrName", "attrType", "attrValue"};
    xmlNodePtr c[3];
    int fault = sx_seq(node, seq, 3, c);
    if (fault != 0)
        return fault;
    if (c[0] == NULL || c[2] == NULL)
        return 20012;
    char *name = sx_text(c[0]);
    char *value = sx_is_nil(c[2]) ? strdup("") : sx_text(c[2]);
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return 10001;
    }
    a->name = name;
    a->value = value;
    return 0;
}

/* Parses one LeadRecord element into x. Returns 0 or a fault code. */
static int parse_rec(xmlNodePtr node, rec *x)
{
    static const char *const seq[] = {"Id", "Email", "ForeignSysPersonId", "ForeignSysType",
                                      "leadAttributeList"};
    xmlNodePtr c[5];
    bool oom = false;
    memset(x, 0, sizeof(*x));
    int fault = sx_seq(node, seq, 5, c);
    if (fault != 0)
        return fault;
    if (c[0] != NULL && !sx_is_nil(c[0])) {
        if ((fault = sx_int(c[0], &x->r.id)) != 0)
            return fault;
        x->r.has_id = true;
    }
    x->email = opt_text(c[1], &oom);
    x->fsp_id = opt_text(c[2], &oom);
    x->fsp_type = opt_text(c[3], &oom);
    if (oom)
        return 10001;
    if (x->fsp_type != NULL && strcmp(x->fsp_type, "CUSTOM") != 0 &&
        strcmp(x->fsp_type, "SFDC") != 0 && strcmp(x->fsp_type, "NETSUITE") != 0)
        return 20012;
    if (c[4] != NULL && !sx_is_nil(c[4])) {
        size_t n = 0;
        for (xmlNodePtr it = sx_first_elem(c[4]); it != NULL; it = sx_next_elem(it))
            n++;
        x->attrs = calloc(n > 0 ? n : 1, sizeof(*x->attrs));
        if (x->attrs == NULL)
            return 10001;
        for (xmlNodePtr it = c[4]->children; it != NULL; it = it->next) {
            if (it->type == XML_TEXT_NODE || it->type == XML_COMMENT_NODE)
                continue;
            if (it->type != XML_ELEMENT_NODE || !sx_is(it, "attribute"))
                return 20012;
            if ((fault = parse_attr(it, &x->attrs[x->nattrs])) != 0)
                return fault;
            x->nattrs++;
        }
    }
    x->r.email = x->email;
    x->r.fsp_id = x->fsp_id;
    x->r.fsp_type = x->fsp_type;
    x->r.attrs = x->attrs;
    x->r.nattrs = x->nattrs;
    return 0;
}

/* Name of a sync state as the WSDL spells it. */
static const char *state_name(sim_sync_state s)
{
    return s == SIM_SYNC_CREATED ? "CREATED" : s == SIM_SYNC_UPDATED ? "UPDATED" : "FAILED";
}

/* Writes one <syncStatus>. */
static void write_status(xout *x, int64_t id, sim_sync_state s, const char *err)
{
    xout_start(x, "syncStatus");
    xout_int(x, "leadId", id);
    xout_text(x, "status", state_name(s));
    if (s == SIM_SYNC_FAILED)
        xout_text(x, "error", err);
    else
        xout_nil(x, "error");
    xout_end(x);
}

int sim_op_sync_lead(xmlNodePtr params, char **body, size_t *len)
{
    static const char *const seq[] = {"leadRecord", "returnLead", "marketoCookie"};
    xmlNodePtr c[3];
    rec x;
    memset(&x, 0, sizeof(x));
    bool return_lead = false, locked = false;
    sim_store *st = sim_soap_config()->store;
    int fault = sx_seq(params, seq, 3, c);
    if (fault != 0)
        goto out;
    if (c[0] == NULL || sx_is_nil(c[0])) {
        fault = 20104;
        goto out;
    }
    if ((fault = parse_rec(c[0], &x)) != 0)
        goto out;
    if (c[1] == NULL || sx_is_nil(c[1])) {
        fault = 20109;
        goto out;
    }
    if ((fault = sx_bool(c[1], &return_lead)) != 0)
        goto out;
    int64_t id = 0;
    int code = 0;
    char err[96];
    sim_store_wrlock(st);
    locked = true;
    sim_sync_state s = sim_store_sync(st, &x.r, true, time(NULL), &id, &code, err, sizeof(err));
    if (s == SIM_SYNC_FAILED) {
        fault = code != 0 ? code : 20106;
        goto out;
    }
    xout o;
    if (xout_begin(&o, "successSyncLead") != 0) {
        fault = 10001;
        goto out;
    }
    xout_start(&o, "result");
    xout_int(&o, "leadId", id);
    xout_start(&o, "syncStatus");
    xout_int(&o, "leadId", id);
    xout_text(&o, "status", state_name(s));
    xout_nil(&o, "error");
    xout_end(&o);
    const sim_lead *l = return_lead ? sim_store_by_id(st, id) : NULL;
    if (l != NULL)
        xout_lead(&o, l, NULL);
    else
        xout_nil(&o, "leadRecord");
    if (xout_finish(&o, body, len) != 0)
        fault = 10001;
out:
    if (locked)
        sim_store_unlock(st);
    rec_free(&x);
    return fault;
}

int sim_op_sync_multiple(xmlNodePtr params, char **body, size_t *len)
{
    static const char *const seq[] = {"leadRecordList", "dedupEnabled"};
    xmlNodePtr c[2];
    rec *recs = NULL;
    size_t n = 0;
    bool dedup = true;
    int64_t *ids = NULL;
    sim_sync_state *states = NULL;
    char (*errs)[96] = NULL;
    sim_store *st = sim_soap_config()->store;
    int fault = sx_seq(params, seq, 2, c);
    if (fault != 0)
        goto out;
    if (c[0] == NULL || sx_is_nil(c[0])) {
        fault = 20104;
        goto out;
    }
    if (c[1] != NULL && !sx_is_nil(c[1]) && (fault = sx_bool(c[1], &dedup)) != 0)
        goto out;
    size_t total = 0;
    for (xmlNodePtr it = sx_first_elem(c[0]); it != NULL; it = sx_next_elem(it))
        total++;
    if (total == 0) {
        fault = 20104;
        goto out;
    }
    if (total > SOAP_MAX_SYNC_PER_CALL) {
        fault = 20110;
        goto out;
    }
    recs = calloc(total, sizeof(*recs));
    ids = calloc(total, sizeof(*ids));
    states = calloc(total, sizeof(*states));
    errs = calloc(total, sizeof(*errs));
    if (recs == NULL || ids == NULL || states == NULL || errs == NULL) {
        fault = 10001;
        goto out;
    }
    for (xmlNodePtr it = c[0]->children; it != NULL; it = it->next) {
        if (it->type == XML_TEXT_NODE || it->type == XML_COMMENT_NODE)
            continue;
        if (it->type != XML_ELEMENT_NODE || !sx_is(it, "leadRecord")) {
            fault = 20012;
            goto out;
        }
        fault = parse_rec(it, &recs[n]);
        n++;  /* parse_rec may have allocated: free it at out */
        if (fault != 0)
            goto out;
    }
    time_t now = time(NULL);
    sim_store_wrlock(st);
    for (size_t i = 0; i < n; i++) {
        int code = 0;
        states[i] = sim_store_sync(st, &recs[i].r, dedup, now, &ids[i], &code, errs[i],
                                   sizeof(errs[i]));
    }
    sim_store_unlock(st);
    xout o;
    if (xout_begin(&o, "successSyncMultipleLeads") != 0) {
        fault = 10001;
        goto out;
    }
    xout_start(&o, "result");
    xout_start(&o, "syncStatusList");
    for (size_t i = 0; i < n; i++)
        write_status(&o, ids[i], states[i], errs[i]);
    if (xout_finish(&o, body, len) != 0)
        fault = 10001;
out:
    for (size_t i = 0; recs != NULL && i < n; i++)
        rec_free(&recs[i]);
    free(recs);
    free(ids);
    free(states);
    free(errs);
    return fault;
}
