/* gateway/http/reply.c - the reply side of a request: the gw_req_reply_*
 * functions of server.h, the headers every reply carries (X-Request-ID,
 * X-Cache, the handler's own, CORS for an allowed Origin, Connection: close
 * while draining), problem+json bodies and their type slugs, and the
 * mapping of upstream outcomes and Marketo faults (marketo/codes.h) to
 * statuses. A reply is built into r->resp; server.c queues it. Calls
 * request.c only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/http/server_internal.h"
#include "gateway/log.h"
#include "gateway/store/ratelimit.h"
#include "gateway/upstream/upstream.h"
#include "marketo/codes.h"

/* True when a header value can go on the wire (no CR, LF or NUL issues). */
static bool header_value_ok(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n')
            return false;
    return true;
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

void gw_req_note_cache(gw_req *r, const char *result)
{
    snprintf(r->cache, sizeof r->cache, "%s", result != NULL ? result : "");
    if (r->resp != NULL && r->cache[0] != '\0')
        MHD_add_response_header(r->resp, "X-Cache", r->cache);
}

/* Whether origin is an allowed CORS origin. */
bool gw_srv_origin_allowed(const gw_server *s, const char *origin)
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
    if (gw_srv_origin_allowed(r->srv, origin) && header_value_ok(origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->srv->cors_any ? "*" : origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", GW_CORS_EXPOSE_HEADERS);
    }
    if (gw_req_draining(r))
        MHD_add_response_header(resp, "Connection", "close");
}

/* Builds the reply from a malloc'd body (ownership taken, may be NULL with
 * len 0). A second reply for the same request is dropped and logged. */
void gw_srv_set_reply(gw_req *r, unsigned status, const char *content_type, char *body, size_t len)
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
void gw_srv_reply_internal(gw_req *r)
{
    static const char msg[] = "{\"type\":\"" GW_PROBLEM_URN "internal\",\"title\":\"Internal error\",\"status\":500}";
    char *b = malloc(sizeof msg - 1);
    if (b != NULL)
        memcpy(b, msg, sizeof msg - 1);
    gw_srv_set_reply(r, 500, "application/problem+json", b, b != NULL ? sizeof msg - 1 : 0);
}

/* Serialises body (stolen) into r's reply of that status and content type;
 * the fixed 500 when it cannot. */
static void reply_dumped(gw_req *r, unsigned status, const char *content_type, json_t *body)
{
    size_t len;
    char *buf = dump_json(body, &len);
    if (buf == NULL) {
        gw_srv_reply_internal(r);
        return;
    }
    gw_srv_set_reply(r, status, content_type, buf, len);
}

void gw_req_reply_json(gw_req *r, unsigned status, json_t *body)
{
    reply_dumped(r, status, "application/json", body);
}

void gw_req_reply_raw(gw_req *r, unsigned status, const char *content_type, const char *body,
                      size_t len)
{
    char *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            gw_srv_reply_internal(r);
            return;
        }
        memcpy(copy, body, len);
    }
    gw_srv_set_reply(r, status, content_type, copy, len);
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
void gw_srv_reply_typed(gw_req *r, unsigned status, const char *slug, const char *title,
                        const char *detail, json_t *extra)
{
    char type[160];
    json_t *o = json_object();
    if (o == NULL) {
        json_decref(extra);
        gw_srv_reply_internal(r);
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
    reply_dumped(r, status, "application/problem+json", o);
}

void gw_req_reply_problem(gw_req *r, unsigned status, const char *title, const char *detail,
                          json_t *extra)
{
    gw_srv_reply_typed(r, status, NULL, title, detail, extra);
}

void gw_req_reply_err(gw_req *r, const gw_err *e)
{
    unsigned status = e->status > 0 ? (unsigned)e->status : 500;
    gw_srv_reply_typed(r, status, NULL, MHD_get_reason_phrase_for(status), e->msg, NULL);
}

/* Seconds from now to the next US-Central midnight (at least 1). */
static int64_t seconds_to_quota_reset(void)
{
    int64_t now = (int64_t)time(NULL);
    int64_t d = gw_next_central_midnight(now) - now;
    return d > 0 ? d : 1;
}

/* Adds Retry-After: secs (at least 1). */
void gw_srv_add_retry_after(gw_req *r, int64_t secs)
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
            gw_srv_reply_typed(r, 502, "upstream-error", "Upstream error",
                               "Marketo answered with an unexpected fault", extra);
            return;
        }
        json_object_set_new(extra, "marketo_message", json_string(c->message));
        if (c->retry == MKTO_RETRY_QUOTA)
            gw_srv_add_retry_after(r, seconds_to_quota_reset());
        else if (c->retry == MKTO_RETRY_LIMITED)
            gw_srv_add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : 20);
        gw_srv_reply_typed(r, c->http.status, c->http.type, c->http.title, NULL, extra);
        return;
    }
    case GW_OUT_RATE_LIMITED:
        gw_srv_add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : 1);
        gw_srv_reply_typed(r, 429, "rate-limited", "Outbound rate limit reached",
                           "no outbound call slot became free before the queue deadline", NULL);
        return;
    case GW_OUT_QUOTA:
        gw_srv_add_retry_after(r, job->retry_after_s > 0 ? job->retry_after_s : seconds_to_quota_reset());
        gw_srv_reply_typed(r, 429, "quota-exhausted", "Daily upstream quota exhausted",
                           "the daily Marketo call quota is spent until midnight US Central time", NULL);
        return;
    case GW_OUT_TIMEOUT:
        gw_srv_reply_typed(r, 504, "upstream-timeout", "Upstream timeout",
                           "Marketo did not answer within the request deadline", NULL);
        return;
    case GW_OUT_UNREACHABLE:
        GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:s}", "request_id", r->id, "detail", job->detail),
               "upstream unreachable");
        gw_srv_reply_typed(r, 502, "upstream-unreachable", "Upstream unreachable",
                           "the gateway could not reach Marketo", NULL);
        return;
    case GW_OUT_BAD_RESPONSE:
        GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:s}", "request_id", r->id, "detail", job->detail),
               "upstream bad response");
        gw_srv_reply_typed(r, 502, "upstream-bad-response", "Bad upstream response",
                           "Marketo's answer could not be understood", NULL);
        return;
    case GW_OUT_SHUTDOWN:
        gw_srv_reply_typed(r, 503, "shutting-down", "Shutting down",
                           "the gateway is shutting down; retry on another replica", NULL);
        return;
    case GW_OUT_OK:
    default:
        gw_srv_reply_typed(r, 500, "internal", "Internal error", "unexpected upstream outcome", NULL);
        return;
    }
}
