/* gateway/http/request.c - reading a request: the gw_req accessors of
 * server.h, the query string split into arguments on demand, the handler's
 * state. Calls no other file of the server.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/http/server_internal.h"

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

/* libmicrohttpd's unescape callback, for the path and every query name and
 * value: standard %-decoding, except that a decoded NUL becomes 0x01. A NUL
 * would silently cut the C string short ("a%00b@x.com" read as "a"); a
 * control character is refused by the query parser and the path check. */
size_t gw_srv_on_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\0')
            s[i] = '\x01';
    return n;
}

/* Decodes one query name or value in place: '+' is a space, then
 * gw_srv_on_unescape's %-decoding (as libmicrohttpd did to its arguments). */
static void unescape_arg(char *s)
{
    for (char *c = s; *c != '\0'; c++)
        if (*c == '+')
            *c = ' ';
    gw_srv_on_unescape(NULL, NULL, s);
}

/* Splits r->query in place into r->qnames/r->qvalues the way libmicrohttpd
 * splits GET arguments (it no longer sees them: gw_srv_on_uri_log, server.c):
 * '&' separates arguments, the first '=' a name from its value (a bare name gets ""),
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
