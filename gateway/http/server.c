/* gateway/http/server.c - a request's life: libmicrohttpd's request
 * callbacks (the URI log, the access handler, the completion callback),
 * request ids, dispatch to the route's handler, suspend/resume. The other
 * files of the server (server_internal.h lists them) do the rest: this one
 * calls routes.c, reply.c, access.c and screen.c; daemon.c installs its
 * callbacks.
 *
 * Life of a request (see server.h for the handler's view):
 *   0. request line in (gw_srv_on_uri_log): a gw_req is allocated, becoming
 *      *req_cls, and the query string copied out of libmicrohttpd's pool;
 *   1. first access-handler call, the request line and headers in, no body
 *      byte read yet: the request id assigned, the route looked up
 *      (req_start), and everything the headers decide is answered at once,
 *      before the body is read (gw_srv_screen, screen.c): 400 (control
 *      character in the path), 404, CORS preflight, 405, 401, 413 (a body
 *      on a route that takes none, or a Content-Length over
 *      gateway.max_body_bytes), 415 (a JSON route without a JSON
 *      Content-Type), 503 (no upstream; or the body would take the bytes
 *      held by all connections past gateway.max_body_total_bytes, with
 *      Retry-After). libmicrohttpd then closes the connection after the
 *      reply instead of reading the unread body;
 *   2. upload calls (gw_srv_take_upload, screen.c): the body is accumulated
 *      up to the cap, its bytes charged to the shared body budget; past the
 *      cap or the budget (bodies without Content-Length), the rest is read
 *      and thrown away (up to GW_DISCARD_MAX, then the connection is
 *      dropped) and the answer is 413 or 503;
 *   3. last call: the route's handler, which replies or suspends;
 *   4. after a handler returns, finish_call() queues the reply, or suspends
 *      the connection; a resumed connection comes back to the access handler,
 *      which runs the on_resume function and goes to step 4 again;
 *   5. libmicrohttpd's completion callback writes the access-log line and
 *      the metrics (access.c), returns the body's bytes to the budget, and
 *      frees the request and the handler's state.
 *
 * Replies are built into r->resp by the gw_req_reply_* functions (reply.c)
 * and queued by finish_call() on the connection's own thread, so a handler
 * may build its reply anywhere inside its call.
 */
#include "gateway/http/server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/rand.h>

#include "gateway/http/server_internal.h"
#include "gateway/log.h"
#include "gateway/metrics.h"

/* ----------------------------------------------------------- request ids */

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

/* Called once the whole request is in (gw_srv_screen let it through):
 * the body's own verdicts, then the handler. */
static void dispatch(gw_req *r)
{
    if (r->too_large) {
        gw_srv_reply_too_large(r);
        return;
    }
    if (r->over_budget) {
        gw_srv_reply_body_budget(r);
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
            gw_srv_reply_internal(r);
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

/* Allocates a request for conn (from gw_srv_on_uri_log, when its request line is
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
    gw_srv_route_resolve(r);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->gconn = ci != NULL ? ci->socket_context : NULL;
    r->late = atomic_load(&s->quiesced);
    atomic_fetch_add(r->late ? &s->late_active : &s->active, 1);
    if (r->late)
        atomic_store(&s->late_last_ms, gw_now_ms());
    gw_gauge_add(s->in_flight, 1);
}

/* libmicrohttpd's access handler: see the top of the file. */
enum MHD_Result gw_srv_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    gw_req *r = *req_cls;
    (void)cls;
    (void)conn;
    (void)version;

    if (r == NULL)
        return MHD_NO; /* gw_srv_on_uri_log found no memory for it */
    if (!r->started) {
        req_start(r, url, method);
        r->phase = PHASE_RUNNING;
        bool go_on = gw_srv_screen(r);
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
            bool ok = gw_srv_take_upload(r, upload_data, *upload_data_size);
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

/* libmicrohttpd's completion callback: access log and metrics (access.c),
 * then the request's memory, its body's charge and its handler's state. */
void gw_srv_on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
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
    gw_srv_access_record(r, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);

    if (r->state_free != NULL && r->state != NULL)
        r->state_free(r->state);
    if (r->resp != NULL)
        MHD_destroy_response(r->resp);
    for (size_t i = 0; i < r->nhdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    free(r->body);
    gw_srv_body_uncharge(r);
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
void *gw_srv_on_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
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
