/* gateway/http/access.c - what a completed request leaves behind: one JSON
 * access-log line (route pattern, never the query; status, durations,
 * Marketo calls, cache result, bytes) and the per-request metrics
 * (http_requests_total, http_request_duration_seconds,
 * http_requests_in_flight), whose series are looked up once and kept.
 * Calls routes.c only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http/server_internal.h"
#include "gateway/log.h"

/* Method labels of the per-request metrics, "OTHER" last. */
static const char *const method_labels[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"};
_Static_assert(sizeof method_labels / sizeof method_labels[0] == GW_NMETHOD_LABELS,
               "GW_NMETHOD_LABELS is the list's size");

/* The index in method_labels of a request method: known methods as is,
 * anything else "OTHER". */
static size_t method_label_index(const char *m)
{
    for (size_t i = 0; i + 1 < GW_NMETHOD_LABELS; i++)
        if (m != NULL && strcmp(m, method_labels[i]) == 0)
            return i;
    return GW_NMETHOD_LABELS - 1;
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

/* Writes r's access-log line (field "aborted" only when it was). */
static void log_request(const gw_req *r, const char *mlabel, const char *route, unsigned status,
                        double secs, bool aborted)
{
    if (GW_LOG_INFO < gw_log_min_level)
        return;
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

/* Counts one request of route label ridx and method label midx in
 * http_requests_total and http_request_duration_seconds. */
static void count_request(gw_server *s, size_t ridx, size_t midx, unsigned status, double secs)
{
    const char *route = gw_srv_route_label(ridx);
    uint64_t gen = gw_metrics_generation();
    gw_counter *c = cached_series(&s->counters[ridx][midx], status, gen);
    if (c == NULL) {
        char labels[192];
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",status=\"%u\"", route,
                 method_labels[midx], status);
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
}

void gw_srv_access_record(gw_req *r, bool aborted)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - r->start_ts.tv_sec) +
                  (double)(now.tv_nsec - r->start_ts.tv_nsec) / 1e9;
    size_t ridx = gw_srv_route_label_index(r);
    size_t midx = method_label_index(r->method);
    /* no reply of ours: the guard's 408 or 503 if it closed the connection, else 0 */
    unsigned status = r->status != 0 ? r->status : gw_guard_closed_status(r->gconn);
    log_request(r, method_labels[midx], gw_srv_route_label(ridx), status, secs, aborted);
    count_request(r->srv, ridx, midx, status, secs);
    gw_gauge_add(r->srv->in_flight, -1);
}

void gw_srv_access_free(gw_server *s)
{
    for (size_t i = 0; i < GW_NROUTE_LABELS; i++) {
        for (size_t j = 0; j < GW_NMETHOD_LABELS; j++)
            free_series_list(atomic_load(&s->counters[i][j]));
        free_series_list(atomic_load(&s->durations[i]));
    }
}
