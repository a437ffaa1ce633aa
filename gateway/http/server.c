/* gateway/http/server.c - the HTTP face: libmicrohttpd daemon, routing, auth, CORS,
 * request ids, problem replies, suspend/resume and the access log.
 *
 * Life of a request (see server.h for the handler's view):
 *   0. request line in (on_uri_log): a gw_req is allocated, becoming
 *      *req_cls, and the query string copied out of libmicrohttpd's pool;
 *   1. first access-handler call, the request line and headers in, no body
 *      byte read yet: the request id assigned, the route looked up
 *      (req_start), and everything the headers decide is
 *      answered at once, before the body is read (screen_request): 400
 *      (control character in the path), 404, CORS preflight, 405, 401, 413
 *      (a body on a route that takes none, or a Content-Length over
 *      gateway.max_body_bytes), 415 (a JSON route without a JSON
 *      Content-Type), 503 (no upstream; or the body would take the bytes
 *      held by all connections past gateway.max_body_total_bytes, with
 *      Retry-After). libmicrohttpd then closes the connection after the
 *      reply instead of reading the unread body;
 *   2. upload calls: the body is accumulated up to the cap, its bytes
 *      charged to the shared body budget; past the cap or the budget
 *      (bodies without Content-Length), the rest is read and thrown away (up
 *      to GW_DISCARD_MAX, then the connection is dropped) and the answer is
 *      413 or 503;
 *   3. last call: the route's handler, which replies or suspends;
 *   4. after a handler returns, finish_call() queues the reply, or suspends
 *      the connection; a resumed connection comes back to the access handler,
 *      which runs the on_resume function and goes to step 4 again;
 *   5. libmicrohttpd's completion callback writes the access-log line, the
 *      metrics, returns the body's bytes to the budget, and frees the
 *      request and the handler's state.
 *
 * Replies are built into r->resp by the gw_req_reply_* functions and queued
 * by finish_call() on the connection's own thread, so a handler may build its
 * reply anywhere inside its call.
 */
#include "gateway/http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "gateway/http/connguard.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/ratelimit.h"
#include "gateway/upstream/upstream.h"
#include "marketo/codes.h"

#define GW_REQ_ID_MAX 128              /* longest client X-Request-ID kept */
#define GW_MAX_EXTRA_HEADERS 16        /* gw_req_add_header entries per reply */
#define GW_HEADER_VALUE_MAX 1024       /* longest added header value */
#define GW_DISCARD_MAX (4u << 20)      /* body bytes thrown away after the cap before hanging up */
/* libmicrohttpd's per-connection memory pool: it holds the request line
 * (the whole query string, whose arguments the gateway splits in memory of
 * its own: on_uri_log), the headers, and libmicrohttpd's bookkeeping.
 * libmicrohttpd 0.9.75 zeroes the whole pool when a keep-alive connection
 * starts its next request, so every connection that has served one request
 * keeps its whole pool resident: RSS grows by this much per open
 * connection. 32 KiB holds a lookup of gateway.max_keys (1000) typical
 * e-mails (~25 bytes each, comma-separated or as repeated email=: ~26 or
 * ~32 KB of query string) with the headers; a request line or header block
 * larger than the pool gets libmicrohttpd's own 414 (URI too long) or 431,
 * at once (an HTML body: libmicrohttpd 0.9.75 has no hook for it). With 5,000 idle keep-alive
 * connections: ~175 MB (128 KiB: 641 MB; 8 KiB: ~55 MB but only ~250
 * e-mails a lookup). Not a setting (config/ has no key for it). */
#define GW_CONN_MEMORY_LIMIT (32u << 10)
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

/* The route table. tests/server/test_server.py reads the lines between the
 * markers to check that every route is in openapi.json: keep one route per
 * line in this form. */
/* ROUTES-BEGIN */
static const gw_route routes[] = {
    {"/healthz", "GET", gw_handle_healthz, false, false, false},
    {"/readyz", "GET", gw_handle_readyz, false, false, false},
    {"/metrics", "GET", gw_handle_metrics, false, false, false},
    {"/openapi.json", "GET", gw_handle_openapi, false, false, false},
    {"/leads", "GET", gw_handle_leads, true, true, false},
    {"/leads/sync", "POST", gw_handle_sync, true, true, true},
    {"/leads/{id}", "GET", gw_handle_lead_by_id, true, true, false},
};
/* ROUTES-END */
#define NROUTES (sizeof routes / sizeof routes[0])

/* Route labels of the per-request metrics: one per route (its pattern),
 * then "method_not_allowed" and "unmatched". */
#define NROUTE_LABELS (NROUTES + 2)
#define ROUTE_LABEL_MNA NROUTES
#define ROUTE_LABEL_UNMATCHED (NROUTES + 1)

/* Method labels of the per-request metrics, "OTHER" last. */
static const char *const method_labels[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"};
#define NMETHOD_LABELS (sizeof method_labels / sizeof method_labels[0])

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
    _Atomic(series_node *) counters[NROUTE_LABELS][NMETHOD_LABELS]; /* http_requests_total, per status */
    _Atomic(series_node *) durations[NROUTE_LABELS]; /* http_request_duration_seconds */
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

/* ---------------------------------------------------------------- helpers */

/* True when s (len bytes) is a request id we keep: 1..128 of [A-Za-z0-9._:-]. */
static bool request_id_valid(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= GW_REQ_ID_MAX)
            return false;
    }
    return n > 0;
}

/* Per-thread xoshiro256** state for request ids (all zero: not seeded). */
static _Thread_local uint64_t rid_state[4];

/* Seeds this thread's request-id generator from OpenSSL's CSPRNG (the
 * clock, the thread and a process-wide counter if that fails). */
static void rid_seed(void)
{
    if (RAND_bytes((unsigned char *)rid_state, (int)sizeof rid_state) != 1) {
        static atomic_uint_fast64_t seq;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rid_state[0] = (uint64_t)ts.tv_sec;
        rid_state[1] = (uint64_t)ts.tv_nsec;
        rid_state[2] = (uint64_t)(uintptr_t)&rid_state;
        rid_state[3] = (uint64_t)atomic_fetch_add(&seq, 1) + 1;
    }
    if ((rid_state[0] | rid_state[1] | rid_state[2] | rid_state[3]) == 0)
        rid_state[0] = 1;
}

/* The next 64 bits of this thread's xoshiro256** stream. */
static uint64_t rid_next(void)
{
    uint64_t *st = rid_state;
    uint64_t x = st[1] * 5;
    uint64_t result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = (st[3] << 45) | (st[3] >> 19);
    return result;
}

/* Fills out (33 bytes) with 128 bits as 32 lower-case hex digits. Request
 * ids only correlate log lines and replies (they guard nothing), so a
 * per-thread xoshiro256** seeded once from RAND_bytes replaces a
 * RAND_bytes call (and its lock) per request. */
static void request_id_generate(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    if ((rid_state[0] | rid_state[1] | rid_state[2] | rid_state[3]) == 0)
        rid_seed();
    uint64_t w[2] = {rid_next(), rid_next()};
    for (size_t i = 0; i < 32; i++)
        out[i] = hex[(w[i / 16] >> (4 * (15 - i % 16))) & 15];
    out[32] = '\0';
}

