/* gateway/store/ratelimit.c - the in-process outbound limiter and US-Central days.
 *
 * The rolling window is an array of calls_per_window entries, each holding
 * the moment its call stops counting: INT64_MAX while the call is in flight,
 * release time + window_ms after it. An entry whose moment has passed is
 * free. A call may start when a free entry exists, fewer than max_concurrent
 * calls are in flight and today's count is under the quota; otherwise the
 * caller is told how long to wait. One mutex guards everything: every
 * operation is a scan of at most calls_per_window integers.
 */
#include "gateway/store/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

/* Guess, in ms, of how soon a concurrency slot frees up (no release time is known). */
#define CONCURRENCY_RETRY_MS 5

/* One window entry. */
typedef struct window_entry {
    int64_t until_ms; /* counts in the window until this moment; INT64_MAX in flight; 0 never used */
    uint32_t gen;     /* bumped on each acquire; detects stale or double releases */
} window_entry;

/* The in-process limiter. */
typedef struct local_limiter {
    gw_limiter base;          /* ops; must stay first */
    pthread_mutex_t mu;       /* guards every field below */
    gw_limit_params p;        /* the budget */
    window_entry *entries;    /* calls_per_window window entries */
    int64_t in_flight;        /* slots held now */
    int64_t day_count;        /* calls acquired since the last US-Central midnight */
    int64_t day_end_s;        /* epoch s of the midnight that ends the counted day; 0 not yet */
} local_limiter;

/* ---- US-Central calendar ---------------------------------------------------- */

/* Floor division for possibly negative numerators. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Year of a day number (days since 1970-01-01). */
static int64_t year_of_days(int64_t z)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

/* Day number of the n-th (1-based) Sunday of a month. */
static int64_t nth_sunday(int64_t y, int m, int n)
{
    int64_t first = days_from_civil(y, m, 1);
    int64_t wd = floor_div(first + 4, 7);
    wd = first + 4 - wd * 7; /* 0 = Sunday; 1970-01-01 was a Thursday */
    return first + (7 - wd) % 7 + 7 * (n - 1);
}

/* Whether local midnight starting day number `day` (Chicago calendar) falls
 * in daylight saving time. The switches happen at 02:00 local, so the
 * midnight of the switch day itself still has the old offset. */
static int midnight_is_dst(int64_t day)
{
    int64_t y = year_of_days(day);
    return day > nth_sunday(y, 3, 2) && day <= nth_sunday(y, 11, 1);
}

/* Chicago's UTC offset (seconds, east positive) at UTC instant t. */
static int64_t central_offset(int64_t t)
{
    int64_t y = year_of_days(floor_div(t, 86400));
    int64_t start = nth_sunday(y, 3, 2) * 86400 + 8 * 3600; /* 02:00 CST */
    int64_t end = nth_sunday(y, 11, 1) * 86400 + 7 * 3600;  /* 02:00 CDT */
    return (t >= start && t < end) ? -5 * 3600 : -6 * 3600;
}

int64_t gw_next_central_midnight(int64_t now_s)
{
    int64_t local = now_s + central_offset(now_s);
    int64_t next_day = floor_div(local, 86400) + 1;
    int64_t offset = midnight_is_dst(next_day) ? -5 * 3600 : -6 * 3600;
    return next_day * 86400 - offset;
}

/* ---- params ----------------------------------------------------------------- */

/* floor(v * share), at least 1. A hair of slack keeps products that are
 * whole numbers in decimal (100 * 0.29) from flooring one below. */
static int64_t scale_one(int64_t v, double share)
{
    double s = floor((double)v * share + 1e-9);
    if (s < 1.0)
        return 1;
    if (s >= (double)v)
        return v;
    return (int64_t)s;
}

gw_limit_params gw_limit_params_scaled(const gw_limit_params *p, double share)
{
    gw_limit_params out = *p;
    if (!(share > 0.0))
        share = 1e-9;
    if (share > 1.0)
        share = 1.0;
    out.calls_per_window = scale_one(p->calls_per_window, share);
    out.max_concurrent = scale_one(p->max_concurrent, share);
    if (p->daily_quota > 0)
        out.daily_quota = scale_one(p->daily_quota, share);
    return out;
}

/* ---- the limiter ------------------------------------------------------------ */

