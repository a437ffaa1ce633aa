/* gateway/http/screen.c - what a request's headers decide, before a body
 * byte is read (gw_srv_screen: 400, 404, CORS preflight, 405, 503 while
 * draining, 401, 413, 415, 503 without an upstream or past the body
 * budget), then the body itself: accumulated up to gateway.max_body_bytes,
 * its bytes charged to the budget all connections share
 * (gateway.max_body_total_bytes). Calls request.c, routes.c, reply.c and
 * auth.c.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/http/server_internal.h"

/* Answers an OPTIONS request: a CORS preflight from an allowed origin gets
 * 204 with the Access-Control-* headers; any other OPTIONS (no preflight
 * headers, CORS not configured, or a disallowed origin) gets 204 with Allow
 * only, which a browser treats as a refused preflight. */
static void reply_options(gw_req *r)
{
    char allow[64];
    gw_srv_route_allow(r, allow, sizeof allow);
    const char *origin = gw_req_header(r, "Origin");
    const char *acrm = gw_req_header(r, "Access-Control-Request-Method");
    gw_srv_set_reply(r, 204, NULL, NULL, 0);
    if (r->resp == NULL)
        return;
    MHD_add_response_header(r->resp, "Allow", allow);
    if (acrm != NULL && gw_srv_origin_allowed(r->srv, origin)) {
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
void gw_srv_body_uncharge(gw_req *r)
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
    gw_srv_body_uncharge(r);
}

/* The 413 of a body over gateway.max_body_bytes (announced or read). */
void gw_srv_reply_too_large(gw_req *r)
{
    char d[96];
    snprintf(d, sizeof d, "the request body exceeds %zu bytes", r->srv->max_body);
    gw_srv_reply_typed(r, 413, "body-too-large", "Request body too large", d, NULL);
}

/* The 503 of a body the shared budget cannot hold: it comes back soon, as
 * bodies in progress complete. */
void gw_srv_reply_body_budget(gw_req *r)
{
    gw_srv_add_retry_after(r, 1);
    gw_srv_reply_typed(r, 503, "body-budget", "Too many request bodies in progress",
                       "the request bodies being received fill gateway.max_body_total_bytes; "
                       "retry shortly",
                       NULL);
}

/* The request target: 400 for a control character in the path, 404 for a
 * path no route has (and /metrics while it has a port of its own). */
static bool screen_path(gw_req *r)
{
    for (const char *p = r->url; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            gw_srv_reply_typed(r, 400, "invalid-request", "Invalid path",
                               "the path holds a control character", NULL);
            return false;
        }
    }
    if (!r->path_known) {
        gw_srv_reply_typed(r, 404, "not-found", "Not found", "no such route", NULL);
        return false;
    }
    /* gateway.metrics_listen set: /metrics has a port of its own
     * (metrics_http.c), kept off this one */
    const char *metrics_listen = r->srv->app->cfg->metrics_listen;
    if (metrics_listen != NULL && metrics_listen[0] != '\0' && strcmp(r->url, "/metrics") == 0) {
        gw_srv_reply_typed(r, 404, "not-found", "Not found",
                           "/metrics is served on gateway.metrics_listen", NULL);
        return false;
    }
    return true;
}

/* The method and the caller: OPTIONS (answered here), 405 with Allow, 503
 * for a lead route while draining, 401 without a valid API key. */