/* True when a header value can go on the wire (no CR, LF or NUL issues). */
static bool header_value_ok(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n')
            return false;
    return true;
}

/* The index in method_labels of a request method: known methods as is,
 * anything else "OTHER". */
static size_t method_label_index(const char *m)
{
    for (size_t i = 0; i + 1 < NMETHOD_LABELS; i++)
        if (m != NULL && strcmp(m, method_labels[i]) == 0)
            return i;
    return NMETHOD_LABELS - 1;
}

/* Whether path matches pattern; *param gets the {id} segment when the
 * pattern has one. */
static bool path_matches(const char *pattern, const char *path, const char **param)
{
    const char *brace = strstr(pattern, "{id}");
    *param = NULL;
    if (brace == NULL)
        return strcmp(pattern, path) == 0;
    size_t prefix = (size_t)(brace - pattern);
    if (strncmp(pattern, path, prefix) != 0)
        return false;
    const char *seg = path + prefix;
    if (*seg == '\0' || strchr(seg, '/') != NULL)
        return false;
    *param = seg;
    return true;
}

/* Looks up the route of r's path and method: sets r->route (method matched),
 * r->path_known and r->path_param. Exact paths win over the {id} pattern, so
 * GET /leads/sync is 405, not a lookup of lead "sync". */
static void resolve_route(gw_req *r)
{
    const char *m = r->method;
    bool head = strcmp(m, "HEAD") == 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < NROUTES; i++) {
            const char *param;
            bool exact = strchr(routes[i].pattern, '{') == NULL;
            if (exact != (pass == 0))
                continue;
            if (!path_matches(routes[i].pattern, r->url, &param))
                continue;
            r->path_known = true;
            if (strcmp(routes[i].method, m) == 0 || (head && strcmp(routes[i].method, "GET") == 0)) {
                r->route = &routes[i];
                r->path_param = param;
                return;
            }
        }
        if (r->path_known)
            return;
    }
}

/* Writes the Allow header value of r's path ("GET, HEAD, OPTIONS"). */
static void allow_methods(const gw_req *r, char *out, size_t outlen)
{
    bool get = false, post = false;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < NROUTES; i++) {
            const char *param;
            bool exact = strchr(routes[i].pattern, '{') == NULL;
            if (exact != (pass == 0) || !path_matches(routes[i].pattern, r->url, &param))
                continue;
            if (strcmp(routes[i].method, "GET") == 0)
                get = true;
            else if (strcmp(routes[i].method, "POST") == 0)
                post = true;
        }
        if (get || post)
            break;
    }
    snprintf(out, outlen, "%s%sOPTIONS", get ? "GET, HEAD, " : "", post ? "POST, " : "");
}

/* Whether origin is an allowed CORS origin. */
static bool origin_allowed(const gw_server *s, const char *origin)
{
    if (origin == NULL || *origin == '\0')
        return false;
    if (s->cors_any)
        return true;
    for (size_t i = 0; i < s->norigins; i++)
        if (strcmp(s->origins[i], origin) == 0)
            return true;
    return false;
}

/* Which configured API key key is: its index, or -1. Compares SHA-256
 * digests with CRYPTO_memcmp against every key and picks the match without
 * a branch, so neither the key's length nor which key matched shows in the
 * timing. */
static long key_index(const gw_server *s, const char *key)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    size_t found = 0; /* index + 1 of the match, 0: none */
    if (key == NULL || *key == '\0')
        return -1;
    SHA256((const unsigned char *)key, strlen(key), d);
    for (size_t i = 0; i < s->nkeys; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(d, s->key_digests + i * SHA256_DIGEST_LENGTH,
                                           SHA256_DIGEST_LENGTH) == 0);
        found |= (0 - eq) & (i + 1);
    }
    OPENSSL_cleanse(d, sizeof d);
    return (long)found - 1;
}

/* Whether r carries a valid API key in Authorization: Bearer or X-API-Key. */
static bool request_authorized(gw_req *r)
{
    const gw_server *s = r->srv;
    long idx = -1;
    if (s->auth_off)
        return true;
    const char *authz = gw_req_header(r, "Authorization");
    if (authz != NULL && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *tok = authz + 7;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        idx = key_index(s, tok);
    }
    const char *xkey = gw_req_header(r, "X-API-Key");
    if (idx < 0 && xkey != NULL)
        idx = key_index(s, xkey);
    r->key_index = idx;
    return idx >= 0;
}

/* ----------------------------------------------------------- request API */

gw_app *gw_req_app(gw_req *r) { return r->srv->app; }
const char *gw_req_method(gw_req *r) { return r->method; }
const char *gw_req_path(gw_req *r) { return r->url; }
const char *gw_req_path_param(gw_req *r) { return r->path_param; }
const char *gw_req_id(gw_req *r) { return r->id; }

/* The drain state is read once per request and then fixed, so that what a
 * handler decided from it (readyz's 200 or 503) and the Connection header
 * of the same reply never disagree: a 200 from /readyz always keeps its
 * connection open, and Connection: close comes only with a reply decided
 * while draining. */
bool gw_req_draining(gw_req *r)
{
    if (r->draining < 0)
        r->draining = atomic_load(&r->srv->app->draining) ? 1 : 0;
    return r->draining == 1;
}
int64_t gw_req_start_ms(gw_req *r) { return r->start_ms; }

