/* marketo/protocol.h - what the upstream engine needs from a Marketo API.
 *
 * The engine (gateway/upstream/) owns the thread, the sockets, the limiter
 * slots, pacing, deadlines, retries and coalescing; it does not know which
 * API it speaks. A protocol turns one call the engine wants to make into an
 * HTTP request (method, URL, headers, body) and turns the HTTP answer back
 * into the model's structs (marketo/model.h): a page of leads, sync
 * statuses, or a Marketo fault with its code. Bytes in, structs out: a
 * protocol opens no socket and starts no thread.
 *
 * Implementations: soap/protocol.c (mktows 2_3, HMAC-signed envelopes).
 *
 * Thread safety: the engine calls build and parse from its one thread only;
 * an implementation needs no locking for that.
 */
#ifndef MARKETO_PROTOCOL_H
#define MARKETO_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>

#include "marketo/model.h"

/* The operations the engine performs. */
typedef enum mkto_op {
    MKTO_OP_GET_LEADS = 0, /* a lead query (mkto_query) -> a page of leads */
    MKTO_OP_SYNC_LEADS,    /* 1..max_sync_per_call records -> one status each */
    MKTO_OP__COUNT
} mkto_op;

/* One call the engine wants made. Pointers are borrowed for the build. */
typedef struct mkto_call {
    mkto_op op;
    const mkto_query *query;   /* GET_LEADS: what to ask (keys already within the limit) */
    const mkto_lead *leads;    /* SYNC_LEADS: the records, in order */
    size_t nleads;             /* SYNC_LEADS: entries in leads */
    bool dedup;                /* SYNC_LEADS: update an existing lead rather than add one */
} mkto_call;

/* An HTTP request, as built. Everything is owned by the struct and released
 * by mkto_request_clear(). */
#define MKTO_REQUEST_MAX_HEADERS 8
typedef struct mkto_request {
    const char *method;                       /* "POST", "GET" (static storage) */
    char *url;                                /* absolute URL */
    char *headers[MKTO_REQUEST_MAX_HEADERS];  /* "Name: value" lines */
    size_t nheaders;                          /* entries in headers */
    char *body;                               /* request body, or NULL */
    size_t body_len;                          /* bytes in body */
} mkto_request;

/* Frees what req holds and zeroes it (NULL and zeroed structs are fine). */
void mkto_request_clear(mkto_request *req);
/* Appends a header line (copied). Returns 0, or -1 when full or out of memory. */
int mkto_request_add_header(mkto_request *req, const char *line);

/* How reading an answer ended. */
typedef enum mkto_parsed {
    MKTO_PARSED_OK = 0,  /* the operation's result is filled */
    MKTO_PARSED_FAULT,   /* Marketo answered with a fault: see the fault */
    MKTO_PARSED_FOREIGN, /* not an answer of this API (an HTML error page, garbage) */
    MKTO_PARSED_TOO_LARGE, /* over the protocol's response cap */
} mkto_parsed;

/* Where an error was found and why (no secrets, no key values). */
typedef struct mkto_err {
    char msg[160];
} mkto_err;

/* Where a parsed answer goes: the member of the operation is filled. */
typedef struct mkto_answer {
    mkto_leads *leads;         /* GET_LEADS */
    mkto_sync_result *sync;    /* SYNC_LEADS */
    mkto_fault *fault;         /* on MKTO_PARSED_FAULT */
} mkto_answer;

typedef struct mkto_protocol mkto_protocol;

typedef struct mkto_protocol_ops {
    /* Builds the request for one call into out (zeroed by the caller).
     * Fresh credentials each time (a SOAP signature is good for minutes).
     * Returns 0, or -1 with err filled when the call's input cannot be
     * expressed in this API (a value XML cannot carry, too many keys):
     * nothing should be sent then. */
    int (*build)(mkto_protocol *p, const mkto_call *call, mkto_request *out, mkto_err *err);
    /* Reads the HTTP answer (any status: SOAP faults come with 500) of a
     * call of operation op into ans. Returns an mkto_parsed; err says why
     * for FOREIGN and TOO_LARGE. On anything but OK the result members of
     * ans are left empty. */
    mkto_parsed (*parse)(mkto_protocol *p, mkto_op op, long http_status, const char *body,
                         size_t len, mkto_answer *ans, mkto_err *err);
    /* Frees the protocol (wiping any secret it holds). */
    void (*free)(mkto_protocol *p);
} mkto_protocol_ops;

/* A protocol instance. The limits are what one call of this API may carry;
 * callers split their work by them. */
struct mkto_protocol {
    const mkto_protocol_ops *ops;
    const char *name;                      /* "soap" (static storage) */
    const char *op_names[MKTO_OP__COUNT];  /* the API's operation names, for metrics and logs */
    size_t max_keys_per_call;              /* keys in one GET_LEADS key query */
    size_t max_sync_per_call;              /* records in one SYNC_LEADS */
    int max_batch_size;                    /* leads in one page */
    size_t max_response;                   /* the response body cap the parser enforces */
};

static inline void mkto_protocol_free(mkto_protocol *p)
{
    if (p)
        p->ops->free(p);
}

#endif /* MARKETO_PROTOCOL_H */
