/* gateway/store/redis_fallback.c - the fallback limiter: the Redis limiter
 * (redis_limiter.c) with this replica's own record, granting from a share
 * of what is left while Redis does not answer.
 *
 * The fallback limiter (what gw_backends_create gives the engine) asks
 * Redis first and keeps, as calls go, this replica's own record: every call
 * it made that still counts in the window (through Redis or not), its calls
 * today that Redis has not counted, and what Redis last said the fleet had
 * spent. While Redis does not answer, it grants from this replica's share
 * (ratelimit.fallback_share, s) of what the fleet has left, never from an
 * empty window: a call may start when this replica's own calls made
 * without Redis stay below s * (limit - R), where R is what was spent
 * through Redis and still counts (this replica's own such calls, exactly;
 * the other replicas' as of Redis's last answer, until they age out). So
 * whatever was spent before the loss, N replicas with shares summing to at
 * most 1 add at most what was left: the window and the day stay inside the
 * budget. Concurrency is this replica's share, counting its own calls still
 * in flight through Redis. When Redis answers again, before anything else,
 * it is told what it missed (reconcile): this replica's calls that still
 * count in the window, added to rl:win/rl:lease if missing, and the day
 * raised to at least the count this replica last saw plus its calls since.
 * The same happens when rl:gen shows that Redis lost its data, so a restart
 * without persistence forgets neither the window nor the day. What stays
 * out of reach: calls other replicas made after this replica's last answer
 * from Redis are counted only when they report them (their next call).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/redis.h"
#include "gateway/store/redis_limiter_int.h"

/* One call of this replica, kept while it counts in the rolling window. */
typedef struct own_call {
    int64_t taken_ms;       /* wall ms its slot was taken; 0: a free record */
    int64_t until_ms;       /* counts in the window until then; INT64_MAX in flight */
    uint64_t lease;         /* its lease id (its name in Redis) */
    uint32_t gen;           /* bumped on each reuse; a stale release finds another */
    bool shared;            /* Redis counts it (granted there, or told since) */
} own_call;

/* The fallback limiter. */
typedef struct fallback_limiter {
    gw_limiter base;        /* ops; must stay first */
    redis_limiter *redis;   /* the shared budget, owned */
    gw_limit_params p;      /* the fleet's budget (the Redis limiter's) */
    gw_limit_params share;  /* p scaled by the share: this replica's part with nothing spent */
    double share_f;         /* ratelimit.fallback_share, (0, 1] */
    pthread_mutex_t acq_mu; /* one acquire at a time (the engine has one thread anyway) */
    pthread_mutex_t mu;     /* guards every field below */
    own_call *calls;        /* this replica's calls, ncalls records */
    size_t ncalls;          /* calls_per_window + max_concurrent */
    int64_t seen_ms;        /* wall ms of Redis's last answer; 0: none yet */
    int64_t others_done;    /* other replicas' released calls counting then (until seen + window) */
    int64_t others_flying;  /* their calls in flight then (until seen + lease + window) */
    int64_t day_end_s;      /* the US-Central day the next two count (local clock) */
    int64_t fleet_day;      /* the fleet's calls that day, as Redis last said */
    int64_t unreported;     /* this replica's calls that day that Redis does not count */
    char gen[GEN_LEN];      /* Redis's data generation last seen; "" none yet */
    bool reconcile;         /* tell Redis what it missed before the next acquire */
    _Atomic bool on_local;  /* the last acquire went to the local share */
} fallback_limiter;

/* ---- the fallback limiter: this replica's own record ----------------------- */

/* Whether record c counts in the window at now_ms. */
static bool own_counts(const own_call *c, int64_t now_ms)
{
    return c->taken_ms != 0 && c->until_ms > now_ms;
}

/* Starts a new US-Central day when the local clock has passed the counted
 * one: nothing is known of the new day yet. Call with mu held. */
static void fb_roll_day(fallback_limiter *fb, int64_t now_ms)
{
    int64_t now_s = now_ms / 1000;
    if (fb->day_end_s != 0 && now_s < fb->day_end_s)
        return;
    fb->day_end_s = gw_next_central_midnight(now_s);
    fb->fleet_day = 0;
    fb->unreported = 0;
}