const char *gw_req_header(gw_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *gw_req_body(gw_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body != NULL ? r->body : "";
}

static size_t on_unescape(void *cls, struct MHD_Connection *c, char *s);

/* Decodes one query name or value in place: '+' is a space, then
 * on_unescape's %-decoding (as libmicrohttpd did to its arguments). */
static void unescape_arg(char *s)
{
    for (char *c = s; *c != '\0'; c++)
        if (*c == '+')
            *c = ' ';
    on_unescape(NULL, NULL, s);
}

/* Splits r->query in place into r->qnames/r->qvalues the way libmicrohttpd
 * splits GET arguments (it no longer sees them: on_uri_log): '&' separates
 * arguments, the first '=' a name from its value (a bare name gets ""),
 * both decoded by unescape_arg. Empty segments ("a&&b") give empty names,
 * as libmicrohttpd's did. Out of memory, the request has no arguments (and
 * the lead routes answer 400). */
static void split_query(gw_req *r)
{
    size_t n = 1;
    if (r->query == NULL || r->query[0] == '\0')
        return;
    for (const char *p = r->query; *p != '\0'; p++)
        if (*p == '&')
            n++;
    r->qnames = malloc(n * sizeof *r->qnames);
    r->qvalues = malloc(n * sizeof *r->qvalues);
    if (r->qnames == NULL || r->qvalues == NULL) {
        free(r->qnames);
        free(r->qvalues);
        r->qnames = r->qvalues = NULL;
        return;
    }
    char *p = r->query;
    while (*p != '\0') {
        char *amp = strchr(p, '&');
        if (amp != NULL)
            *amp = '\0';
        char *eq = strchr(p, '=');
        char *value = eq != NULL ? eq + 1 : NULL;
        if (eq != NULL)
            *eq = '\0';
        unescape_arg(p);
        if (value != NULL)
            unescape_arg(value);
        r->qnames[r->nq] = p;
        r->qvalues[r->nq] = value != NULL ? value : "";
        r->nq++;
        if (amp == NULL)
            break;
        p = amp + 1;
    }
}

size_t gw_req_query(gw_req *r, const char *const **names, const char *const **values)
{
    if (!r->query_loaded) {
        r->query_loaded = true;
        split_query(r);
    }
    *names = r->qnames;
    *values = r->qvalues;
    return r->nq;
}

void gw_req_set_state(gw_req *r, void *state, void (*free_fn)(void *))
{
    r->state = state;
    r->state_free = free_fn;
}

void *gw_req_state(gw_req *r) { return r->state; }

void gw_req_note_upstream(gw_req *r, int calls) { r->upstream_calls += calls; }

bool gw_req_admit_upstream(gw_req *r)
{
    gw_keylimit *kl = r->srv->app->keylimit;
    if (r->admitted || kl == NULL || r->key_index < 0)
        return true;
    r->admitted = true;
    int64_t remaining = 0, reset_s = 0;
    int refused = gw_keylimit_take(kl, (size_t)r->key_index, gw_now_ms(), &remaining, &reset_s);
    char policy[64], state[64], retry[24];
    snprintf(policy, sizeof policy, "\"marketo\";q=%" PRId64 ";w=60", gw_keylimit_quota(kl));
    snprintf(state, sizeof state, "\"marketo\";r=%" PRId64 ";t=%" PRId64, remaining, reset_s);
    gw_req_add_header(r, "RateLimit-Policy", policy);
    gw_req_add_header(r, "RateLimit", state);
    if (!refused)
        return true;
    snprintf(retry, sizeof retry, "%" PRId64, reset_s);
    gw_req_add_header(r, "Retry-After", retry);
    gw_req_reply_problem(r, 429, "Too Many Requests",
                         "this API key has used its share of the Marketo budget "
                         "(auth.key_calls_per_minute); retry later",
                         json_pack("{s:s}", "type", "key-rate-limited"));
    return false;
}

bool gw_req_charge_upstream(gw_req *r)
{
    gw_keylimit *kl = r->srv->app->keylimit;
    if (kl == NULL || r->key_index < 0)
        return true;
    int64_t remaining = 0, reset_s = 0;
    return gw_keylimit_take(kl, (size_t)r->key_index, gw_now_ms(), &remaining, &reset_s) == 0;
}

void gw_req_note_cache(gw_req *r, const char *result)
{
    snprintf(r->cache, sizeof r->cache, "%s", result != NULL ? result : "");
    if (r->resp != NULL && r->cache[0] != '\0')
        MHD_add_response_header(r->resp, "X-Cache", r->cache);
}

void gw_req_add_header(gw_req *r, const char *name, const char *value)
{
    if (name == NULL || value == NULL || !header_value_ok(name) || !header_value_ok(value) ||
        strlen(value) > GW_HEADER_VALUE_MAX) {
        GW_LOG(GW_LOG_ERROR, json_pack("{s:s}", "request_id", r->id), "response header refused");
        return;
    }
    if (r->resp != NULL) {
        MHD_add_response_header(r->resp, name, value);
        return;
    }
    if (r->nhdrs == GW_MAX_EXTRA_HEADERS) {
        GW_LOG(GW_LOG_ERROR, json_pack("{s:s}", "request_id", r->id), "too many response headers");
        return;
    }
    req_header *h = &r->hdrs[r->nhdrs];
    h->name = strdup(name);
    h->value = strdup(value);
    if (h->name == NULL || h->value == NULL) {
        free(h->name);
        free(h->value);
        h->name = h->value = NULL;
        return;
    }
    r->nhdrs++;
}

/* ------------------------------------------------------------- replying */

/* Adds the headers every reply carries: X-Request-ID, X-Cache, the
 * handler's headers, CORS for an allowed Origin, Connection: close while
 * draining. */
static void add_common_headers(gw_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-ID", r->id);
    if (r->cache[0] != '\0')
        MHD_add_response_header(resp, "X-Cache", r->cache);
    for (size_t i = 0; i < r->nhdrs; i++)
        MHD_add_response_header(resp, r->hdrs[i].name, r->hdrs[i].value);
    const char *origin = gw_req_header(r, "Origin");
    if (origin_allowed(r->srv, origin) && header_value_ok(origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->srv->cors_any ? "*" : origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", GW_CORS_EXPOSE_HEADERS);
    }
    if (gw_req_draining(r))
        MHD_add_response_header(resp, "Connection", "close");
}

/* Builds the reply from a malloc'd body (ownership taken, may be NULL with
 * len 0). A second reply for the same request is dropped and logged. */
static void set_reply(gw_req *r, unsigned status, const char *content_type, char *body, size_t len)
{
    if (r->resp != NULL || r->phase == PHASE_DONE) {
        GW_LOG(GW_LOG_ERROR, json_pack("{s:s, s:i}", "request_id", r->id, "status", (int)status),
               "second reply for one request dropped");
        free(body);
        return;
    }
    struct MHD_Response *resp =
        body != NULL ? MHD_create_response_from_buffer_with_free_callback(len, body, free)
                     : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        free(body);
        return;
    }
    if (content_type != NULL)
        MHD_add_response_header(resp, "Content-Type", content_type);
    add_common_headers(r, resp);
    r->resp = resp;
    r->status = status;
    r->resp_bytes = len;
}

/* A growing malloc'd buffer that json_dump_callback writes into. */
typedef struct dump_buf {
    char *p;     /* the bytes (malloc'd) */
    size_t len;  /* bytes written */
    size_t cap;  /* allocated size */
} dump_buf;

/* json_dump_callback's sink: appends size bytes, doubling the buffer as
 * needed. Returns 0, or -1 out of memory. */
static int dump_cb(const char *buf, size_t size, void *data)
{
    dump_buf *d = data;
    if (size > d->cap - d->len) {
        size_t ncap = d->cap;
        while (size > ncap - d->len) {
            if (ncap > SIZE_MAX / 2)
                return -1;
            ncap *= 2;
        }
        char *np = realloc(d->p, ncap);
        if (np == NULL)
            return -1;
        d->p = np;
        d->cap = ncap;
    }
    memcpy(d->p + d->len, buf, size);
    d->len += size;
    return 0;
}

/* Serialises body (stolen) into a malloc'd buffer in one pass (no sizing
 * pass, no final copy); NULL on failure. */
static char *dump_json(json_t *body, size_t *len)
{
    dump_buf d = {NULL, 0, 2048};
    *len = 0;
    if (body == NULL)
        return NULL;
    d.p = malloc(d.cap);
    if (d.p == NULL)
        goto out;
    if (json_dump_callback(body, dump_cb, &d, JSON_COMPACT) != 0 || d.len == 0) {
        free(d.p);
        d.p = NULL;
        goto out;
    }
    *len = d.len;
out:
    json_decref(body);
    return d.p;
}

/* Last resort when a reply cannot be serialised. */
static void reply_internal(gw_req *r)
{
    static const char msg[] = "{\"type\":\"" GW_PROBLEM_URN "internal\",\"title\":\"Internal error\",\"status\":500}";
    char *b = malloc(sizeof msg - 1);
    if (b != NULL)
        memcpy(b, msg, sizeof msg - 1);
    set_reply(r, 500, "application/problem+json", b, b != NULL ? sizeof msg - 1 : 0);
}

void gw_req_reply_json(gw_req *r, unsigned status, json_t *body)
{
    size_t len;
    char *buf = dump_json(body, &len);
    if (buf == NULL) {
        reply_internal(r);
        return;
    }
    set_reply(r, status, "application/json", buf, len);
}

void gw_req_reply_raw(gw_req *r, unsigned status, const char *content_type, const char *body,
                      size_t len)
{
    char *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            reply_internal(r);
            return;
        }
        memcpy(copy, body, len);
    }
    set_reply(r, status, content_type, copy, len);
}

