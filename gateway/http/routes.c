/* gateway/http/routes.c - the route table, and which route a request's path
 * and method select (exact paths before the {id} pattern), the Allow
 * header of a path, and the route labels of the per-request metrics. Calls
 * no other file of the server.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/http/server_internal.h"

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
_Static_assert(sizeof routes / sizeof routes[0] == GW_NROUTES, "GW_NROUTES is the table's size");

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
void gw_srv_route_resolve(gw_req *r)
{
    const char *m = r->method;
    bool head = strcmp(m, "HEAD") == 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < GW_NROUTES; i++) {
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
void gw_srv_route_allow(const gw_req *r, char *out, size_t outlen)
{
    bool get = false, post = false;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < GW_NROUTES; i++) {
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

/* The route label of index i (see GW_NROUTE_LABELS). */
const char *gw_srv_route_label(size_t i)
{
    if (i < GW_NROUTES)
        return routes[i].pattern;
    return i == GW_ROUTE_LABEL_MNA ? "method_not_allowed" : "unmatched";
}

/* The route label index of a completed request: its route's; for a known
 * path asked with another method, the pattern of that path (an exact path
 * before the {id} pattern); else "unmatched". */
size_t gw_srv_route_label_index(const gw_req *r)
{
    if (r->route != NULL)
        return (size_t)(r->route - routes);
    if (!r->path_known)
        return GW_ROUTE_LABEL_UNMATCHED;
    size_t ridx = GW_ROUTE_LABEL_MNA;
    for (size_t i = 0; i < GW_NROUTES; i++) {
        const char *p;
        if (path_matches(routes[i].pattern, r->url, &p)) {
            ridx = i;
            if (strchr(routes[i].pattern, '{') == NULL)
                break;
        }
    }
    return ridx;
}
