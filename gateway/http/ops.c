/* gateway/http/ops.c - the operations routes: /healthz, /readyz, /metrics,
 * /openapi.json. None needs an API key (routes.c's route table says so).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "gateway/log.h"
#include "gateway/log_batch.h"
#include "gateway/metrics.h"
#include "gateway/http/metrics_http.h"
#include "gateway/http/server.h"
#include "gateway/upstream/upstream.h"

#ifndef GW_VERSION
#define GW_VERSION "unknown"
#endif

/* The OpenAPI document, embedded at build time by scripts/embed.py. */
extern const char gw_openapi_doc[];
extern const size_t gw_openapi_doc_len;

/* GET /healthz: the process is alive and its HTTP threads answer. */
void gw_handle_healthz(gw_req *r)
{
    gw_req_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

/* Whether a SIGTERM or SIGINT is pending for the process: sent, but not
 * yet taken by main's sigwait (every thread blocks both). */
static bool stop_signal_pending(void)
{
    sigset_t pending;
    if (sigpending(&pending) != 0)
        return false;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

/* GET /readyz: 200 when the gateway can serve lead routes; 503 while
 * draining (SIGTERM seen, or sent and not yet taken by main: a probe that
 * races the signal already sees 503) or when marketo.soap_endpoint is not
 * set. */
void gw_handle_readyz(gw_req *r)
{
    gw_app *app = gw_req_app(r);
    /* A signal still pending makes this answer 503 on a connection that is
     * kept; once draining is set the 503 closes it (gw_req_draining). */
    if (gw_req_draining(r) || stop_signal_pending()) {
        gw_req_reply_problem(r, 503, "Not ready", "draining: the gateway is shutting down",
                             json_pack("{s:s}", "type", "draining"));
        return;
    }
    if (!app->upstream_configured) {
        gw_req_reply_problem(r, 503, "Not ready", "upstream not configured (marketo.soap_endpoint)",
                             json_pack("{s:s}", "type", "upstream-not-configured"));
        return;
    }
    gw_req_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

/* Refreshes the series that are read rather than counted where they
 * happen: upstream queue, draining, build info, dropped log lines. */
static void refresh_gauges(gw_app *app)
{
    /* log lines dropped on a full buffer (log_batch.c counts them) */
    static atomic_uint_least64_t dropped_seen;
    uint64_t dropped = gw_logb_dropped();
    uint64_t before = atomic_exchange(&dropped_seen, dropped);
    gw_counter_add(gw_metrics_counter("gateway_log_lines_dropped_total",
                                      "Log lines dropped because stderr did not keep up", NULL),
                   dropped > before ? dropped - before : 0);
    gw_gauge_set(gw_metrics_gauge("gateway_build_info", "Build information (always 1)",
                                  "version=\"" GW_VERSION "\""), 1);
    gw_gauge_set(gw_metrics_gauge("gateway_draining", "1 once SIGTERM was seen", NULL),
                 atomic_load(&app->draining) ? 1 : 0);
    gw_gauge_set(gw_metrics_gauge("gateway_upstream_configured",
                                  "1 when marketo.soap_endpoint is set", NULL),
                 app->upstream_configured ? 1 : 0);
    if (app->upstream != NULL) {
        gw_gauge_set(gw_metrics_gauge("gateway_upstream_queued_jobs",
                                      "Upstream jobs waiting for an outbound slot", NULL),
                     (int64_t)gw_upstream_queued(app->upstream));
        gw_gauge_set(gw_metrics_gauge("gateway_upstream_in_flight_calls",
                                      "SOAP calls on the wire", NULL),
                     (int64_t)gw_upstream_in_flight(app->upstream));
    }
}

char *gw_ops_metrics_text(gw_app *app, size_t *len)
{
    refresh_gauges(app);
    return gw_metrics_render(len);
}

/* GET /metrics: the whole registry in Prometheus text format 0.0.4. */
void gw_handle_metrics(gw_req *r)
{
    size_t len = 0;
    char *text = gw_ops_metrics_text(gw_req_app(r), &len);
    if (text == NULL) {
        gw_req_reply_problem(r, 500, "Internal error", "metrics could not be rendered", NULL);
        return;
    }
    gw_req_reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* GET /openapi.json: the OpenAPI 3.1 document of this API. */
void gw_handle_openapi(gw_req *r)
{
    gw_req_reply_raw(r, 200, "application/json", gw_openapi_doc, gw_openapi_doc_len);
}
