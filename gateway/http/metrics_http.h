/* gateway/http/metrics_http.h - GET /metrics on a listener of its own.
 *
 * With gateway.metrics_listen set, main.c starts this second, small
 * libmicrohttpd daemon beside the API server: it answers GET (and HEAD)
 * /metrics with the same Prometheus text as the API port would, 404 for any
 * other path and 405 for other methods, without API keys, access log or
 * per-request metrics. The API port then answers /metrics with 404
 * (screen.c), so a NetworkPolicy can leave the API port open and keep the
 * metrics port internal. It keeps serving while the API server drains, and
 * stops with it.
 */
#ifndef GW_METRICS_HTTP_H
#define GW_METRICS_HTTP_H

#include <stddef.h>

#include "gateway/app.h"
#include "gateway/err.h"

typedef struct gw_metrics_http gw_metrics_http;

/* Starts the listener on app->cfg->metrics_listen. Returns it, or NULL with
 * err filled. app must outlive it. */
gw_metrics_http *gw_metrics_http_start(gw_app *app, gw_err *err);

/* The port actually bound (for a metrics_listen port of 0). */
unsigned gw_metrics_http_port(gw_metrics_http *m);

/* Stops the listener and frees it; NULL is a no-op. */
void gw_metrics_http_stop(gw_metrics_http *m);

/* The /metrics body: refreshes the read-not-counted gauges (draining,
 * upstream queue, build info) and renders the whole registry in Prometheus
 * text format 0.0.4. Returns a malloc'd text (*len bytes) the caller frees,
 * or NULL when out of memory. Defined in ops.c, shared by both ports. */
char *gw_ops_metrics_text(gw_app *app, size_t *len);

#endif /* GW_METRICS_HTTP_H */