/* The default problem type slug of a status. */
static const char *status_slug(unsigned status)
{
    switch (status) {
    case 400: return "invalid-request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not-found";
    case 405: return "method-not-allowed";
    case 413: return "body-too-large";
    case 415: return "unsupported-media-type";
    case 429: return "rate-limited";
    case 500: return "internal";
    case 502: return "upstream-error";
    case 503: return "unavailable";
    case 504: return "upstream-timeout";
    default: return status >= 500 ? "internal" : "invalid-request";
    }
}

/* Like gw_req_reply_problem with an explicit type slug (appended to the
 * project URN), or a whole URI when slug holds a ':'. */
static void reply_problem_typed(gw_req *r, unsigned status, const char *slug, const char *title,
                                const char *detail, json_t *extra)
{
    char type[160];
    json_t *o = json_object();
    if (o == NULL) {
        json_decref(extra);
        reply_internal(r);
        return;
    }
    if (extra != NULL && json_is_object(extra)) {
        const char *t = json_string_value(json_object_get(extra, "type"));
        if (t != NULL && *t != '\0')
            slug = t;
    }
    if (slug == NULL)
        slug = status_slug(status);
    if (strchr(slug, ':') != NULL)
        snprintf(type, sizeof type, "%s", slug);
    else
        snprintf(type, sizeof type, GW_PROBLEM_URN "%s", slug);
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", json_string(title != NULL ? title : "Error"));
    json_object_set_new(o, "status", json_integer(status));
    if (detail != NULL)
        json_object_set_new(o, "detail", json_string(detail));
    json_object_set_new(o, "request_id", json_string(r->id));
    if (extra != NULL && json_is_object(extra)) {
        json_object_del(extra, "type");
        json_object_update_missing(o, extra);
    }
    json_decref(extra);
    size_t len;
    char *buf = dump_json(o, &len);
    if (buf == NULL) {
        reply_internal(r);
        return;
    }
    set_reply(r, status, "application/problem+json", buf, len);
}

void gw_req_reply_problem(gw_req *r, unsigned status, const char *title, const char *detail,
                          json_t *extra)
{
    reply_problem_typed(r, status, NULL, title, detail, extra);
}

void gw_req_reply_err(gw_req *r, const gw_err *e)
{
    unsigned status = e->status > 0 ? (unsigned)e->status : 500;
    reply_problem_typed(r, status, NULL, MHD_get_reason_phrase_for(status), e->msg, NULL);
}

/* Seconds from now to the next US-Central midnight (at least 1). */
static int64_t seconds_to_quota_reset(void)
{
    int64_t now = (int64_t)time(NULL);
    int64_t d = gw_next_central_midnight(now) - now;
    return d > 0 ? d : 1;
}

/* Adds Retry-After: secs (at least 1). */
static void add_retry_after(gw_req *r, int64_t secs)
{
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)(secs > 0 ? secs : 1));
    gw_req_add_header(r, "Retry-After", v);
}

void gw_req_reply_job_error(gw_req *r, const gw_job *job)
{
    json_t *extra = NULL;
    switch (job->outcome) {
    case GW_OUT_FAULT: {
        /* The answer is the code's row of marketo/codes.h; a code it does
         * not know, or one it gives no answer, is an unexpected fault. */
        const mkto_code_info *c = mkto_code_find(job->fault.code);
        extra = json_pack("{s:i}", "marketo_code", job->fault.code);
        if (c == NULL || c->http.status == 0) {
            reply_problem_typed(r, 502, "upstream-error", "Upstream error",
                                "Marketo answered with an unexpected fault", extra);
            return;
        }
        json_object_set_new(extra, "marketo_message", json_string(c->message));
        if (c->retry == MKTO_RETRY_QUOTA)
            add_retry_after(r, seconds_to_quota_reset());
        else if (c->retry == MKTO_RETRY_LIMITED)
            add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : 20);
        reply_problem_typed(r, c->http.status, c->http.type, c->http.title, NULL, extra);
        return;
    }
    case GW_OUT_RATE_LIMITED:
        add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : 1);
        reply_problem_typed(r, 429, "rate-limited", "Outbound rate limit reached",
                            "no outbound call slot became free before the queue deadline", NULL);
        return;
    case GW_OUT_QUOTA:
        add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : seconds_to_quota_reset());
        reply_problem_typed(r, 429, "quota-exhausted", "Daily upstream quota exhausted",
                            "the daily Marketo call quota is spent until midnight US Central time", NULL);
        return;
    case GW_OUT_TIMEOUT:
        reply_problem_typed(r, 504, "upstream-timeout", "Upstream timeout",
                            "Marketo did not answer within the request deadline", NULL);
        return;
    case GW_OUT_UNREACHABLE:
        GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:s}", "request_id", r->id, "detail", job->detail),
               "upstream unreachable");
        reply_problem_typed(r, 502, "upstream-unreachable", "Upstream unreachable",
                            "the gateway could not reach Marketo", NULL);
        return;
    case GW_OUT_BAD_RESPONSE:
        GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:s}", "request_id", r->id, "detail", job->detail),
               "upstream bad response");
        reply_problem_typed(r, 502, "upstream-bad-response", "Bad upstream response",
                            "Marketo's answer could not be understood", NULL);
        return;
    case GW_OUT_SHUTDOWN:
        reply_problem_typed(r, 503, "shutting-down", "Shutting down",
                            "the gateway is shutting down; retry on another replica", NULL);
        return;
    case GW_OUT_OK:
    default:
        reply_problem_typed(r, 500, "internal", "Internal error", "unexpected upstream outcome", NULL);
        return;
    }
}

/* ----------------------------------------------------------- suspending */

void gw_req_suspend(gw_req *r, gw_handler_fn on_resume)
{
    pthread_mutex_lock(&r->mu);
    r->on_resume = on_resume;
    r->suspend_wanted = true;
    pthread_mutex_unlock(&r->mu);
}

void gw_req_resume(gw_req *r)
{
    struct MHD_Connection *conn = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->mhd_suspended) {
        r->mhd_suspended = false;
        conn = r->conn;
    } else {
        r->resumed_early = true;
    }
    pthread_mutex_unlock(&r->mu);
    /* r may be gone from here on; a suspended connection cannot be. */
    if (conn != NULL)
        MHD_resume_connection(conn);
}

/* ---------------------------------------------------------- dispatching */

/* Answers an OPTIONS request: a CORS preflight from an allowed origin gets
 * 204 with the Access-Control-* headers; any other OPTIONS (no preflight
 * headers, CORS not configured, or a disallowed origin) gets 204 with Allow
 * only, which a browser treats as a refused preflight. */