/* Index of a record free at now_ms, or -1 (then *earliest gets the first
 * moment one frees up, INT64_MAX when every record is in flight). Call with
 * mu held. */
static ssize_t fb_free_record(const fallback_limiter *fb, int64_t now_ms, int64_t *earliest)
{
    *earliest = INT64_MAX;
    for (size_t i = 0; i < fb->ncalls; i++) {
        const own_call *c = &fb->calls[i];
        if (!own_counts(c, now_ms))
            return (ssize_t)i;
        if (c->until_ms < *earliest)
            *earliest = c->until_ms;
    }
    return -1;
}

/* Records what Redis answered at now_ms: the fleet's spending minus this
 * replica's share of it gives the other replicas' calls, which the local
 * share will keep counting until they age out; the day's count. Call with
 * mu held, after a granted call has been recorded. */
static void fb_note_answer(fallback_limiter *fb, int64_t now_ms, const rl_answer *a)
{
    int64_t own_done = 0, own_flying = 0;
    for (size_t i = 0; i < fb->ncalls; i++) {
        const own_call *c = &fb->calls[i];
        if (!c->shared || !own_counts(c, now_ms))
            continue;
        if (c->until_ms == INT64_MAX)
            own_flying++;
        else
            own_done++;
    }
    int64_t flying = a->in_flight - own_flying;
    int64_t done = (a->in_window - a->in_flight) - own_done;
    fb->others_flying = flying > 0 ? flying : 0;
    fb->others_done = done > 0 ? done : 0;
    fb->seen_ms = now_ms;
    if (a->day_end_s == fb->day_end_s && a->day_used > fb->fleet_day)
        fb->fleet_day = a->day_used;
    if (strcmp(fb->gen, a->gen) != 0)
        snprintf(fb->gen, sizeof fb->gen, "%s", a->gen);
}

/* floor(share * (limit - spent)), at most the share of the whole limit; the
 * whole share when nothing is spent (it is at least 1). */
static int64_t fb_allowance(const fallback_limiter *fb, int64_t limit, int64_t share_limit,
                            int64_t spent)
{
    if (spent <= 0)
        return share_limit;
    if (spent >= limit)
        return 0;
    double v = floor(fb->share_f * (double)(limit - spent) + 1e-9);
    if (v >= (double)share_limit)
        return share_limit;
    return v < 0.0 ? 0 : (int64_t)v;
}

/* Takes record idx for a call starting at now_ms; fills slot. Call with mu held. */
static void fb_take(fallback_limiter *fb, size_t idx, int64_t now_ms, uint64_t lease, bool shared,
                    gw_slot *slot)
{
    own_call *c = &fb->calls[idx];
    c->taken_ms = now_ms > 0 ? now_ms : 1;
    c->until_ms = INT64_MAX;
    c->lease = lease;
    c->gen++;
    c->shared = shared;
    slot->id = ((uint64_t)c->gen << 32) | (uint64_t)idx;
    slot->owner = fb;
}

/* The local share's decision while Redis does not answer (see the top of
 * the file). Call with mu held. */