static gw_limit_result local_try_acquire(gw_limiter *l, int64_t now_ms, gw_slot *slot,
                                         int64_t *retry_in_ms)
{
    local_limiter *ll = (local_limiter *)l;
    gw_limit_result res;
    int64_t now_s = floor_div(now_ms, 1000);

    pthread_mutex_lock(&ll->mu);
    if (ll->day_end_s == 0 || now_s >= ll->day_end_s) {
        ll->day_count = 0;
        ll->day_end_s = gw_next_central_midnight(now_s);
    }
    if (ll->p.daily_quota > 0 && ll->day_count >= ll->p.daily_quota) {
        int64_t wait = ll->day_end_s * 1000 - now_ms;
        *retry_in_ms = wait < 1 ? 1 : wait;
        res = GW_LIMIT_QUOTA;
        goto out;
    }

    /* Find a free entry and the earliest moment a counting one frees up. */
    int64_t free_idx = -1;
    int64_t earliest = INT64_MAX;
    for (int64_t i = 0; i < ll->p.calls_per_window; i++) {
        int64_t until = ll->entries[i].until_ms;
        if (until <= now_ms) {
            if (free_idx < 0)
                free_idx = i;
        } else if (until < earliest) {
            earliest = until;
        }
    }
    int conc_full = ll->in_flight >= ll->p.max_concurrent;
    if (free_idx < 0 || conc_full) {
        int64_t wait = 1;
        if (conc_full && wait < CONCURRENCY_RETRY_MS)
            wait = CONCURRENCY_RETRY_MS;
        if (free_idx < 0) {
            /* Every entry in flight: a release will come, guess like concurrency. */
            int64_t w = earliest == INT64_MAX ? CONCURRENCY_RETRY_MS : earliest - now_ms;
            if (w > wait)
                wait = w;
        }
        *retry_in_ms = wait;
        res = GW_LIMIT_WAIT;
        goto out;
    }

    window_entry *e = &ll->entries[free_idx];
    e->until_ms = INT64_MAX;
    e->gen++;
    ll->in_flight++;
    ll->day_count++;
    slot->id = ((uint64_t)e->gen << 32) | (uint64_t)free_idx;
    slot->owner = ll;
    *retry_in_ms = 0;
    res = GW_LIMIT_OK;
out:
    pthread_mutex_unlock(&ll->mu);
    return res;
}

static void local_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    local_limiter *ll = (local_limiter *)l;
    if (slot == NULL || slot->owner != ll)
        return;
    uint64_t idx = slot->id & 0xffffffffu;
    uint32_t gen = (uint32_t)(slot->id >> 32);

    pthread_mutex_lock(&ll->mu);
    if (idx < (uint64_t)ll->p.calls_per_window) {
        window_entry *e = &ll->entries[idx];
        if (e->gen == gen && e->until_ms == INT64_MAX) {
            e->until_ms = now_ms > INT64_MAX - ll->p.window_ms ? INT64_MAX - 1
                                                                : now_ms + ll->p.window_ms;
            ll->in_flight--;
        }
    }
    pthread_mutex_unlock(&ll->mu);
}

static void local_destroy(gw_limiter *l)
{
    local_limiter *ll = (local_limiter *)l;
    if (ll == NULL)
        return;
    pthread_mutex_destroy(&ll->mu);
    free(ll->entries);
    free(ll);
}

static const gw_limiter_ops local_ops = {
    .name = "local",
    .try_acquire = local_try_acquire,
    .release = local_release,
    .destroy = local_destroy,
};

gw_limiter *gw_limiter_local_new(const gw_limit_params *p)
{
    if (p == NULL || p->calls_per_window < 1 || p->calls_per_window > 1000000 ||
        p->window_ms < 1 || p->max_concurrent < 1 || p->daily_quota < 0)
        return NULL;
    local_limiter *ll = calloc(1, sizeof(*ll));
    if (ll == NULL)
        return NULL;
    ll->entries = calloc((size_t)p->calls_per_window, sizeof(*ll->entries));
    if (ll->entries == NULL || pthread_mutex_init(&ll->mu, NULL) != 0) {
        free(ll->entries);
        free(ll);
        return NULL;
    }
    ll->base.ops = &local_ops;
    ll->p = *p;
    return &ll->base;
}