static void reply_options(gw_req *r)
{
    char allow[64];
    allow_methods(r, allow, sizeof allow);
    const char *origin = gw_req_header(r, "Origin");
    const char *acrm = gw_req_header(r, "Access-Control-Request-Method");
    set_reply(r, 204, NULL, NULL, 0);
    if (r->resp == NULL)
        return;
    MHD_add_response_header(r->resp, "Allow", allow);
    if (acrm != NULL && origin_allowed(r->srv, origin)) {
        /* add_common_headers already put Allow-Origin, Vary and Expose. */
        MHD_add_response_header(r->resp, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(r->resp, "Access-Control-Allow-Headers", GW_CORS_ALLOW_HEADERS);
        MHD_add_response_header(r->resp, "Access-Control-Max-Age", GW_CORS_MAX_AGE);
    }
}

/* Whether a Content-Type value names JSON: application/json, or an
 * application/ type with the "+json" structured-syntax suffix
 * (application/merge-patch+json), with any parameters (charset=utf-8),
 * case-insensitive. A browser sends none of these cross-origin without a
 * CORS preflight (only text/plain, form and multipart bodies go without
 * one), which is what makes this check a CSRF defence when auth.disabled
 * is true and no API key stands in the way. */
static bool content_type_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, "application/", 12) != 0)
        return false;
    const char *sub = ct + 12;
    size_t n = strcspn(sub, "; \t");
    const char *rest = sub + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != '\0' && *rest != ';')
        return false;
    if (n == 4 && strncasecmp(sub, "json", 4) == 0)
        return true;
    return n > 5 && strncasecmp(sub + n - 5, "+json", 5) == 0;
}

/* Charges n more body bytes of r to the shared budget
 * (gateway.max_body_total_bytes). Returns false, charging nothing, when the
 * bytes held by all requests would go past it. */
static bool body_charge(gw_req *r, size_t n)
{
    gw_server *s = r->srv;
    size_t cur = atomic_load(&s->body_held);
    do {
        if (n > s->body_budget || cur > s->body_budget - n)
            return false;
    } while (!atomic_compare_exchange_weak(&s->body_held, &cur, cur + n));
    r->body_charged += n;
    gw_gauge_add(s->body_gauge, (int64_t)n);
    return true;
}

/* Gives r's body bytes back to the shared budget. */
static void body_uncharge(gw_req *r)
{
    if (r->body_charged == 0)
        return;
    atomic_fetch_sub(&r->srv->body_held, r->body_charged);
    gw_gauge_add(r->srv->body_gauge, -(int64_t)r->body_charged);
    r->body_charged = 0;
}

/* Frees what r holds of its body and its charge; the bytes read so far
 * count as discarded. */
static void body_drop(gw_req *r)
{
    r->discarded = r->body_len;
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    body_uncharge(r);
}

/* The 503 of a body the shared budget cannot hold: it comes back soon, as
 * bodies in progress complete. */
static void reply_body_budget(gw_req *r)
{
    add_retry_after(r, 1);
    reply_problem_typed(r, 503, "body-budget", "Too many request bodies in progress",
                        "the request bodies being received fill gateway.max_body_total_bytes; "
                        "retry shortly",
                        NULL);
}

/* Everything the request line and the headers decide, on the first
 * access-handler call, before a body byte is read: an unauthenticated or
 * misrouted request never costs more than its headers, whatever its
 * Content-Length. Returns true when the request goes on (its body, if any,
 * is read next, its Content-Length already charged to the body budget);
 * false when r holds its reply. */
static bool screen_request(gw_req *r)
{
    gw_server *s = r->srv;
    for (const char *p = r->url; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            reply_problem_typed(r, 400, "invalid-request", "Invalid path",
                                "the path holds a control character", NULL);
            return false;
        }
    }
    if (!r->path_known) {
        reply_problem_typed(r, 404, "not-found", "Not found", "no such route", NULL);
        return false;
    }
    /* gateway.metrics_listen set: /metrics has a port of its own
     * (metrics_http.c), kept off this one */
    const char *metrics_listen = s->app->cfg->metrics_listen;
    if (metrics_listen != NULL && metrics_listen[0] != '\0' && strcmp(r->url, "/metrics") == 0) {
        reply_problem_typed(r, 404, "not-found", "Not found",
                            "/metrics is served on gateway.metrics_listen", NULL);
        return false;
    }
    if (strcmp(r->method, "OPTIONS") == 0) {
        reply_options(r);
        return false;
    }
    if (r->route == NULL) {
        char allow[64];
        allow_methods(r, allow, sizeof allow);
        gw_req_add_header(r, "Allow", allow);
        reply_problem_typed(r, 405, "method-not-allowed", "Method not allowed",
                            "this route does not accept that method", NULL);
        return false;
    }
    if (r->late && r->route->needs_upstream) {
        /* started while draining: answered now, never queued for Marketo */
        gw_req_add_header(r, "Retry-After", "1");
        reply_problem_typed(r, 503, "shutting-down", "Shutting down",
                            "the gateway is shutting down; retry on another replica", NULL);
        return false;
    }
    if (r->route->needs_auth && !request_authorized(r)) {
        gw_req_add_header(r, "WWW-Authenticate", "Bearer realm=\"marketo-gateway\"");
        reply_problem_typed(r, 401, "unauthorized", "Unauthorized",
                            "a valid API key is required (Authorization: Bearer or X-API-Key)", NULL);
        return false;
    }

    /* The body, as the headers announce it. libmicrohttpd has refused a
     * malformed Content-Length already; chunked bodies have none. */
    const char *te = gw_req_header(r, "Transfer-Encoding");
    const char *cl = gw_req_header(r, "Content-Length");
    unsigned long long len = 0;
    bool huge = false;
    if (cl != NULL) {
        char *end;
        errno = 0;
        len = strtoull(cl, &end, 10);
        huge = end != cl && (errno == ERANGE || len > SIZE_MAX);
    }
    bool has_body = te != NULL || huge || len > 0;
    r->has_body = has_body;
    if (!r->route->json_body) {
        if (has_body) {
            reply_problem_typed(r, 413, "body-not-allowed", "Request body not allowed",
                                "this route takes no request body", NULL);
            return false;
        }
    } else {
        if (!content_type_is_json(gw_req_header(r, "Content-Type"))) {
            gw_req_add_header(r, "Accept", "application/json");
            reply_problem_typed(r, 415, "unsupported-media-type", "Unsupported media type",
                                "the body must be JSON: Content-Type: application/json", NULL);
            return false;
        }
        if (huge || len > s->max_body) {
            char d[96];
            snprintf(d, sizeof d, "the request body exceeds %zu bytes", s->max_body);
            reply_problem_typed(r, 413, "body-too-large", "Request body too large", d, NULL);
            return false;
        }
    }
    if (r->route->needs_upstream && !s->app->upstream_configured) {
        reply_problem_typed(r, 503, "upstream-not-configured", "Upstream not configured",
                            "marketo.soap_endpoint is not set", NULL);
        return false;
    }
    if (te == NULL && len > 0) {
        if (!body_charge(r, (size_t)len)) {
            reply_body_budget(r);
            return false;
        }
        r->body_expected = (size_t)len;
    }
    return true;
}

/* Called once the whole request is in (screen_request let it through):
 * the body's own verdicts, then the handler. */