static gw_limit_result fb_local_acquire(fallback_limiter *fb, int64_t now_ms, gw_slot *slot,
                                        int64_t *retry_in_ms)
{
    if (fb->p.daily_quota > 0) {
        if (fb->fleet_day + fb->unreported >= fb->p.daily_quota) {
            /* spent, as far as anyone told this replica */
            int64_t wait = fb->day_end_s * 1000 - now_ms;
            *retry_in_ms = wait < 1 ? 1 : wait;
            return GW_LIMIT_QUOTA;
        }
        int64_t allow = fb_allowance(fb, fb->p.daily_quota, fb->share.daily_quota, fb->fleet_day);
        if (fb->unreported >= allow) {
            /* this replica's share of the rest is spent; Redis may say more */
            *retry_in_ms = FALLBACK_RETRY_CAP_MS;
            return GW_LIMIT_WAIT;
        }
    }
    int64_t shared = 0, local = 0, flying = 0, earliest = INT64_MAX;
    ssize_t free_idx = -1;
    for (size_t i = 0; i < fb->ncalls; i++) {
        const own_call *c = &fb->calls[i];
        if (!own_counts(c, now_ms)) {
            if (free_idx < 0)
                free_idx = (ssize_t)i;
            continue;
        }
        if (c->shared)
            shared++;
        else
            local++;
        if (c->until_ms == INT64_MAX)
            flying++;
        else if (c->until_ms < earliest)
            earliest = c->until_ms;
    }
    /* The other replicas' calls as Redis last reported them, while they may count. */
    int64_t others = 0;
    int64_t done_end = fb->seen_ms + fb->p.window_ms;
    int64_t fly_end = fb->seen_ms + fb->redis->lease_ms + fb->p.window_ms;
    if (fb->seen_ms != 0 && now_ms < done_end && fb->others_done > 0) {
        others += fb->others_done;
        if (done_end < earliest)
            earliest = done_end;
    }
    if (fb->seen_ms != 0 && now_ms < fly_end && fb->others_flying > 0) {
        others += fb->others_flying;
        if (fly_end < earliest)
            earliest = fly_end;
    }
    int64_t allow = fb_allowance(fb, fb->p.calls_per_window, fb->share.calls_per_window,
                                 shared + others);
    if (free_idx < 0 || local >= allow) {
        int64_t wait = earliest == INT64_MAX ? CONCURRENCY_RETRY_CAP_MS : earliest - now_ms;
        if (wait > FALLBACK_RETRY_CAP_MS)
            wait = FALLBACK_RETRY_CAP_MS;
        *retry_in_ms = wait < 1 ? 1 : wait;
        return GW_LIMIT_WAIT;
    }
    if (flying >= fb->share.max_concurrent) {
        *retry_in_ms = CONCURRENCY_RETRY_CAP_MS / 2;
        return GW_LIMIT_WAIT;
    }
    uint64_t lease = rl_random_id();
    fb_take(fb, (size_t)free_idx, now_ms, lease != 0 ? lease : (uint64_t)now_ms, false, slot);
    fb->unreported++;
    *retry_in_ms = 0;
    return GW_LIMIT_OK;
}

/* One record sent to Redis by a reconcile. */
typedef struct told_call {
    size_t idx;     /* its record */
    uint32_t gen;   /* the record's gen when it was read */
} told_call;

/* Collects, under mu, the records that still count (told/rec, n of them)
 * and the day's facts to tell Redis. */
static size_t fb_collect(fallback_limiter *fb, int64_t now_ms, rl_told *told, told_call *rec,
                         int64_t *day_end, int64_t *seen, int64_t *delta)
{
    size_t n = 0;
    pthread_mutex_lock(&fb->mu);
    fb_roll_day(fb, now_ms);
    *day_end = fb->day_end_s;
    *seen = fb->fleet_day;
    *delta = fb->unreported;
    for (size_t i = 0; i < fb->ncalls; i++) {
        const own_call *c = &fb->calls[i];
        if (!own_counts(c, now_ms))
            continue;
        bool flying = c->until_ms == INT64_MAX;
        int64_t left = flying ? c->taken_ms + fb->redis->lease_ms - now_ms : c->until_ms - now_ms;
        told[n] = (rl_told){.lease = c->lease, .flying = flying, .left_ms = left < 1 ? 1 : left};
        rec[n] = (told_call){.idx = i, .gen = c->gen};
        n++;
    }
    pthread_mutex_unlock(&fb->mu);
    return n;
}

/* Tells Redis what it may have missed: this replica's calls that still
 * count, and the day (see the reconcile script in redis_limiter.c). Returns
 * 0 (every record sent is now shared, the day's count and generation are
 * Redis's), or -1 when Redis did not answer (nothing changes here). Call
 * with acq_mu held, mu not held. */
