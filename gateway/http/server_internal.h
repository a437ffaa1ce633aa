/* gateway/http/server_internal.h - what the files of the HTTP server share
 * (gateway/http/ only; the rest of the gateway sees server.h).
 *
 * One module in several files, each calling only the files above it in
 * this list (scripts/include_graph.py keeps it so):
 *   request.c  reading a request: accessors, query string, handler state;
 *   routes.c   the route table, route matching, the metrics' route labels;
 *   reply.c    building replies: common headers and CORS, problem+json,
 *              upstream outcomes and Marketo faults mapped to statuses;
 *   auth.c     the API-key check and each key's share of the Marketo budget;
 *   access.c   the access-log line and the per-request metrics;
 *   screen.c   what the headers decide before a body byte is read; the
 *              body and the shared body budget;
 *   server.c   a request's life: libmicrohttpd's request callbacks,
 *              dispatch, suspend/resume;
 *   daemon.c   start, drain and stop (it names server.c's callbacks, calls
 *              none of them).
 */
#ifndef GW_SERVER_INTERNAL_H
#define GW_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>

#include "gateway/http/connguard.h"
#include "gateway/http/server.h"
#include "gateway/metrics.h"

#define GW_REQ_ID_MAX 128              /* longest client X-Request-ID kept */
#define GW_MAX_EXTRA_HEADERS 16        /* gw_req_add_header entries per reply */
#define GW_HEADER_VALUE_MAX 1024       /* longest added header value */
#define GW_DISCARD_MAX (4u << 20)      /* body bytes thrown away after the cap before hanging up */
#define GW_PROBLEM_URN "urn:marketo-gateway:problem:"
#define GW_CORS_ALLOW_HEADERS "Authorization, X-API-Key, Content-Type, X-Request-ID, Cache-Control"
#define GW_CORS_EXPOSE_HEADERS "X-Request-ID, X-Cache, X-Cache-Invalidation, Retry-After"
#define GW_CORS_MAX_AGE "600"

/* One entry of the route table. */
typedef struct gw_route {
    const char *pattern;     /* path; a trailing "{id}" segment is the path parameter */
    const char *method;      /* "GET" or "POST" (HEAD is accepted where GET is) */
    gw_handler_fn handler;   /* called once the request is complete and allowed */
    bool needs_auth;         /* API key required */
    bool needs_upstream;     /* 503 while marketo.soap_endpoint is not set */
    bool json_body;          /* takes a JSON body (415 without a JSON Content-Type); false: no body at all */
} gw_route;

/* Entries in the route table (routes.c checks it). */
#define GW_NROUTES 7
/* Route labels of the per-request metrics: one per route (its pattern),
 * then "method_not_allowed" and "unmatched". */
#define GW_NROUTE_LABELS (GW_NROUTES + 2)
#define GW_ROUTE_LABEL_MNA GW_NROUTES
#define GW_ROUTE_LABEL_UNMATCHED (GW_NROUTES + 1)
/* Method labels of the per-request metrics (access.c's list, "OTHER" last). */
#define GW_NMETHOD_LABELS 8

/* A per-request metric series found once and kept: the registry's lookup
 * takes its mutex and compares strings, too much for every request. Nodes
 * are pushed lock-free onto a list per (route, method) and never freed
 * before gw_server_stop; a node from before a gw_metrics_reset (other
 * generation) is skipped. */
typedef struct series_node {
    unsigned status;          /* the counter's status label; 0 for a histogram */
    uint64_t gen;             /* gw_metrics_generation() when it was looked up */
    void *series;             /* gw_counter * or gw_histogram * */
    struct series_node *next; /* next node of the same list */
} series_node;

/* Where a request is in its life. */
typedef enum req_phase {
    PHASE_BODY = 0,   /* reading the body */
    PHASE_RUNNING,    /* handler or on_resume being called */
    PHASE_SUSPENDED,  /* connection suspended, waiting for gw_req_resume */
    PHASE_DONE,       /* reply queued */
} req_phase;