static bool screen_route(gw_req *r)
{
    if (strcmp(r->method, "OPTIONS") == 0) {
        reply_options(r);
        return false;
    }
    if (r->route == NULL) {
        char allow[64];
        gw_srv_route_allow(r, allow, sizeof allow);
        gw_req_add_header(r, "Allow", allow);
        gw_srv_reply_typed(r, 405, "method-not-allowed", "Method not allowed",
                           "this route does not accept that method", NULL);
        return false;
    }
    if (r->late && r->route->needs_upstream) {
        /* started while draining: answered now, never queued for Marketo */
        gw_req_add_header(r, "Retry-After", "1");
        gw_srv_reply_typed(r, 503, "shutting-down", "Shutting down",
                           "the gateway is shutting down; retry on another replica", NULL);
        return false;
    }
    if (r->route->needs_auth && !gw_srv_authorized(r)) {
        gw_req_add_header(r, "WWW-Authenticate", "Bearer realm=\"marketo-gateway\"");
        gw_srv_reply_typed(r, 401, "unauthorized", "Unauthorized",
                           "a valid API key is required (Authorization: Bearer or X-API-Key)",
                           NULL);
        return false;
    }
    return true;
}

/* The body as the headers announce it. */
typedef struct body_head {
    bool chunked;            /* Transfer-Encoding given: no Content-Length */
    unsigned long long len;  /* Content-Length (0: none) */
    bool huge;               /* a Content-Length past what size_t holds */
} body_head;

/* Reads what the headers announce of the body into *b and sets r->has_body.
 * libmicrohttpd has refused a malformed Content-Length already; chunked
 * bodies have none. */
static void announced_body(gw_req *r, body_head *b)
{
    const char *cl = gw_req_header(r, "Content-Length");
    b->chunked = gw_req_header(r, "Transfer-Encoding") != NULL;
    b->len = 0;
    b->huge = false;
    if (cl != NULL) {
        char *end;
        errno = 0;
        b->len = strtoull(cl, &end, 10);
        b->huge = end != cl && (errno == ERANGE || b->len > SIZE_MAX);
    }
    r->has_body = b->chunked || b->huge || b->len > 0;
}

/* The body against the route: 413 for a body on a route that takes none,
 * 415 for a JSON route without a JSON Content-Type, 413 for a
 * Content-Length over gateway.max_body_bytes. */
static bool screen_body(gw_req *r, const body_head *b)
{
    if (!r->route->json_body) {
        if (r->has_body) {
            gw_srv_reply_typed(r, 413, "body-not-allowed", "Request body not allowed",
                               "this route takes no request body", NULL);
            return false;
        }
        return true;
    }
    if (!content_type_is_json(gw_req_header(r, "Content-Type"))) {
        gw_req_add_header(r, "Accept", "application/json");
        gw_srv_reply_typed(r, 415, "unsupported-media-type", "Unsupported media type",
                           "the body must be JSON: Content-Type: application/json", NULL);
        return false;
    }
    if (b->huge || b->len > r->srv->max_body) {
        gw_srv_reply_too_large(r);
        return false;
    }
    return true;
}

/* Everything the request line and the headers decide, on the first
 * access-handler call, before a body byte is read: an unauthenticated or
 * misrouted request never costs more than its headers, whatever its
 * Content-Length. Returns true when the request goes on (its body, if any,
 * is read next, its Content-Length already charged to the body budget);
 * false when r holds its reply. */
bool gw_srv_screen(gw_req *r)
{
    body_head b;
    if (!screen_path(r) || !screen_route(r))
        return false;
    announced_body(r, &b);
    if (!screen_body(r, &b))
        return false;
    if (r->route->needs_upstream && !r->srv->app->upstream_configured) {
        gw_srv_reply_typed(r, 503, "upstream-not-configured", "Upstream not configured",
                           "marketo.soap_endpoint is not set", NULL);
        return false;
    }
    if (!b.chunked && b.len > 0) {
        if (!body_charge(r, (size_t)b.len)) {
            gw_srv_reply_body_budget(r);
            return false;
        }
        r->body_expected = (size_t)b.len;
    }
    return true;
}

/* Appends an upload chunk to the body, or counts it as discarded once over
 * the cap or the budget. A body with a Content-Length gets one buffer of
 * exactly that size (charged at the headers); one without (chunked) grows
 * by doubling up to the cap, each growth charged to the budget first.
 * Returns false when the connection should be dropped. */
bool gw_srv_take_upload(gw_req *r, const char *data, size_t n)
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