static int fb_reconcile(fallback_limiter *fb, int64_t now_ms)
{
    int rc = -1;
    rl_told *told = calloc(fb->ncalls ? fb->ncalls : 1, sizeof *told);
    told_call *rec = calloc(fb->ncalls ? fb->ncalls : 1, sizeof *rec);
    if (told == NULL || rec == NULL)
        goto out;
    int64_t day_end, seen, delta, day_count = 0;
    size_t n = fb_collect(fb, now_ms, told, rec, &day_end, &seen, &delta);
    char gen[GEN_LEN] = "";
    if (n == 0 && delta == 0 && seen == 0) {
        /* nothing to tell; the next acquire learns the generation */
        pthread_mutex_lock(&fb->mu);
        fb->reconcile = false;
        pthread_mutex_unlock(&fb->mu);
        rc = 0;
        goto out;
    }
    if (rl_reconcile(fb->redis, told, n, day_end, seen, delta, gen, &day_count) != 0)
        goto out;
    pthread_mutex_lock(&fb->mu);
    bool again = false;
    for (size_t i = 0; i < n; i++) {
        own_call *c = &fb->calls[rec[i].idx];
        if (c->gen != rec[i].gen)
            continue;
        c->shared = true;
        /* released while being told as in flight: its lease must go too */
        if (told[i].flying && c->until_ms != INT64_MAX)
            again = true;
    }
    fb->unreported = fb->day_end_s == day_end && fb->unreported > delta ? fb->unreported - delta : 0;
    if (fb->p.daily_quota > 0 && fb->day_end_s == day_end)
        fb->fleet_day = day_count;
    snprintf(fb->gen, sizeof fb->gen, "%s", gen);
    fb->reconcile = again;
    pthread_mutex_unlock(&fb->mu);
    if (n > 0 || delta > 0)
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:I, s:I}", "calls", (json_int_t)n, "day_calls", (json_int_t)delta),
               "limiter: Redis told of this replica's calls it did not count");
    rc = 0;
out:
    free(told);
    free(rec);
    return rc;
}

/* ---- the fallback limiter: gw_limiter_ops ----------------------------------- */

static gw_limit_result fb_try_acquire(gw_limiter *l, int64_t now_ms, gw_slot *slot,
                                      int64_t *retry_in_ms)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    gw_limit_result res = GW_LIMIT_ERROR;
    rl_answer a;
    char gen[GEN_LEN];

    *retry_in_ms = 0;
    pthread_mutex_lock(&fb->acq_mu);
    pthread_mutex_lock(&fb->mu);
    fb_roll_day(fb, now_ms);
    int64_t earliest;
    ssize_t idx = fb_free_record(fb, now_ms, &earliest);
    bool need = fb->reconcile;
    pthread_mutex_unlock(&fb->mu);
    if (idx < 0) {
        /* Every record counts: this replica alone fills the window. */
        int64_t wait = earliest == INT64_MAX ? CONCURRENCY_RETRY_CAP_MS : earliest - now_ms;
        *retry_in_ms = wait < 1 ? 1 : wait;
        pthread_mutex_unlock(&fb->acq_mu);
        return GW_LIMIT_WAIT;
    }
    uint64_t lease = rl_random_id();
    for (int attempt = 0; attempt < 2; attempt++) {
        if (need && fb_reconcile(fb, now_ms) < 0)
            break;
        pthread_mutex_lock(&fb->mu);
        snprintf(gen, sizeof gen, "%s", fb->gen);
        pthread_mutex_unlock(&fb->mu);
        res = rl_acquire(fb->redis, now_ms, lease, gen, &a);
        if (res == GW_LIMIT_ERROR || !a.gen_changed)
            break;
        /* Redis lost its data since we last heard from it: tell it first. */
        GW_LOG(GW_LOG_WARN, NULL, "limiter: Redis lost the shared budget's state (restart or "
                                  "flush); telling it this replica's calls");
        need = true;
        res = GW_LIMIT_ERROR;
    }
    pthread_mutex_lock(&fb->mu);
    if (res == GW_LIMIT_ERROR) {
        fb->reconcile = true;
        res = fb_local_acquire(fb, now_ms, slot, retry_in_ms);
        pthread_mutex_unlock(&fb->mu);
        pthread_mutex_unlock(&fb->acq_mu);
        if (!atomic_exchange(&fb->on_local, true))
            GW_LOG(GW_LOG_WARN, NULL,
                   "limiter: Redis unavailable; using this replica's share of what the budget "
                   "has left (ratelimit.fallback_share)");
        gw_counter_add(gw_metrics_counter("limiter_fallback_total",
                                          "outbound slot requests answered by the local "
                                          "fallback share",
                                          NULL),
                       1);
        return res;
    }
    if (res == GW_LIMIT_OK)
        fb_take(fb, (size_t)idx, now_ms, lease, true, slot);
    else
        *retry_in_ms = a.retry_ms;
    fb_note_answer(fb, now_ms, &a);
    pthread_mutex_unlock(&fb->mu);
    pthread_mutex_unlock(&fb->acq_mu);
    if (atomic_exchange(&fb->on_local, false))
        GW_LOG(GW_LOG_INFO, NULL, "limiter: Redis answers again; back to the shared budget");
    return res;
}

