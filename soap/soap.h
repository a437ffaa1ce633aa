/* soap/soap.h - Marketo mktows 2_3 over SOAP 1.1: signing, envelopes, parsers.
 *
 * Bytes in, structs out. Nothing here opens a socket, reads a file or
 * touches global state beyond libxml2's own initialisation (soap_init()).
 *
 * Ownership: every builder returns a malloc'd buffer the caller frees with
 * free(). Every parser fills a result struct the caller releases with the
 * matching soap_*_clear(); those functions accept a zeroed or half-filled
 * struct (and NULL). Input structs are only read, never kept.
 *
 * Errors: functions return SOAP_OK (0) or a negative soap_status and, when
 * given a soap_err, fill it with a short English message that never contains
 * a secret or a key value (it may name an element).
 */
#ifndef SOAP_SOAP_H
#define SOAP_SOAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "marketo/model.h"

#define SOAP_NS "http://www.marketo.com/mktows/"
#define SOAP_ENV_NS "http://schemas.xmlsoap.org/soap/envelope/"
#define SOAP_XSI_NS "http://www.w3.org/2001/XMLSchema-instance"

/* Marketo's documented per-call limits. */
/* LeadKeySelector keys (100; more are ignored by Marketo): lead-key
 * identity's number, marketo/leadkey.h */
#define SOAP_MAX_KEYS_PER_CALL MKTO_SOAP_KEYS_PER_CALL
#define SOAP_MAX_SYNC_PER_CALL 300   /* syncMultipleLeads records */
#define SOAP_MAX_BATCH_SIZE 1000     /* getMultipleLeads batchSize */
#define SOAP_MAX_WINDOW_DAYS 30      /* LastUpdateAtSelector oldest..latest */

/* Default cap on a response body the parsers accept (callers may pass less). */
#define SOAP_DEFAULT_MAX_RESPONSE (64u * 1024u * 1024u)

typedef enum soap_status {
    SOAP_OK = 0,
    SOAP_ERR_INVALID = -1,   /* caller's input cannot be encoded (bad char, missing field) */
    SOAP_ERR_PARSE = -2,     /* body is not a well-formed, expected SOAP response */
    SOAP_ERR_FAULT = -3,     /* body is a SOAP fault: see the mkto_fault out-param */
    SOAP_ERR_TOO_LARGE = -4, /* body exceeds the size cap */
    SOAP_ERR_OOM = -5,       /* allocation failed */
} soap_status;

/* Where an error was found and why; filled by the function that found it. */
typedef struct soap_err {
    int code;       /* a soap_status value */
    char msg[160];  /* human text, no secrets, no key values */
} soap_err;

/* Call once per process before threads start (initialises libxml2). It also
 * installs, process-wide, an external entity loader that refuses every URL
 * and silences libxml2's error printing: afterwards libxml2 cannot read
 * files by name (xmlReadFile fails; read into memory and use xmlReadMemory).
 * Both live in soap/xmlsafe.c, beside the parse entry they guard. */
void soap_init(void);
/* Call once at exit (frees libxml2's globals; keeps leak checkers quiet). */
void soap_cleanup(void);

/* ---- signing (soap/sign.c) ----------------------------------------------- */

#define SOAP_TIMESTAMP_LEN 32  /* buffer size for a W3C timestamp */
#define SOAP_SIGNATURE_LEN 41  /* 40 hex digits and NUL */

/* Formats t as W3C "2013-08-02T15:47:06-07:00" at the given UTC offset in
 * seconds (east positive; must be a whole number of minutes, |off| < 24 h).
 * Returns SOAP_OK or SOAP_ERR_INVALID. */
int soap_timestamp_format(time_t t, long utc_offset_s, char out[SOAP_TIMESTAMP_LEN]);
/* Same for now, at the process's local offset. */
int soap_timestamp_now(char out[SOAP_TIMESTAMP_LEN]);
/* Parses a W3C/RFC 3339 date-time ("...Z", "...+hh:mm", optional fraction)
 * into seconds since the epoch. Returns SOAP_OK or SOAP_ERR_INVALID. */
int soap_timestamp_parse(const char *s, time_t *out);

