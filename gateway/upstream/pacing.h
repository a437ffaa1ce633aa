/* gateway/upstream/pacing.h - the token bucket in front of the limiter.
 *
 * Key lookups take one token per call (first attempt or retry); riders on a
 * call in flight take none; syncs and list pages skip the bucket (they
 * cannot merge, so waiting would only slow them). Refill rate =
 * calls_per_window / window_ms tokens per ms, burst = min(calls_per_window,
 * max_concurrent), at least 1 (10 with the defaults 100 / 20 s / 10: 5
 * calls/s after a burst of 10). The bucket starts full, so an idle engine
 * adds no latency. calls_per_window <= 0 turns pacing off.
 *
 * Not thread-safe: the engine thread owns its pacer.
 */
#ifndef GW_UPSTREAM_PACING_H
#define GW_UPSTREAM_PACING_H

#include <stdbool.h>
#include <stdint.h>

typedef struct gw_pacer {
    bool on;          /* pacing enabled */
    double rate;      /* tokens per ms */
    double burst;     /* bucket size */
    double tokens;    /* tokens in the bucket as of last_ms */
    int64_t last_ms;  /* monotonic time of the last refill */
} gw_pacer;

/* Sets the bucket up, full, at monotonic time now_ms. window_ms <= 0 means
 * 20 s; max_concurrent <= 0 does not cap the burst. */
void gw_pacer_init(gw_pacer *p, int64_t calls_per_window, int64_t window_ms,
                   int64_t max_concurrent, int64_t now_ms);

/* Refills up to now_ms. Returns 0 when a token is there, else the ms until
 * the next one (at least 1). Always 0 when pacing is off. */
int64_t gw_pacer_wait_ms(gw_pacer *p, int64_t now_ms);

/* Spends one token (after gw_pacer_wait_ms said 0). No-op when off. */
void gw_pacer_take(gw_pacer *p);

#endif /* GW_UPSTREAM_PACING_H */