/* One added response header. */
typedef struct req_header {
    char *name;   /* header name (copied) */
    char *value;  /* header value (copied) */
} req_header;

struct gw_server {
    struct MHD_Daemon *daemon;      /* libmicrohttpd */
    gw_app *app;                    /* borrowed */
    unsigned char *key_digests;     /* SHA-256 of each API key, 32 bytes each */
    size_t nkeys;                   /* entries in key_digests */
    bool auth_off;                  /* auth.disabled with no keys */
    char **origins;                 /* allowed CORS origins (copied) */
    size_t norigins;                /* entries in origins */
    bool cors_any;                  /* "*" configured */
    size_t max_body;                /* gateway.max_body_bytes */
    size_t body_budget;             /* gateway.max_body_total_bytes */
    atomic_size_t body_held;        /* body bytes charged by requests not yet completed */
    gw_gauge *body_gauge;           /* http_request_body_bytes */
    gw_guard *guard;                /* header/body deadlines, room at the connection limit */
    atomic_size_t active;           /* gw_req not yet completed, started before the drain */
    atomic_size_t late_active;      /* gw_req not yet completed, started while draining */
    _Atomic int64_t late_last_ms;   /* gw_now_ms() when the last of those started */
    atomic_bool quiesced;           /* gw_server_quiesce done: new requests are answered at once */
    gw_gauge *in_flight;            /* http_requests_in_flight */
    _Atomic(series_node *) counters[GW_NROUTE_LABELS][GW_NMETHOD_LABELS]; /* http_requests_total, per status */
    _Atomic(series_node *) durations[GW_NROUTE_LABELS]; /* http_request_duration_seconds */
};

struct gw_req {
    gw_server *srv;                 /* owning server */
    struct MHD_Connection *conn;    /* libmicrohttpd's connection */
    const char *method;             /* request method (libmicrohttpd's storage) */
    const char *url;                /* decoded path (libmicrohttpd's storage) */
    const gw_route *route;          /* matched route, or NULL */
    bool path_known;                /* some route has this path (405 rather than 404) */
    const char *path_param;         /* {id} of /leads/{id}, inside url, or NULL */
    char id[GW_REQ_ID_MAX + 1];     /* request id */
    int64_t start_ms;               /* gw_now_ms() at the first call */
    struct timespec start_ts;       /* CLOCK_MONOTONIC at the first call (durations) */
    req_phase phase;                /* see req_phase */

    char *body;                     /* accumulated body (malloc'd, may be NULL) */
    size_t body_len;                /* bytes in body */
    size_t body_cap;                /* allocated size of body */
    size_t body_charged;            /* bytes of body_budget this request holds */
    size_t body_expected;           /* Content-Length (0: none or chunked) */
    bool too_large;                 /* body over the cap: answer 413 */
    bool over_budget;               /* body over gateway.max_body_total_bytes: answer 503 */
    size_t discarded;               /* bytes dropped after the cap or the budget */

    bool started;                   /* the first access-handler call has run (headers in) */
    gw_guard_conn *gconn;           /* the connection's guard state (NULL: unguarded) */
    bool has_body;                  /* the headers announce a body (read next) */
    char *query;                    /* raw query string after '?' (malloc'd; split in place), or NULL */
    bool query_loaded;              /* qnames/qvalues filled */
    const char **qnames;            /* query names (inside query) */
    const char **qvalues;           /* query values ("" for a bare name; inside query) */
    size_t nq;                      /* entries in qnames/qvalues */

    void *state;                    /* handler state */
    void (*state_free)(void *);     /* frees state, or NULL */

    req_header hdrs[GW_MAX_EXTRA_HEADERS]; /* headers added by handlers */
    size_t nhdrs;                   /* entries in hdrs */
    struct MHD_Response *resp;      /* built reply not yet queued */
    unsigned status;                /* reply status (0: none yet) */
    size_t resp_bytes;              /* reply body length */

