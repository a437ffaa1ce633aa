/* marketo/codes.h - every Marketo error code the gateway knows, in one table.
 *
 * One row per code: which API sends it, Marketo's documented message, how the
 * upstream engine treats it (retry class), whether it means "no lead matched"
 * and the gateway's HTTP answer when a request ends on it. Every reader (the
 * SOAP parser's retryable flag, the engine, the HTTP server's problem replies,
 * the lead routes, marketo-sim's fault texts) looks codes up here; adding a
 * code is adding a row to codes.c.
 *
 * Sources, read by tests/marketo/test_codes.c so the table cannot drift:
 * SOAP faults from ../shared/marketo/docs/error-codes.md, REST response- and
 * record-level codes from ../shared/marketo/rest/error-codes.md. (The REST
 * page's HTTP-level 413/414 are HTTP statuses, not codes, and are not here.)
 *
 * Codes are unique across both APIs (SOAP: 10001, 2xxxx; REST: 5xx-7xx,
 * 1xxx), so one number names one row. Everything returned has static
 * storage; nothing here allocates.
 */
#ifndef MARKETO_CODES_H
#define MARKETO_CODES_H

#include <stdbool.h>
#include <stddef.h>

/* Codes that code refers to by name. A code not listed here is still in the
 * table; give it a name when code needs to test for it. */
enum {
    /* REST (rest/error-codes.md) */
    MKTO_CODE_REST_TOKEN_INVALID = 601,  /* Access token invalid: get a new token */
    MKTO_CODE_REST_TOKEN_EXPIRED = 602,  /* Access token expired: get a new token */
    MKTO_CODE_REST_RATE_LIMIT = 606,     /* 100 calls per 20 s exceeded */
    MKTO_CODE_REST_DAILY_QUOTA = 607,    /* daily quota reached */
    MKTO_CODE_REST_CONCURRENCY = 615,    /* 10 concurrent calls exceeded */
    /* SOAP (docs/error-codes.md) */
    MKTO_CODE_INTERNAL_ERROR = 10001,    /* Internal Error: severe system failure */
    MKTO_CODE_SERVICE_FAILURE = 20011,   /* Internal Error: API service failure */
    MKTO_CODE_DAILY_QUOTA = 20015,       /* Request Limit Exceeded (daily quota) */
    MKTO_CODE_REQUEST_EXPIRED = 20016,   /* Request Expired: re-sign */
    MKTO_CODE_RATE_LIMIT = 20023,        /* Rate Limit Exceeded (100 per 20 s) */
    MKTO_CODE_CONCURRENCY = 20024,       /* Concurrency Limit Exceeded (10) */
    MKTO_CODE_LEAD_NOT_FOUND = 20103,    /* Lead Not Found */
};

/* The API(s) a code belongs to: a bit set. */
typedef enum mkto_api {
    MKTO_API_SOAP = 1u << 0, /* a SOAP fault's serviceException/code */
    MKTO_API_REST = 1u << 1, /* a REST errors[].code or reasons[].code */
} mkto_api;

/* What the upstream engine does when a call ends on a code. */
typedef enum mkto_retry {
    MKTO_RETRY_NONE = 0, /* final: the request ends on it (also every unknown code) */
    MKTO_RETRY_REAUTH,   /* retry at once with new credentials: SOAP re-signs with a
                          * fresh timestamp (20016), REST gets a new token (601, 602) */
    MKTO_RETRY_BACKOFF,  /* Marketo-side failure: retry after a jittered backoff */
    MKTO_RETRY_LIMITED,  /* rate or concurrency limit: retry after at least 1 s, and
                          * tell the client when (Retry-After) if it still ends on it */
    MKTO_RETRY_QUOTA,    /* daily quota spent: end now; retry after the next
                          * midnight US Central time */
} mkto_retry;

/* How the gateway answers a request that ends on a code (RFC 9457). */
typedef struct mkto_code_http {
    unsigned status;   /* HTTP status; 0: no mapping, answered like an unknown code */
    const char *type;  /* problem type slug (after "urn:marketo-gateway:problem:") */
    const char *title; /* problem title */
} mkto_code_http;

/* One row of the table. */
typedef struct mkto_code_info {
    int code;              /* Marketo's code */
    unsigned apis;         /* mkto_api bits: where Marketo sends it */
    const char *message;   /* Marketo's documented message, as the docs write it */
    mkto_retry retry;      /* what the engine does with it */
    bool lead_not_found;   /* "no lead matched the key": a lookup answers it as
                            * an empty result (GET /leads/{id}: 404) */
    mkto_code_http http;   /* the gateway's answer when a request ends on it */
} mkto_code_info;

/* The row of code, or NULL for a code the table does not know. */
const mkto_code_info *mkto_code_find(int code);

/* The whole table, sorted by code (for tests and listings); *n gets the
 * number of rows. */
const mkto_code_info *mkto_code_table(size_t *n);

/* The retry class of code; MKTO_RETRY_NONE for an unknown code. */
mkto_retry mkto_code_retry(int code);

/* Whether a call that ended on code is worth repeating within the same
 * request: REAUTH, BACKOFF and LIMITED (not QUOTA, not unknown codes). This
 * is mkto_fault.retryable. */
bool mkto_code_retryable(int code);

/* Marketo's documented message for code, or NULL for an unknown code. */
const char *mkto_code_message(int code);

/* Whether code says that no lead matched the key(s) (SOAP 20103, REST 1004). */
bool mkto_code_is_lead_not_found(int code);

#endif /* MARKETO_CODES_H */
