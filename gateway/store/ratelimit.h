/* gateway/store/ratelimit.h - the outbound budget: rolling window, concurrency, daily quota.
 *
 * One interface, several backends: the in-process limiter here (the embedded
 * default, one process alone) and, in gateway/store/redis_limiter.c, the Redis
 * limiter shared by every replica with its fallback (this replica's share of
 * what the budget has left while Redis does not answer).
 *
 * Rules (Marketo's, per instance): at most calls_per_window calls in any
 * rolling window_ms, at most max_concurrent in flight, at most daily_quota
 * per day, the day ending at midnight US Central time (America/Chicago, with
 * daylight saving). A call counts in the rolling window from the moment it is
 * acquired until window_ms after it is released: Marketo stamps a call when
 * it arrives, which is somewhere between our acquire and our release, so this
 * is the tightest rule that can never overshoot at Marketo's end.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stdint.h>

typedef struct gw_limit_params {
    int64_t calls_per_window; /* calls allowed in any rolling window */
    int64_t window_ms;        /* window length */
    int64_t max_concurrent;   /* calls in flight */
    int64_t daily_quota;      /* calls per US-Central day; 0: unlimited */
} gw_limit_params;

typedef enum gw_limit_result {
    GW_LIMIT_OK = 0,    /* slot taken: call release() when the call ends */
    GW_LIMIT_WAIT = 1,  /* window or concurrency full: *retry_in_ms says when to try again */
    GW_LIMIT_QUOTA = 2, /* daily quota spent: *retry_in_ms until the US-Central midnight */
    GW_LIMIT_ERROR = -1 /* backend unavailable (Redis): the caller falls back */
} gw_limit_result;

/* A held slot; opaque to callers, filled by try_acquire, given back to release. */
typedef struct gw_slot {
    uint64_t id;   /* backend's lease id */
    void *owner;   /* the limiter that granted it */
} gw_slot;

typedef struct gw_limiter gw_limiter;

typedef struct gw_limiter_ops {
    const char *name; /* "local", "redis" (metrics label) */
    /* Takes one slot if all three rules allow it now (now_ms: wall clock,
     * ms since the epoch). Never blocks on a rule: returns WAIT instead,
     * with *retry_in_ms >= 1 the earliest moment a slot may be free (for
     * concurrency, a guess: a release may come sooner). */
    gw_limit_result (*try_acquire)(gw_limiter *l, int64_t now_ms, gw_slot *slot, int64_t *retry_in_ms);
    /* Gives a slot back; its window entry ages out window_ms after now_ms. */
    void (*release)(gw_limiter *l, const gw_slot *slot, int64_t now_ms);
    /* Frees the limiter (slots still held are forgotten). */
    void (*destroy)(gw_limiter *l);
} gw_limiter_ops;

struct gw_limiter {
    const gw_limiter_ops *ops; /* backend's functions; first member of every backend */
};

/* In-process backend. Returns NULL on bad params or no memory. */
gw_limiter *gw_limiter_local_new(const gw_limit_params *p);

/* A share of a budget, for a replica that must not spend the whole of it
 * (the Redis fallback: each replica keeps 1/N of what is left). Each limit becomes
 * floor(limit * share) but at least 1; window_ms is kept; a daily_quota of 0
 * (unlimited) stays 0. share is clamped to (0, 1]. */
gw_limit_params gw_limit_params_scaled(const gw_limit_params *p, double share);

/* Epoch seconds of the first US-Central (America/Chicago) midnight after
 * now_s, daylight saving included (second Sunday of March to first Sunday of
 * November, 02:00 local). Needs no tz database. */
int64_t gw_next_central_midnight(int64_t now_s);

#endif /* GW_RATELIMIT_H */