    pthread_mutex_t mu;             /* guards the suspend flags below */
    gw_handler_fn on_resume;        /* called after resume */
    bool suspend_wanted;            /* gw_req_suspend called during this call */
    bool mhd_suspended;             /* MHD_suspend_connection done, no resume yet */
    bool resumed_early;             /* gw_req_resume came before the suspend */

    int upstream_calls;             /* access log: SOAP calls spent */
    long key_index;                 /* which API key authorised it; -1: none/auth off */
    signed char draining;           /* gw_req_draining's one reading: -1 not read yet, 0/1 */
    bool late;                      /* started after gw_server_quiesce: not waited for */
    bool admitted;                  /* charged to its key's budget already */
    char cache[8];                  /* access log: HIT/MISS/PARTIAL/BYPASS or "" */
};

/* ---- request.c ---- */
/* libmicrohttpd's unescape callback, for the path and every query name and
 * value: %-decoding, with a decoded NUL made 0x01. */
size_t gw_srv_on_unescape(void *cls, struct MHD_Connection *c, char *s);

/* ---- routes.c ---- */
/* Sets r->route (path and method matched), r->path_known, r->path_param. */
void gw_srv_route_resolve(gw_req *r);
/* Writes the Allow header value of r's path ("GET, HEAD, OPTIONS"). */
void gw_srv_route_allow(const gw_req *r, char *out, size_t outlen);
/* The route label index of a completed request (< GW_NROUTE_LABELS). */
size_t gw_srv_route_label_index(const gw_req *r);
/* The route label of index i. */
const char *gw_srv_route_label(size_t i);

/* ---- reply.c ---- */
/* Builds r's reply from a malloc'd body (taken; NULL with len 0: none). */
void gw_srv_set_reply(gw_req *r, unsigned status, const char *content_type, char *body,
                      size_t len);
/* The fixed 500 problem, when a reply cannot be built. */
void gw_srv_reply_internal(gw_req *r);
/* gw_req_reply_problem with a problem type slug (NULL: the status's). */
void gw_srv_reply_typed(gw_req *r, unsigned status, const char *slug, const char *title,
                        const char *detail, json_t *extra);
/* Adds Retry-After: secs (at least 1). */
void gw_srv_add_retry_after(gw_req *r, int64_t secs);
/* Whether origin is an allowed CORS origin. */
bool gw_srv_origin_allowed(const gw_server *s, const char *origin);

/* ---- auth.c ---- */
/* Whether r carries a valid API key; sets r->key_index. */
bool gw_srv_authorized(gw_req *r);

/* ---- access.c ---- */
/* Writes r's access-log line and counts it in the request metrics. */
void gw_srv_access_record(gw_req *r, bool aborted);
/* Frees the metric series s keeps (at gw_server_stop). */
void gw_srv_access_free(gw_server *s);

/* ---- screen.c ---- */
/* Everything the request line and headers decide: true when the request
 * goes on to its body; false when r holds its reply. */
bool gw_srv_screen(gw_req *r);
/* Takes an upload chunk; false when the connection should be dropped. */
bool gw_srv_take_upload(gw_req *r, const char *data, size_t n);
/* Gives r's body bytes back to the shared budget. */
void gw_srv_body_uncharge(gw_req *r);
/* The 413 of a body over gateway.max_body_bytes. */
void gw_srv_reply_too_large(gw_req *r);
/* The 503 of a body the shared budget cannot hold. */
void gw_srv_reply_body_budget(gw_req *r);

/* ---- server.c: libmicrohttpd's request callbacks (daemon.c installs them) ---- */
void *gw_srv_on_uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
enum MHD_Result gw_srv_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls);
void gw_srv_on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe);

#endif /* GW_SERVER_INTERNAL_H */
