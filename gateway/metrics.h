/* gateway/metrics.h - counters, gauges and histograms, rendered as Prometheus text.
 *
 * Series are registered by name and label set (get-or-create, mutex held
 * only then); updates are lock-free atomics, safe from any thread. Pointers
 * returned stay valid until gw_metrics_reset(). Names follow Prometheus
 * conventions: snake_case, unit suffix (_seconds, _bytes), _total on
 * counters. Labels are a ready-made string ("route=\"/leads\",status=\"200\"")
 * or NULL; values in it must already be escaped (gw_metrics_escape).
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_counter gw_counter;
typedef struct gw_gauge gw_gauge;
typedef struct gw_histogram gw_histogram;

gw_counter *gw_metrics_counter(const char *name, const char *help, const char *labels);
void gw_counter_add(gw_counter *c, uint64_t n);

gw_gauge *gw_metrics_gauge(const char *name, const char *help, const char *labels);
void gw_gauge_set(gw_gauge *g, int64_t v);
void gw_gauge_add(gw_gauge *g, int64_t delta);

/* buckets: ascending upper bounds (seconds for durations), n of them; +Inf
 * is implied. The array is copied. A second call with the same name must
 * pass the same buckets. */
gw_histogram *gw_metrics_histogram(const char *name, const char *help, const char *labels,
                                   const double *buckets, size_t n);
void gw_histogram_observe(gw_histogram *h, double v);

/* Default buckets for durations in seconds (1 ms .. 30 s). */
extern const double gw_duration_buckets[];
extern const size_t gw_duration_buckets_n;

/* The whole registry in Prometheus text format 0.0.4: one HELP and TYPE
 * line per name, series grouped under it. malloc'd; *len its length. */
char *gw_metrics_render(size_t *len);

/* Escapes a label value (\\, \", \n) into out; returns 0 or -1 if too long. */
int gw_metrics_escape(const char *in, char *out, size_t outlen);

/* Frees every series (tests, shutdown). Pointers returned before become
 * invalid; gw_metrics_generation() changes. */
void gw_metrics_reset(void);

/* A number that changes at every gw_metrics_reset(): a caller that keeps
 * series pointers across requests (gateway/http/access.c's per-route cache) checks it
 * before using one. */
uint64_t gw_metrics_generation(void);

#endif /* GW_METRICS_H */
