/* gateway/http/server.h - the HTTP face: libmicrohttpd, routing, per-request state.
 *
 * libmicrohttpd runs its internal epoll threads with suspend/resume. The
 * server accumulates the body (capped), checks auth (except on the four
 * operations routes), answers CORS preflights, assigns X-Request-ID, then
 * calls the route's handler once with the whole request. A handler either
 * replies at once (gw_req_reply_*) or calls gw_req_suspend() and returns;
 * whoever finishes the work calls gw_req_resume() from any thread, and the
 * server then calls the on_resume function on an HTTP thread, which replies
 * or suspends again. Every reply gets X-Request-ID, CORS headers and one
 * JSON access-log line.
 *
 * A gw_req lives from the first byte to libmicrohttpd's completion callback;
 * a suspended request is never freed, so work holding a gw_req may use it
 * until it calls gw_req_resume(), and not after.
 *
 * Implemented by server.c and the files beside it in gateway/http/ (one
 * module; gateway/http/server_internal.h says which file does what).
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/app.h"
#include "gateway/err.h"

typedef struct gw_req gw_req;
typedef struct gw_server gw_server;

/* A route handler or resume function. */
typedef void (*gw_handler_fn)(gw_req *r);

/* ---- reading the request ---- */
gw_app *gw_req_app(gw_req *r);
const char *gw_req_method(gw_req *r);
const char *gw_req_path(gw_req *r);
/* The {id} of /leads/{id} (NULL on other routes). */
const char *gw_req_path_param(gw_req *r);
/* URL-decoded query arguments in request order; arrays valid for the request. */
size_t gw_req_query(gw_req *r, const char *const **names, const char *const **values);
/* A request header (case-insensitive), or NULL. */
const char *gw_req_header(gw_req *r, const char *name);
/* The whole body (not NUL-terminated; *len may be 0). */
const char *gw_req_body(gw_req *r, size_t *len);
/* The request id (from X-Request-ID when valid, else generated). */
const char *gw_req_id(gw_req *r);
/* Whether the gateway is draining, as this request sees it: read on the
 * first call and fixed for the rest of the request (the reply's
 * Connection: close follows the same reading). */
bool gw_req_draining(gw_req *r);
/* Monotonic ms when the request arrived (deadlines derive from it). */
int64_t gw_req_start_ms(gw_req *r);

/* The handler's own state: freed with free_fn when the request completes. */
void gw_req_set_state(gw_req *r, void *state, void (*free_fn)(void *));
void *gw_req_state(gw_req *r);

/* ---- replying (exactly once per request; headers first) ---- */
/* Adds a response header (e.g. X-Cache, Retry-After). Copied. */
void gw_req_add_header(gw_req *r, const char *name, const char *value);
/* 200/4xx/5xx with a JSON body (reference stolen), application/json. */
void gw_req_reply_json(gw_req *r, unsigned status, json_t *body);
/* RFC 9457 application/problem+json: type, title, status, detail,
 * request_id, plus the members of extra (stolen, may be NULL; e.g.
 * "marketo_code"). detail must hold no secret and no key value. */
void gw_req_reply_problem(gw_req *r, unsigned status, const char *title, const char *detail,
                          json_t *extra);
/* The problem reply of an error: status e->status (0 counts as 500), the
 * status's reason phrase as title, e->msg as detail. */
void gw_req_reply_err(gw_req *r, const gw_err *e);
/* Any other body (text/plain metrics, the OpenAPI document). Copied. */
void gw_req_reply_raw(gw_req *r, unsigned status, const char *content_type,
                      const char *body, size_t len);
/* Maps an ended upstream job that did not succeed to a problem reply:
 * FAULT -> by Marketo code (with marketo_code), RATE_LIMITED/QUOTA -> 429
 * with Retry-After, TIMEOUT -> 504, UNREACHABLE/BAD_RESPONSE -> 502,
 * SHUTDOWN -> 503. */
void gw_req_reply_job_error(gw_req *r, const gw_job *job);

/* ---- access-log facts ---- */
/* Counts SOAP calls spent on this request (log field "upstream_calls"). */
void gw_req_note_upstream(gw_req *r, int calls);
/* Charges the request, once, to its API key's share of the Marketo budget
 * (auth.key_calls_per_minute) and adds RateLimit/RateLimit-Policy headers.
 * Returns true when it may go upstream; false when it has been answered 429
 * with Retry-After (nothing must be sent). Always true with the limit off,
 * with auth off, and on every call after the first. */
bool gw_req_admit_upstream(gw_req *r);
/* Charges one more Marketo call of an admitted request (an updated-at walk
 * reading on into its next window) to the same budget. Returns false when
 * the share is spent: the caller then stops and answers what it has, with a
 * cursor. Replies nothing itself. */
bool gw_req_charge_upstream(gw_req *r);
/* "HIT", "MISS", "PARTIAL", "BYPASS" (log field "cache"; also sets X-Cache). */
void gw_req_note_cache(gw_req *r, const char *result);

/* ---- suspending ---- */
/* Marks the request suspended; after the handler returns, the connection
 * sleeps until gw_req_resume(), then on_resume runs on an HTTP thread. */
void gw_req_suspend(gw_req *r, gw_handler_fn on_resume);
/* Wakes a suspended request; any thread; exactly once per suspend. */
void gw_req_resume(gw_req *r);

/* ---- the daemon (main.c) ---- */
/* Starts the daemon on app->cfg->listen. Returns it, or NULL with err
 * filled (status 0: a start-up error, naming the setting). */
gw_server *gw_server_start(gw_app *app, gw_err *err);
/* The port actually bound (for listen ports of 0). */
unsigned gw_server_port(gw_server *s);
/* Starts the drain: requests that start from now on are answered at once
 * (503 shutting-down on the lead routes; the operations routes as usual)
 * with Connection: close; the listening socket stays open until
 * gw_server_stop. */
void gw_server_quiesce(gw_server *s);
/* Number of requests not yet completed that started before
 * gw_server_quiesce (the ones a drain waits for). */
size_t gw_server_active(gw_server *s);
/* Stops the daemon and frees it. */
void gw_server_stop(gw_server *s);

/* ---- route handlers (gateway/leads/lookup.c, gateway/leads/sync.c, gateway/http/ops.c) ---- */
void gw_handle_leads(gw_req *r);        /* GET /leads */
void gw_handle_lead_by_id(gw_req *r);   /* GET /leads/{id} */
void gw_handle_sync(gw_req *r);         /* POST /leads/sync */
void gw_handle_healthz(gw_req *r);      /* GET /healthz */
void gw_handle_readyz(gw_req *r);       /* GET /readyz */
void gw_handle_metrics(gw_req *r);      /* GET /metrics */
void gw_handle_openapi(gw_req *r);      /* GET /openapi.json */

#endif /* GW_SERVER_H */
