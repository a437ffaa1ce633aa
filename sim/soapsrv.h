/* sim/soapsrv.h - marketo-sim's SOAP endpoint: parses one request body,
 * checks the AuthenticationHeader, applies the limits and the injected
 * faults, runs getLead / getMultipleLeads / syncLead / syncMultipleLeads
 * against the store and writes the SOAP answer. Knows nothing of HTTP
 * beyond the status code it picks.
 */
#ifndef SIM_SOAPSRV_H
#define SIM_SOAPSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/store.h"

/* Largest request body accepted; bigger ones are answered with 20012. */
#define SIM_MAX_BODY (16u * 1024u * 1024u)
/* Largest distance between requestTimestamp and the sim's clock. */
#define SIM_MAX_CLOCK_SKEW_S (15 * 60)

/* Settings of the endpoint (strings are borrowed for the process life). */
typedef struct sim_soap_cfg {
    const char *user_id;         /* expected mktowsUserId */
    const char *encryption_key;  /* HMAC key of requestSignature */
    int64_t latency_ms;          /* added to every accepted call (--latency-ms) */
    sim_store *store;            /* the data */
} sim_soap_cfg;

/* One answer. */
typedef struct sim_soap_reply {
    int status;                /* HTTP status */
    const char *content_type;  /* static string */
    char *body;                /* malloc'd (caller frees), may be NULL when drop */
    size_t len;                /* bytes of body to send */
    bool drop;                 /* close the connection without answering */
} sim_soap_reply;

/* Sets up the endpoint (random stream-position secret). Returns 0 or -1. */
int sim_soap_init(const sim_soap_cfg *cfg);

/* Handles one POST body that arrived at arrival_ms (too_large: the body
 * exceeded SIM_MAX_BODY and was not kept). Counts the call in the stats,
 * may sleep for injected latency (holding no lock), and fills *out. */
void sim_soap_handle(const char *body, size_t len, bool too_large, int64_t arrival_ms,
                     sim_soap_reply *out);

/* Message of a Marketo fault code ("Authentication failed"); static. */
const char *sim_fault_message(int code);

#endif /* SIM_SOAPSRV_H */