/* requestSignature: lower-case hex HMAC-SHA1 keyed with encryption_key over
 * timestamp + user_id. Returns SOAP_OK or SOAP_ERR_INVALID (NULL input). */
int soap_sign(const char *encryption_key, const char *timestamp, const char *user_id,
              char out[SOAP_SIGNATURE_LEN]);

/* Credentials for one envelope. timestamp NULL: the builder uses now. */
typedef struct soap_auth {
    const char *user_id;         /* mktowsUserId */
    const char *encryption_key;  /* HMAC key; never written into the envelope */
    const char *timestamp;       /* W3C timestamp to sign and send (< 32 bytes), or NULL */
} soap_auth;

/* ---- envelopes (soap/envelope.c) -------------------------------------------- */

/* Each builder writes a complete SOAP 1.1 envelope (XML declaration, header
 * with AuthenticationHeader, body with the namespaced params element) into a
 * malloc'd NUL-terminated buffer: *out (caller frees), *outlen its length.
 * Every value is escaped by libxml2; a value that XML cannot carry (control
 * characters other than tab/CR/LF, invalid UTF-8) is SOAP_ERR_INVALID. */
int soap_build_get_lead(const soap_auth *auth, mkto_key_type t, const char *key_value,
                        char **out, size_t *outlen, soap_err *err);
int soap_build_get_multiple_leads(const soap_auth *auth, const mkto_query *p,
                                  char **out, size_t *outlen, soap_err *err);
/* syncLead: returnLead is sent as given; marketo_cookie may be NULL.
 * For both sync builders: Id must fit xs:int (0..2^31-1), ForeignSysType is
 * CUSTOM, SFDC or NETSUITE, and an attribute whose value is NULL is sent as
 * an empty attrValue (the WSDL does not allow nil there). */
int soap_build_sync_lead(const soap_auth *auth, const mkto_lead *lead, bool return_lead,
                         const char *marketo_cookie, char **out, size_t *outlen, soap_err *err);
/* syncMultipleLeads: 1..300 leads; each needs id, email or foreign_sys_person_id.
 * Attribute types are not sent (the WSDL allows them, Marketo ignores them). */
int soap_build_sync_multiple_leads(const soap_auth *auth, const mkto_lead *leads, size_t nleads,
                                   bool dedup_enabled, char **out, size_t *outlen, soap_err *err);

/* ---- responses (soap/parse.c) ------------------------------------------------- */

/* The parsers take the raw HTTP body (any HTTP status: Marketo sends faults
 * with 500). They refuse bodies over max_len (0: SOAP_DEFAULT_MAX_RESPONSE),
 * any DOCTYPE, entity, external reference or nesting deeper than 64, and
 * anything that is not the expected success element or a Fault.
 * Returns SOAP_OK (out filled), SOAP_ERR_FAULT (fault filled, out empty),
 * or another soap_status with err filled. */
int soap_parse_get_lead(const char *body, size_t len, size_t max_len,
                        mkto_leads *out, mkto_fault *fault, soap_err *err);
int soap_parse_get_multiple_leads(const char *body, size_t len, size_t max_len,
                                  mkto_leads *out, mkto_fault *fault, soap_err *err);
int soap_parse_sync_lead(const char *body, size_t len, size_t max_len,
                         mkto_sync_result *out, mkto_fault *fault, soap_err *err);
int soap_parse_sync_multiple_leads(const char *body, size_t len, size_t max_len,
                                   mkto_sync_result *out, mkto_fault *fault, soap_err *err);

/* ---- the engine's protocol (soap/protocol.c) ----------------------------------- */

struct mkto_protocol;
/* mktows 2_3 behind marketo/protocol.h: POSTs signed envelopes to endpoint
 * (getMultipleLeads, syncMultipleLeads) and reads the answers with the
 * parsers above, refusing bodies over max_response (0: the default). The
 * strings are copied; the key is wiped when the protocol is freed. NULL
 * when endpoint is empty or memory runs out. */
struct mkto_protocol *soap_protocol_new(const char *endpoint, const char *user_id,
                                        const char *encryption_key, size_t max_response);

#endif /* SOAP_SOAP_H */