static void fb_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    if (slot == NULL || slot->owner != fb)
        return;
    size_t idx = (size_t)(slot->id & 0xffffffffu);
    uint32_t gen = (uint32_t)(slot->id >> 32);
    bool shared = false;
    uint64_t lease = 0;

    pthread_mutex_lock(&fb->mu);
    if (idx < fb->ncalls) {
        own_call *c = &fb->calls[idx];
        if (c->gen == gen && c->taken_ms != 0 && c->until_ms == INT64_MAX) {
            c->until_ms = now_ms > INT64_MAX - fb->p.window_ms ? INT64_MAX - 1
                                                               : now_ms + fb->p.window_ms;
            shared = c->shared;
            lease = c->lease;
        }
    }
    pthread_mutex_unlock(&fb->mu);
    /* A call Redis counts is given back there too; when that fails, its
     * lease would hold a slot until it expires: the next reconcile ends it. */
    if (shared && rl_release_lease(fb->redis, lease) < 0) {
        pthread_mutex_lock(&fb->mu);
        fb->reconcile = true;
        pthread_mutex_unlock(&fb->mu);
    }
}

static void fb_destroy(gw_limiter *l)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    if (fb == NULL)
        return;
    if (fb->redis)
        rl_free(fb->redis);
    pthread_mutex_destroy(&fb->mu);
    pthread_mutex_destroy(&fb->acq_mu);
    free(fb->calls);
    free(fb);
}

static const gw_limiter_ops fallback_limiter_ops = {
    .name = "redis",
    .try_acquire = fb_try_acquire,
    .release = fb_release,
    .destroy = fb_destroy,
};

gw_limiter *gw_limiter_fallback_new(gw_limiter *shared, double share)
{
    fallback_limiter *fb = NULL;
    if (shared == NULL)
        return NULL;
    if (!rl_is_redis(shared) || (fb = calloc(1, sizeof *fb)) == NULL) {
        shared->ops->destroy(shared);
        return NULL;
    }
    redis_limiter *rl = (redis_limiter *)shared;
    fb->base.ops = &fallback_limiter_ops;
    fb->redis = rl;
    fb->p = rl->p;
    if (!(share > 0.0))
        share = 1e-9;
    if (share > 1.0)
        share = 1.0;
    fb->share_f = share;
    fb->share = gw_limit_params_scaled(&rl->p, share);
    fb->ncalls = (size_t)(rl->p.calls_per_window + rl->p.max_concurrent);
    fb->calls = calloc(fb->ncalls, sizeof *fb->calls);
    fb->reconcile = true;
    atomic_init(&fb->on_local, false);
    bool mu_ok = pthread_mutex_init(&fb->mu, NULL) == 0;
    bool acq_ok = mu_ok && pthread_mutex_init(&fb->acq_mu, NULL) == 0;
    if (fb->calls == NULL || !acq_ok) {
        if (mu_ok)
            pthread_mutex_destroy(&fb->mu);
        rl_free(rl);
        free(fb->calls);
        free(fb);
        return NULL;
    }
    return &fb->base;
}

bool gw_limiter_fallback_active(gw_limiter *l)
{
    if (l == NULL || l->ops != &fallback_limiter_ops)
        return false;
    return atomic_load(&((fallback_limiter *)l)->on_local);
}
