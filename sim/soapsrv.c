/* sim/soapsrv.c - one SOAP call from body to answer (see soapsrv.h).
 *
 * Order of checks, each answering with the first fault it finds:
 *   1. body too large, not well-formed XML, DOCTYPE, nesting deeper than
 *      SOAP_XML_MAX_DEPTH (soap_xml_read: the gateway's own guarded parse),
 *      no Envelope/Body or no element in Body: 20012 (counted under
 *      "unknown");
 *   2. AuthenticationHeader missing or incomplete, wrong mktowsUserId or
 *      signature: 20014; requestTimestamp unparsable or more than 15 minutes
 *      off the sim's clock: 20016;
 *   3. an element in Body other than the four operations: 20019;
 *   4. limits (concurrency 20024, rolling window 20023, daily quota 20015),
 *      for authenticated calls only; refused calls do not enter the window;
 *   5. the fault-injection rule of the operation: its hold (until
 *      hold_in_flight calls are in flight, at most hold_max_ms), then the
 *      latency (--latency-ms plus the rule's), both waited without holding
 *      any lock of the caller;
 *   6. the operation itself (parameter faults, then the data), unless the
 *      rule drops the call before it (a drop with drop_after_op runs it
 *      and then drops);
 *   7. the rule's latency_after_ms, slept holding no lock: the answer
 *      leaves after the store was read or written.
 */
#include "sim/soapsrv.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sim/faults.h"
#include "sim/limits.h"
#include "sim/ops.h"
#include "sim/stats.h"
#include "sim/util.h"
#include "soap/soap.h"
#include "soap/xmlsafe.h"

/* The endpoint's settings, set once by sim_soap_init(). */
static sim_soap_cfg g_cfg;

const sim_soap_cfg *sim_soap_config(void)
{
    return &g_cfg;
}

int sim_soap_init(const sim_soap_cfg *cfg)
{
    g_cfg = *cfg;
    return sim_stream_init();
}

/* Whether node is the element ns:local. */
static bool is_elem(xmlNodePtr node, const char *ns, const char *local)
{
    return node != NULL && node->type == XML_ELEMENT_NODE && sx_is(node, local) &&
           node->ns != NULL && node->ns->href != NULL &&
           strcmp((const char *)node->ns->href, ns) == 0;
}

/* Finds the AuthenticationHeader (or NULL) and the params element of a
 * parsed envelope. Returns 0 or 20012. */
static int envelope_parts(xmlDocPtr doc, xmlNodePtr *auth, xmlNodePtr *params)
{
    *auth = *params = NULL;
    xmlNodePtr env = xmlDocGetRootElement(doc);
    if (!is_elem(env, SOAP_ENV_NS, "Envelope"))
        return 20012;
    xmlNodePtr body = NULL;
    for (xmlNodePtr c = sx_first_elem(env); c != NULL; c = sx_next_elem(c)) {
        if (is_elem(c, SOAP_ENV_NS, "Header") && body == NULL) {
            for (xmlNodePtr h = sx_first_elem(c); h != NULL; h = sx_next_elem(h))
                if (is_elem(h, SOAP_NS, "AuthenticationHeader") && *auth == NULL)
                    *auth = h;
        } else if (is_elem(c, SOAP_ENV_NS, "Body") && body == NULL) {
            body = c;
        } else {
            return 20012;
        }
    }
    *params = sx_first_elem(body);
    return *params == NULL ? 20012 : 0;
}

