/* sim/limits.c - rolling window, concurrency and daily quota (see limits.h).
 *
 * The window keeps the arrival times of the accepted calls of the last
 * window_seconds in a ring buffer of calls_per_window entries: a new call is
 * refused when the ring is full and its oldest entry is still inside the
 * window, which is exactly "the last window already holds N calls".
 */
#include "sim/limits.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The module's state, under mu. */
static struct {
    pthread_mutex_t mu;     /* guards the fields below */
    sim_limit_cfg cfg;      /* current settings */
    int64_t *ring;          /* accepted arrival times (ms), cfg.calls_per_window slots */
    int ring_len;           /* entries in use */
    int ring_head;          /* index of the oldest entry */
    int active;             /* accepted calls in flight */
    long day_count;         /* accepted calls in the current quota day */
    int64_t day_start;      /* start of that day (epoch seconds) */
} L = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Whether cfg's values are usable. */
static int cfg_ok(const sim_limit_cfg *cfg)
{
    return cfg->calls_per_window >= 0 && cfg->calls_per_window <= 1000000 &&
           cfg->window_seconds >= 0 && cfg->window_seconds <= 86400 &&
           cfg->max_concurrent >= 0 && cfg->daily_quota >= 0;
}

/* Replaces the ring with one sized for cfg (keeps the newest entries).
 * Caller holds mu. Returns 0 or -1. */
static int ring_resize(int slots)
{
    int64_t *nr = calloc(slots > 0 ? (size_t)slots : 1, sizeof(*nr));
    if (nr == NULL)
        return -1;
    int keep = L.ring_len < slots ? L.ring_len : slots;
    for (int i = 0; i < keep; i++) {
        int cap = L.cfg.calls_per_window > 0 ? L.cfg.calls_per_window : 1;
        nr[i] = L.ring[(L.ring_head + L.ring_len - keep + i) % cap];
    }
    free(L.ring);
    L.ring = nr;
    L.ring_len = keep;
    L.ring_head = 0;
    return 0;
}

int sim_limits_init(const sim_limit_cfg *cfg)
{
    if (!cfg_ok(cfg))
        return -1;
    pthread_mutex_lock(&L.mu);
    free(L.ring);
    L.ring = NULL;
    L.ring_len = L.ring_head = 0;
    L.active = 0;
    L.day_count = 0;
    L.day_start = 0;
    L.cfg = *cfg;
    int rc = ring_resize(cfg->calls_per_window);
    pthread_mutex_unlock(&L.mu);
    return rc;
}

void sim_limits_cleanup(void)
{
    pthread_mutex_lock(&L.mu);
    free(L.ring);
    L.ring = NULL;
    L.ring_len = L.ring_head = 0;
    pthread_mutex_unlock(&L.mu);
}

int sim_limits_set(const sim_limit_cfg *cfg)
{
    if (!cfg_ok(cfg))
        return -1;
    pthread_mutex_lock(&L.mu);
    int rc = 0;
    if (cfg->calls_per_window != L.cfg.calls_per_window)
        rc = ring_resize(cfg->calls_per_window);
    if (rc == 0)
        L.cfg = *cfg;
    pthread_mutex_unlock(&L.mu);
    return rc;
}

void sim_limits_get(sim_limit_cfg *out)
{
    pthread_mutex_lock(&L.mu);
    *out = L.cfg;
    pthread_mutex_unlock(&L.mu);
}

void sim_limits_reset(void)
{
    pthread_mutex_lock(&L.mu);
    L.ring_len = L.ring_head = 0;
    L.day_count = 0;
    pthread_mutex_unlock(&L.mu);
}

/* Seconds since the epoch of year y, month m (1-12), day d, hour h UTC. */
static int64_t utc_at(int y, int m, int d, int h)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = h};
    return (int64_t)timegm(&tm);
}

/* Day of month of the n-th Sunday of month m of year y. */
static int nth_sunday(int y, int m, int n)
{
    time_t t = (time_t)utc_at(y, m, 1, 12);
    struct tm tm;
    gmtime_r(&t, &tm);
    return 1 + (7 - tm.tm_wday) % 7 + 7 * (n - 1);
}

/* US Central offset from UTC (seconds, negative) in force at t. */
static int64_t central_offset(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    int y = tm.tm_year + 1900;
    int64_t start = utc_at(y, 3, nth_sunday(y, 3, 2), 8);  /* 02:00 CST */
    int64_t end = utc_at(y, 11, nth_sunday(y, 11, 1), 7);  /* 02:00 CDT */
    return (t >= start && t < end) ? -5 * 3600 : -6 * 3600;
}

int64_t sim_central_midnight(int64_t t)
{
    int64_t local = t + central_offset(t);
    int64_t local_midnight = local - ((local % 86400) + 86400) % 86400;
    int64_t guess = local_midnight - central_offset(t);
    return local_midnight - central_offset(guess);
}

int sim_limits_acquire(int64_t now_ms)
{
    int code = 0;
    pthread_mutex_lock(&L.mu);
    const sim_limit_cfg *c = &L.cfg;
    int cap = c->calls_per_window;
    if (c->max_concurrent > 0 && L.active >= c->max_concurrent) {
        code = 20024;
        goto out;
    }
    if (cap > 0 && c->window_seconds > 0) {
        /* drop entries that left the window */
        while (L.ring_len > 0 && L.ring[L.ring_head] <= now_ms - (int64_t)c->window_seconds * 1000) {
            L.ring_head = (L.ring_head + 1) % cap;
            L.ring_len--;
        }
        if (L.ring_len >= cap) {
            code = 20023;
            goto out;
        }
    }
    int64_t day = sim_central_midnight(now_ms / 1000);
    if (day != L.day_start) {
        L.day_start = day;
        L.day_count = 0;
    }
    if (c->daily_quota > 0 && L.day_count >= c->daily_quota) {
        code = 20015;
        goto out;
    }
    if (cap > 0 && c->window_seconds > 0) {
        L.ring[(L.ring_head + L.ring_len) % cap] = now_ms;
        L.ring_len++;
    }
    L.day_count++;
    L.active++;
out:
    pthread_mutex_unlock(&L.mu);
    return code;
}

void sim_limits_release(void)
{
    pthread_mutex_lock(&L.mu);
    if (L.active > 0)
        L.active--;
    pthread_mutex_unlock(&L.mu);
}