static void dispatch(gw_req *r)
{
    if (r->too_large) {
        char d[96];
        snprintf(d, sizeof d, "the request body exceeds %zu bytes", r->srv->max_body);
        reply_problem_typed(r, 413, "body-too-large", "Request body too large", d, NULL);
        return;
    }
    if (r->over_budget) {
        reply_body_budget(r);
        return;
    }
    r->route->handler(r);
}

/* Runs after a handler or on_resume call: queues the reply, or suspends the
 * connection, or (resume already requested) runs on_resume at once. A
 * handler that did neither gets a 500. */
static enum MHD_Result finish_call(gw_req *r)
{
    for (;;) {
        if (r->resp != NULL) {
            enum MHD_Result rc = MHD_queue_response(r->conn, r->status, r->resp);
            MHD_destroy_response(r->resp);
            r->resp = NULL;
            r->phase = PHASE_DONE;
            pthread_mutex_lock(&r->mu);
            bool wanted = r->suspend_wanted;
            pthread_mutex_unlock(&r->mu);
            if (wanted)
                GW_LOG(GW_LOG_ERROR, json_pack("{s:s}", "request_id", r->id),
                       "handler both replied and suspended");
            return rc;
        }
        pthread_mutex_lock(&r->mu);
        if (!r->suspend_wanted) {
            pthread_mutex_unlock(&r->mu);
            GW_LOG(GW_LOG_ERROR, json_pack("{s:s}", "request_id", r->id), "handler gave no reply");
            reply_internal(r);
            continue;
        }
        r->suspend_wanted = false;
        if (r->resumed_early) {
            r->resumed_early = false;
            gw_handler_fn fn = r->on_resume;
            r->on_resume = NULL;
            pthread_mutex_unlock(&r->mu);
            r->phase = PHASE_RUNNING;
            fn(r);
            continue;
        }
        r->phase = PHASE_SUSPENDED;
        r->mhd_suspended = true;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
}

/* Allocates a request for conn (from on_uri_log, when its request line is
 * in); req_start completes it once the headers are. NULL: no memory. */
static gw_req *req_alloc(gw_server *s, struct MHD_Connection *conn)
{
    gw_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->srv = s;
    r->conn = conn;
    r->key_index = -1;
    r->draining = -1;
    return r;
}

/* Frees a request that never reached the access handler (its headers never
 * came in complete): nothing was counted, logged or charged for it. */
static void req_free_unstarted(gw_req *r)
{
    free(r->query);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Completes the request on its first access-handler call: the headers are
 * in, the body (if any) is not read yet. */
static void req_start(gw_req *r, const char *url, const char *method)
{
    gw_server *s = r->srv;
    r->started = true;
    r->url = url;
    r->method = method;
    r->start_ms = gw_now_ms();
    clock_gettime(CLOCK_MONOTONIC, &r->start_ts);
    const char *given = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Request-ID");
    if (request_id_valid(given))
        snprintf(r->id, sizeof r->id, "%s", given);
    else
        request_id_generate(r->id);
    resolve_route(r);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->gconn = ci != NULL ? ci->socket_context : NULL;
    r->late = atomic_load(&s->quiesced);
    atomic_fetch_add(r->late ? &s->late_active : &s->active, 1);
    if (r->late)
        atomic_store(&s->late_last_ms, gw_now_ms());
    gw_gauge_add(s->in_flight, 1);
}

/* Appends an upload chunk to the body, or counts it as discarded once over
 * the cap or the budget. A body with a Content-Length gets one buffer of
 * exactly that size (charged at the headers); one without (chunked) grows
 * by doubling up to the cap, each growth charged to the budget first.
 * Returns false when the connection should be dropped. */
static bool take_upload(gw_req *r, const char *data, size_t n)
{
    size_t cap = r->srv->max_body;
    if (!r->too_large && !r->over_budget && r->body_len + n > cap) {
        r->too_large = true;
        body_drop(r);
    }
    if (!r->too_large && !r->over_budget && r->body_len + n > r->body_cap) {
        size_t ncap = r->body_expected;
        if (ncap < r->body_len + n) {
            ncap = r->body_cap ? r->body_cap : 4096;
            while (ncap < r->body_len + n)
                ncap *= 2;
            if (ncap > cap)
                ncap = cap;
            if (!body_charge(r, ncap - r->body_cap)) {
                r->over_budget = true;
                body_drop(r);
            }
        }
        if (!r->over_budget) {
            char *nb = realloc(r->body, ncap);
            if (nb == NULL)
                return false;
            r->body = nb;
            r->body_cap = ncap;
        }
    }
    if (r->too_large || r->over_budget) {
        r->discarded += n;
        return r->discarded <= (size_t)cap + GW_DISCARD_MAX;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return true;
}

/* libmicrohttpd's access handler: see the top of the file. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    gw_req *r = *req_cls;
    (void)cls;
    (void)conn;
    (void)version;

    if (r == NULL)
        return MHD_NO; /* on_uri_log found no memory for it */
    if (!r->started) {
        req_start(r, url, method);
        r->phase = PHASE_RUNNING;
        bool go_on = screen_request(r);
        /* The header deadline ends here; the body's starts when one follows. */
        if (!gw_guard_headers_done(r->gconn, go_on && r->has_body, r->id))
            return MHD_NO; /* closed by the guard meanwhile (408 sent) */
        if (!go_on)
            return finish_call(r);
        r->phase = PHASE_BODY;
        return MHD_YES;
    }

    switch (r->phase) {
    case PHASE_BODY:
        if (*upload_data_size > 0) {
            bool ok = take_upload(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            if (!ok)
                GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "request_id", r->id),
                       "request body far over the cap: connection dropped");
            return ok ? MHD_YES : MHD_NO;
        }
        if (!gw_guard_body_done(r->gconn))
            return MHD_NO; /* the body deadline passed: closed by the guard (408 sent) */
        r->phase = PHASE_RUNNING;
        dispatch(r);
        return finish_call(r);
    case PHASE_SUSPENDED: {
        pthread_mutex_lock(&r->mu);
        gw_handler_fn fn = r->on_resume;
        r->on_resume = NULL;
        pthread_mutex_unlock(&r->mu);
        r->phase = PHASE_RUNNING;
        if (fn != NULL)
            fn(r);
        return finish_call(r);
    }
    case PHASE_RUNNING:
    case PHASE_DONE:
    default:
        *upload_data_size = 0;
        return MHD_YES;
    }
}

/* The route label of index i (see NROUTE_LABELS). */
static const char *route_label(size_t i)
{
    if (i < NROUTES)
        return routes[i].pattern;
    return i == ROUTE_LABEL_MNA ? "method_not_allowed" : "unmatched";
}

/* The series kept in list *head for status under metrics generation gen,
 * or NULL when none is kept yet. */
static void *cached_series(_Atomic(series_node *) *head, unsigned status, uint64_t gen)
{
    for (series_node *n = atomic_load_explicit(head, memory_order_acquire); n != NULL; n = n->next)
        if (n->status == status && n->gen == gen)
            return n->series;
    return NULL;
}

/* Keeps series (may be NULL: nothing kept) in list *head for status under
 * generation gen. Two threads may both add one for the same status; both
 * nodes then point at the same registry series. */
static void cache_series(_Atomic(series_node *) *head, unsigned status, uint64_t gen, void *series)
{
    if (series == NULL)
        return;
    series_node *n = malloc(sizeof *n);
    if (n == NULL)
        return;
    n->status = status;
    n->gen = gen;
    n->series = series;
    n->next = atomic_load_explicit(head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(head, &n->next, n, memory_order_release,
                                                  memory_order_relaxed))
        ;
}

/* Frees a list of series_node. */
static void free_series_list(series_node *n)
{
    while (n != NULL) {
        series_node *next = n->next;
        free(n);
        n = next;
    }
}

/* libmicrohttpd's completion callback: access log, metrics, free. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    gw_server *s = cls;
    gw_req *r = *req_cls;
    (void)conn;
    if (r == NULL)
        return;
    *req_cls = NULL;
    if (!r->started) {
        req_free_unstarted(r);
        return;
    }

    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - r->start_ts.tv_sec) +
                  (double)(now.tv_nsec - r->start_ts.tv_nsec) / 1e9;
    size_t ridx = r->route != NULL ? (size_t)(r->route - routes)
                                   : (r->path_known ? ROUTE_LABEL_MNA : ROUTE_LABEL_UNMATCHED);
    if (r->route == NULL && r->path_known) {
        /* A known path with another method: label it with its pattern. */
        for (size_t i = 0; i < NROUTES; i++) {
            const char *p;
            if (path_matches(routes[i].pattern, r->url, &p)) {
                ridx = i;
                if (strchr(routes[i].pattern, '{') == NULL)
                    break;
            }
        }
    }
    const char *route = route_label(ridx);
    size_t midx = method_label_index(r->method);
    const char *mlabel = method_labels[midx];
    unsigned status = r->status != 0 ? r->status : gw_guard_closed_status(r->gconn);
    bool aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;

    if (GW_LOG_INFO >= gw_log_min_level) {
        int64_t us = (int64_t)(secs * 1e6);
        gw_log_field f[] = {
            {"request_id", GW_LF_STR, r->id, 0},
            {"method", GW_LF_STR, mlabel, 0},
            {"route", GW_LF_STR, route, 0},
            {"status", GW_LF_INT, NULL, (int64_t)status},
            {"duration_ms", GW_LF_INT, NULL, us / 1000},
            {"duration_us", GW_LF_INT, NULL, us},
            {"upstream_calls", GW_LF_INT, NULL, r->upstream_calls},
            {"cache", GW_LF_STR, r->cache[0] != '\0' ? r->cache : NULL, 0},
            {"bytes", GW_LF_INT, NULL, (int64_t)r->resp_bytes},
            {"aborted", GW_LF_BOOL, NULL, 1},
        };
        gw_log_emit_fields(GW_LOG_INFO, f, aborted ? 10 : 9, "request");
    }

    uint64_t gen = gw_metrics_generation();
    gw_counter *c = cached_series(&s->counters[ridx][midx], status, gen);
    if (c == NULL) {
        char labels[192];
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",status=\"%u\"", route, mlabel,
                 status);
        c = gw_metrics_counter("http_requests_total", "HTTP requests answered", labels);
        cache_series(&s->counters[ridx][midx], status, gen, c);
    }
    gw_counter_add(c, 1);
    gw_histogram *h = cached_series(&s->durations[ridx], 0, gen);
    if (h == NULL) {
        char labels[192];
        snprintf(labels, sizeof labels, "route=\"%s\"", route);
        h = gw_metrics_histogram("http_request_duration_seconds",
                                 "Time from the first byte to the last, per route", labels,
                                 gw_duration_buckets, gw_duration_buckets_n);
        cache_series(&s->durations[ridx], 0, gen, h);
    }
    gw_histogram_observe(h, secs);
    gw_gauge_add(s->in_flight, -1);

    if (r->state_free != NULL && r->state != NULL)
        r->state_free(r->state);
    if (r->resp != NULL)
        MHD_destroy_response(r->resp);
    for (size_t i = 0; i < r->nhdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    free(r->body);
    body_uncharge(r);
    free(r->qnames);
    free(r->qvalues);
    free(r->query);
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        gw_guard_request_done(r->gconn); /* kept alive: idle until the next request */
    bool late = r->late;
    pthread_mutex_destroy(&r->mu);
    free(r);
    atomic_fetch_sub(late ? &s->late_active : &s->active, 1);
}