/* The operation named by the params element (SIM_OP_UNKNOWN for others). */
static sim_op params_op(xmlNodePtr params)
{
    static const struct {
        const char *elem;  /* params element */
        sim_op op;         /* operation */
    } map[] = {
        {"paramsGetLead", SIM_OP_GET_LEAD},
        {"paramsGetMultipleLeads", SIM_OP_GET_MULTIPLE},
        {"paramsSyncLead", SIM_OP_SYNC_LEAD},
        {"paramsSyncMultipleLeads", SIM_OP_SYNC_MULTIPLE},
    };
    for (size_t i = 0; params != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (is_elem(params, SOAP_NS, map[i].elem))
            return map[i].op;
    return SIM_OP_UNKNOWN;
}

/* Checks the AuthenticationHeader. Returns 0, 20014 or 20016. */
static int check_auth(xmlNodePtr auth, int64_t now_ms)
{
    if (auth == NULL)
        return 20014;
    xmlNodePtr user = NULL, sig = NULL, ts = NULL;
    for (xmlNodePtr c = sx_first_elem(auth); c != NULL; c = sx_next_elem(c)) {
        if (sx_is(c, "mktowsUserId") && user == NULL)
            user = c;
        else if (sx_is(c, "requestSignature") && sig == NULL)
            sig = c;
        else if (sx_is(c, "requestTimestamp") && ts == NULL)
            ts = c;
    }
    if (user == NULL || sig == NULL || ts == NULL)
        return 20014;
    int fault = 20014;
    char *u = sx_text(user), *s = sx_text(sig), *t = sx_text(ts);
    char want[SOAP_SIGNATURE_LEN];
    time_t when;
    if (u == NULL || s == NULL || t == NULL || strcmp(u, g_cfg.user_id) != 0)
        goto out;
    if (soap_sign(g_cfg.encryption_key, t, u, want) != SOAP_OK || strlen(s) != 40 ||
        CRYPTO_memcmp(s, want, 40) != 0)
        goto out;
    if (soap_timestamp_parse(t, &when) != SOAP_OK) {
        fault = 20016;
        goto out;
    }
    int64_t skew = (int64_t)when - now_ms / 1000;
    fault = (skew > SIM_MAX_CLOCK_SKEW_S || skew < -SIM_MAX_CLOCK_SKEW_S) ? 20016 : 0;
out:
    free(u);
    free(s);
    free(t);
    return fault;
}

/* Runs the operation on its params element. Returns 0 or a fault code. */
static int run_op(sim_op op, xmlNodePtr params, char **body, size_t *len)
{
    switch (op) {
    case SIM_OP_GET_LEAD: return sim_op_get_lead(params, body, len);
    case SIM_OP_GET_MULTIPLE: return sim_op_get_multiple(params, body, len);
    case SIM_OP_SYNC_LEAD: return sim_op_sync_lead(params, body, len);
    case SIM_OP_SYNC_MULTIPLE: return sim_op_sync_multiple(params, body, len);
    default: return 20019;
    }
}

/* The HTML page of an injected 503. */
static const char page_503[] =
    "<html><head><title>503 Service Unavailable</title></head>"
    "<body><h1>503 Service Unavailable</h1><p>The server is temporarily unable to "
    "service your request.</p></body></html>\n";

void sim_soap_handle(const char *body, size_t len, bool too_large, int64_t arrival_ms,
                     sim_soap_reply *out)
{
    sim_op op = SIM_OP_UNKNOWN;
    xmlDocPtr doc = NULL;
    xmlNodePtr auth = NULL, params = NULL;
    bool accepted = false;
    sim_decision d = {0};
    int fault = 0;
    memset(out, 0, sizeof(*out));
    out->status = 200;
    out->content_type = "text/xml; charset=UTF-8";
    if (too_large || body == NULL || len == 0 || len > SIM_MAX_BODY) {
        fault = 20012;
    } else {
        /* the gateway's own guarded parse: no DOCTYPE, hence no entities */
        fault = soap_xml_read(body, len, SIM_MAX_BODY, &doc, NULL) != SOAP_OK
                    ? 20012
                    : envelope_parts(doc, &auth, &params);
        if (fault == 0)
            op = params_op(params);
    }
    sim_stats_call(op, arrival_ms);
    if (fault == 0)
        fault = check_auth(auth, sim_now_ms());
    if (fault == 0 && op == SIM_OP_UNKNOWN)
        fault = 20019;
    if (fault == 0) {
        fault = sim_limits_acquire(sim_now_ms());
        accepted = fault == 0;
    }
    if (accepted) {
        sim_faults_decide(op, &d);
        if (d.hold_in_flight > 0)
            (void)sim_stats_wait_in_flight(d.hold_in_flight, d.hold_max_ms);
        sim_sleep_ms(g_cfg.latency_ms + d.latency_ms);
        if (d.action == SIM_ACT_FAULT)
            fault = d.fault_code;
    }
    if (d.action == SIM_ACT_DROP && !d.drop_after_op) {
        out->drop = true;
    } else if (d.action == SIM_ACT_HTTP_503) {
        out->status = 503;
        out->content_type = "text/html; charset=UTF-8";
        out->body = strdup(page_503);
        out->len = out->body != NULL ? strlen(out->body) : 0;
    } else {
        if (fault == 0)
            fault = run_op(op, params, &out->body, &out->len);
        if (fault != 0) {
            free(out->body);
            out->body = NULL;
            out->status = 500;
            if (sim_fault_body(fault, &out->body, &out->len) != 0) {
                out->body = NULL;
                out->len = 0;
            }
        }
        if (d.action == SIM_ACT_TRUNCATE)
            out->len /= 2;
        if (d.action == SIM_ACT_DROP) {
            /* drop_after_op: the operation ran (a sync is applied), the
             * answer never leaves */
            free(out->body);
            out->body = NULL;
            out->len = 0;
            out->drop = true;
        }
    }
    /* the store has been read or written: answer (or drop) late */
    if (accepted && d.latency_after_ms > 0)
        sim_sleep_ms(d.latency_after_ms);
    if (fault != 0 || d.action != SIM_ACT_NONE)
        sim_stats_fault(op);
    if (accepted)
        sim_limits_release();
    xmlFreeDoc(doc);
}
