/* tests/sim/harness.h - starts marketo-sim ($SIM_BIN) on 127.0.0.1:0 for a
 * test program, talks HTTP to it with libcurl and builds signed envelopes
 * with soap/'s builders. */
#ifndef TESTS_SIM_HARNESS_H
#define TESTS_SIM_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "soap/soap.h"
#include "tests/common/spawn.h"

/* Credentials every test sim is started with. */
#define SIMH_USER "simtest_user_1"
#define SIMH_KEY "simtest-encryption-key"

/* One running sim. */
typedef struct simh {
    spawn_proc proc;    /* child process */
    int port;           /* port it bound */
    char soap_url[96];  /* http://127.0.0.1:PORT/soap/mktows/2_3 */
    char base[64];      /* http://127.0.0.1:PORT */
} simh;

/* One HTTP answer. */
typedef struct simh_resp {
    int curl_rc;        /* CURLcode (0 = got an answer) */
    long status;        /* HTTP status */
    char *body;         /* NUL-terminated body (malloc'd) */
    size_t len;         /* bytes in body */
    char ctype[128];    /* Content-Type */
} simh_resp;

/* Starts a sim with the standard flags plus extra (NULL-terminated, may be
 * NULL). Returns 0 or -1 (SIM_BIN unset, no port line within 10 s; nothing
 * is left running). */
int simh_start(simh *s, const char *const *extra);
/* SIGTERM, then waits up to 10 s (SIGKILL after): returns the exit status
 * (0 expected) or -1 (killed, or not running). */
int simh_stop(simh *s);

/* POST/GET to base + path. Return 0 when an HTTP answer came back. */
int simh_post(const simh *s, const char *path, const char *body, size_t len, simh_resp *r);
int simh_get(const simh *s, const char *path, simh_resp *r);
void simh_resp_free(simh_resp *r);

/* Auth for the builders (timestamp NULL: now). */
soap_auth simh_auth(void);
/* Wraps inner XML (the params element, using prefix ns1 and xsi) in an
 * envelope signed for the test sim; ts NULL = now, user/key NULL =
 * standard. malloc'd. */
char *simh_envelope(const char *inner, const char *user, const char *key, const char *ts);
/* POSTs an envelope to the SOAP endpoint; frees env. */
int simh_soap(const simh *s, char *env, simh_resp *r);
/* The fault code of a SOAP fault answer (500), or -1. */
int simh_fault_code(const simh_resp *r);

/* GET /_sim/stats parsed (caller decrefs), or NULL. */
json_t *simh_stats(const simh *s);
/* calls / faults of op in stats. */
long simh_stat(json_t *stats, const char *op, const char *field);
/* POST JSON to an admin path; returns the HTTP status or -1. */
long simh_admin(const simh *s, const char *path, const char *json);

/* getMultipleLeads through the builder + parser. Returns the soap_status of
 * the parser; fault filled on SOAP_ERR_FAULT. */
int simh_get_multiple(const simh *s, const mkto_query *p, mkto_leads *out,
                      mkto_fault *fault);
/* getLead likewise. */
int simh_get_lead(const simh *s, mkto_key_type t, const char *value, mkto_leads *out,
                  mkto_fault *fault);
/* syncMultipleLeads likewise. */
int simh_sync(const simh *s, const mkto_lead *leads, size_t n, bool dedup,
              mkto_sync_result *out, mkto_fault *fault);
/* Value of attribute name in l, or NULL. */
const char *simh_attr(const mkto_lead *l, const char *name);

#endif /* TESTS_SIM_HARNESS_H */