/* libmicrohttpd's unescape callback, for the path and every query name and
 * value: standard %-decoding, except that a decoded NUL becomes 0x01. A NUL
 * would silently cut the C string short ("a%00b@x.com" read as "a"); a
 * control character is refused by the query parser and the path check. */
static size_t on_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\0')
            s[i] = '\x01';
    return n;
}

/* libmicrohttpd's connection notifications: the guard follows every
 * connection from its accept (header deadline, room at the limit) to its
 * close, which libmicrohttpd announces before it closes the socket. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    gw_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci != NULL ? gw_guard_open(s->guard, ci->connect_fd) : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gw_guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* libmicrohttpd's URI log callback: runs once per request on the raw
 * request target, as soon as the request line is in and before
 * libmicrohttpd splits the query string. It allocates the request (its
 * return value is the access handler's first *req_cls) and takes the query
 * string over: a copy goes into the request, split on demand by
 * gw_req_query, and libmicrohttpd's own is cut to nothing, so that it
 * records no argument.
 *
 * Why: libmicrohttpd 0.9.75 records every GET argument (about 50 bytes
 * each, plus the text) in the connection's memory pool
 * (GW_CONN_MEMORY_LIMIT); some 450 arguments filled it, and the 431 it then
 * queued was lost (its request-line parser ignores the failure and carries
 * on), so the client waited for the idle timeout with no answer at all.
 * Now the pool holds the request line and the headers only, whose overflow
 * libmicrohttpd does answer (414, 431) at once, and the gateway's own
 * arrays hold the arguments (at most one per two bytes of a request line
 * that fitted in the pool).
 *
 * The cut writes one NUL into libmicrohttpd's read buffer, which is where
 * `uri` points in 0.9.75: the buffer it is about to split in place, its
 * '?' already found, so the argument string it parses next is empty. Were
 * a later libmicrohttpd to pass a copy, the cut would miss and the pool
 * would record the arguments again (the old limit), while the gateway
 * still read its own copy. */
static void *on_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    gw_req *r = req_alloc(cls, conn);
    if (r == NULL)
        return NULL;
    char *q = strchr(uri, '?'); /* a writable pointer into libmicrohttpd's buffer, see above */
    if (q != NULL) {
        r->query = strdup(q + 1);
        if (r->query == NULL) {
            req_free_unstarted(r);
            return NULL;
        }
        q[1] = '\0';
    }
    return r;
}

/* libmicrohttpd's error log, into ours. */
__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    if (GW_LOG_WARN < gw_log_min_level)
        return;
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    gw_log_emit(GW_LOG_WARN, json_pack("{s:s}", "component", "libmicrohttpd"), "%s", buf);
}

/* ---------------------------------------------------------------- daemon */

/* Splits a comma-separated list into trimmed, non-empty copies. Returns 0 or -1. */
static int split_list(const char *in, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (in == NULL)
        return 0;
    const char *p = in;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            char **nv = realloc(*out, (*n + 1) * sizeof *nv);
            if (nv == NULL)
                return -1;
            *out = nv;
            (*out)[*n] = strndup(a, (size_t)(b - a));
            if ((*out)[*n] == NULL)
                return -1;
            (*n)++;
        }
        p = e ? e + 1 : p + len;
    }
    return 0;
}

