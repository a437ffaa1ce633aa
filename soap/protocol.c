/* soap/protocol.c - mktows 2_3 behind the engine's protocol interface
 * (marketo/protocol.h): a signed envelope POSTed to the SOAP endpoint, the
 * answer read by soap/parse.c.
 *
 * The instance holds the endpoint and the credentials; each build signs
 * with a fresh timestamp, so a retry after 20016 (request expired) goes out
 * with a new signature.
 */
#include "soap/soap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marketo/protocol.h"

typedef struct soap_protocol {
    mkto_protocol base;       /* first: the engine holds a pointer to it */
    char *endpoint;           /* SOAP URL */
    char *user_id;            /* mktowsUserId */
    char *encryption_key;     /* HMAC key (secret; wiped on free) */
} soap_protocol;

static int sp_build(mkto_protocol *p, const mkto_call *call, mkto_request *out, mkto_err *err)
{
    soap_protocol *sp = (soap_protocol *)p;
    soap_err serr = {0};
    char ts[SOAP_TIMESTAMP_LEN];
    if (soap_timestamp_now(ts) != SOAP_OK) {
        snprintf(err->msg, sizeof err->msg, "cannot format the timestamp");
        return -1;
    }
    soap_auth auth = {.user_id = sp->user_id, .encryption_key = sp->encryption_key,
                      .timestamp = ts};
    int rc;
    if (call->op == MKTO_OP_SYNC_LEADS)
        rc = soap_build_sync_multiple_leads(&auth, call->leads, call->nleads, call->dedup,
                                            &out->body, &out->body_len, &serr);
    else
        rc = soap_build_get_multiple_leads(&auth, call->query, &out->body, &out->body_len, &serr);
    if (rc != SOAP_OK) {
        snprintf(err->msg, sizeof err->msg, "%s", serr.msg);
        mkto_request_clear(out);
        return -1;
    }
    out->method = "POST";
    out->url = strdup(sp->endpoint);
    if (!out->url || mkto_request_add_header(out, "Content-Type: text/xml; charset=UTF-8") != 0 ||
        mkto_request_add_header(out, "SOAPAction: \"\"") != 0) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        mkto_request_clear(out);
        return -1;
    }
    return 0;
}

static mkto_parsed sp_parse(mkto_protocol *p, mkto_op op, long http_status, const char *body,
                            size_t len, mkto_answer *ans, mkto_err *err)
{
    (void)http_status; /* faults come with 500, answers with 200: the body decides */
    soap_err serr = {0};
    int rc;
    if (op == MKTO_OP_SYNC_LEADS)
        rc = soap_parse_sync_multiple_leads(body, len, p->max_response, ans->sync, ans->fault,
                                            &serr);
    else
        rc = soap_parse_get_multiple_leads(body, len, p->max_response, ans->leads, ans->fault,
                                           &serr);
    switch (rc) {
    case SOAP_OK:
        return MKTO_PARSED_OK;
    case SOAP_ERR_FAULT:
        return MKTO_PARSED_FAULT;
    case SOAP_ERR_TOO_LARGE:
        snprintf(err->msg, sizeof err->msg, "%s", serr.msg);
        return MKTO_PARSED_TOO_LARGE;
    default:
        snprintf(err->msg, sizeof err->msg, "%s", serr.msg);
        return MKTO_PARSED_FOREIGN;
    }
}

static void sp_free(mkto_protocol *p)
{
    soap_protocol *sp = (soap_protocol *)p;
    if (!sp)
        return;
    if (sp->encryption_key) {
        explicit_bzero(sp->encryption_key, strlen(sp->encryption_key));
        free(sp->encryption_key);
    }
    free(sp->user_id);
    free(sp->endpoint);
    free(sp);
}

static const mkto_protocol_ops soap_protocol_ops = {
    .build = sp_build,
    .parse = sp_parse,
    .free = sp_free,
};

mkto_protocol *soap_protocol_new(const char *endpoint, const char *user_id,
                                 const char *encryption_key, size_t max_response)
{
    if (!endpoint || !endpoint[0])
        return NULL;
    soap_protocol *sp = calloc(1, sizeof *sp);
    if (!sp)
        return NULL;
    sp->base.ops = &soap_protocol_ops;
    sp->base.name = "soap";
    sp->base.op_names[MKTO_OP_GET_LEADS] = "getMultipleLeads";
    sp->base.op_names[MKTO_OP_SYNC_LEADS] = "syncMultipleLeads";
    sp->base.max_keys_per_call = SOAP_MAX_KEYS_PER_CALL;
    sp->base.max_sync_per_call = SOAP_MAX_SYNC_PER_CALL;
    sp->base.max_batch_size = SOAP_MAX_BATCH_SIZE;
    sp->base.max_response = max_response > 0 ? max_response : SOAP_DEFAULT_MAX_RESPONSE;
    sp->endpoint = strdup(endpoint);
    sp->user_id = strdup(user_id ? user_id : "");
    sp->encryption_key = strdup(encryption_key ? encryption_key : "");
    if (!sp->endpoint || !sp->user_id || !sp->encryption_key) {
        sp_free(&sp->base);
        return NULL;
    }
    return &sp->base;
}