/* Fills ss from host and port (numeric addresses, or a name resolved once).
 * Returns the address length, or 0 with err filled. */
static socklen_t listen_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                             gw_err *err)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        return sizeof *in4;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        return sizeof *in6;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof *ss) {
        gw_err_set(err, 0, "gateway.listen: cannot resolve the host (%s)", gai_strerror(rc));
        if (res != NULL)
            freeaddrinfo(res);
        return 0;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    socklen_t len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        in4->sin_port = htons(port);
    else
        in6->sin6_port = htons(port);
    return len;
}

gw_server *gw_server_start(gw_app *app, gw_err *err)
{
    const gw_config *cfg = app->cfg;
    gw_server *s = calloc(1, sizeof *s);
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;

    if (s == NULL) {
        gw_err_set(err, 0, "out of memory");
        return NULL;
    }
    s->app = app;
    s->max_body = cfg->max_body_bytes > 0 ? (size_t)cfg->max_body_bytes : (8u << 20);
    s->body_budget = cfg->max_body_total_bytes > 0 ? (size_t)cfg->max_body_total_bytes : (32u << 20);
    if (s->body_budget < s->max_body)
        s->body_budget = s->max_body;
    s->auth_off = cfg->auth_disabled && app->napi_keys == 0;
    s->nkeys = app->napi_keys;
    if (s->nkeys > 0) {
        s->key_digests = malloc(s->nkeys * SHA256_DIGEST_LENGTH);
        if (s->key_digests == NULL) {
            gw_err_set(err, 0, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < s->nkeys; i++)
            SHA256((const unsigned char *)app->api_keys[i], strlen(app->api_keys[i]),
                   s->key_digests + i * SHA256_DIGEST_LENGTH);
    }
    if (split_list(cfg->cors_allowed_origins, &s->origins, &s->norigins) < 0) {
        gw_err_set(err, 0, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->norigins; i++)
        if (strcmp(s->origins[i], "*") == 0)
            s->cors_any = true;
    s->in_flight = gw_metrics_gauge("http_requests_in_flight", "HTTP requests not yet completed", NULL);
    s->body_gauge = gw_metrics_gauge("http_request_body_bytes",
                                     "Request body bytes held (bounded by gateway.max_body_total_bytes)",
                                     NULL);

    if (gw_config_split_listen(cfg->listen != NULL ? cfg->listen : "127.0.0.1:8080", host,
                               sizeof host, &port) < 0) {
        gw_err_set(err, 0, "gateway.listen: expected host:port");
        goto fail;
    }
    socklen_t alen = listen_addr(host, port, &ss, err);
    if (alen == 0)
        goto fail;

    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = cfg->threads > 0 ? cfg->threads : (ncpu > 0 ? ncpu : 1);
    if (threads > 256)
        threads = 256;
    unsigned int climit = cfg->connection_limit > 0 ? (unsigned int)cfg->connection_limit : 1024u;
    if (climit < (unsigned int)threads)
        climit = (unsigned int)threads;
    unsigned int idle = cfg->idle_timeout_s > 0 ? (unsigned int)cfg->idle_timeout_s : 0u;
    unsigned int per_client =
        cfg->max_connections_per_client > 0 ? (unsigned int)cfg->max_connections_per_client : 0u;
    gw_guard_opts gopts = {
        .header_timeout_ms = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : 10000,
        .body_timeout_ms = cfg->body_timeout_ms > 0 ? cfg->body_timeout_ms : 60000,
        .connection_limit = climit,
    };
    s->guard = gw_guard_start(&gopts);
    if (s->guard == NULL) {
        gw_err_set(err, 0, "out of memory or threads for the connection guard");
        goto fail;
    }

    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(threads > 1 ? threads : 0),
                                 MHD_OPTION_CONNECTION_LIMIT, climit,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_client,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                 MHD_OPTION_CONNECTION_TIMEOUT, idle,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_CONN_MEMORY_LIMIT,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s,
                                 MHD_OPTION_URI_LOG_CALLBACK, on_uri_log, s,
                                 MHD_OPTION_END);
    if (s->daemon == NULL) {
        gw_err_set(err, 0, "cannot listen on gateway.listen %s (address in use or not allowed?)",
                   cfg->listen != NULL ? cfg->listen : "");
        goto fail;
    }
    return s;
fail:
    gw_server_stop(s);
    return NULL;
}

unsigned gw_server_port(gw_server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i != NULL ? i->port : 0;
}

/* Starts the drain without MHD_quiesce_daemon: in libmicrohttpd 0.9.75 it
 * races its own epoll worker threads over removing the listen FD from
 * their epoll sets and then aborts the process ("Failed to remove listen
 * FD from epoll set", an open libmicrohttpd defect; it hit a SIGTERM under
 * load here). The listening socket stays open while draining (a pod keeps
 * getting connections until its endpoint removal has spread): every
 * request that starts from now on is answered at once (screen_request: 503
 * shutting-down with Retry-After on the lead routes, /readyz 503, /healthz
 * 200, all with Connection: close) and is not counted in
 * gw_server_active, so the drain waits only for what was in progress.
 * gw_server_stop closes the listener last. */
void gw_server_quiesce(gw_server *s)
{
    if (s != NULL)
        atomic_store(&s->quiesced, true);
}

size_t gw_server_active(gw_server *s) { return atomic_load(&s->active); }

/* Ends a drain. First, while late requests keep coming (one started in
 * the last 100 ms; at most 1 s), they are still answered: a client whose
 * request just finished often sends its next one at once, and a connection
 * still in the listen backlog when the listener shuts is reset, not
 * refused. Then the listening socket stops taking connections (refused by
 * the kernel from here on; shutdown(2) rather than close, so
 * libmicrohttpd's epoll sets stay consistent until MHD_stop_daemon), and
 * the requests still in progress get up to 200 ms to go out. */
static void close_listener(gw_server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    if (i == NULL || i->listen_fd == MHD_INVALID_SOCKET)
        return;
    int64_t until = gw_now_ms() + 1000;
    while (gw_now_ms() < until && gw_now_ms() - atomic_load(&s->late_last_ms) < 100)
        usleep(10 * 1000);
    shutdown(i->listen_fd, SHUT_RDWR);
    for (int k = 0; k < 20 && atomic_load(&s->late_active) + atomic_load(&s->active) > 0; k++)
        usleep(10 * 1000);
}

void gw_server_stop(gw_server *s)
{
    if (s == NULL)
        return;
    if (s->daemon != NULL && atomic_load(&s->quiesced))
        close_listener(s);
    if (s->daemon != NULL)
        MHD_stop_daemon(s->daemon);
    gw_guard_stop(s->guard); /* every connection is closed now */
    if (s->key_digests != NULL)
        OPENSSL_cleanse(s->key_digests, s->nkeys * SHA256_DIGEST_LENGTH);
    free(s->key_digests);
    for (size_t i = 0; i < s->norigins; i++)
        free(s->origins[i]);
    free(s->origins);
    for (size_t i = 0; i < NROUTE_LABELS; i++) {
        for (size_t j = 0; j < NMETHOD_LABELS; j++)
            free_series_list(atomic_load(&s->counters[i][j]));
        free_series_list(atomic_load(&s->durations[i]));
    }
    free(s);
}
