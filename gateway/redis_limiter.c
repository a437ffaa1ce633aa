/* gateway/redis_limiter.c - the outbound budget in Redis, shared by every
 * replica, and the fallback limiter used while Redis does not answer.
 *
 * Layout (P = the key prefix):
 *   P rl:win         ZSET of lease ids scored by the moment (ms, Redis time)
 *                    the call stops counting in the rolling window: lease
 *                    expiry + window while in flight, release + window after.
 *   P rl:lease       ZSET of lease ids in flight scored by lease expiry
 *                    (acquire + lease_ms), so a replica that dies holding
 *                    slots gives them back after lease_ms.
 *   P rl:day:<date>  calls of one US-Central day (yyyymmdd), expiring just
 *                    after that day's midnight.
 * One script per operation, so a check and its take are atomic across every
 * replica, and one clock (Redis's TIME) for all of them: acquire drops
 * expired entries, checks the three rules and takes all three or none;
 * release drops the lease and re-scores its window entry to now + window.
 * At every moment rl:win holds every call that Marketo may still count in
 * its rolling window, so the window can never overshoot, at its edges
 * included.
 *
 * The day is computed here from the local clock (both candidate midnights
 * are sent; the script picks the one that matches Redis's time), so a clock
 * a little off from Redis's still counts in the right day.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/redis.h"

/* Longest suggested wait when only concurrency is full (a release may come sooner). */
#define CONCURRENCY_RETRY_CAP_MS 10
/* Life of a day counter after its midnight, seconds. */
#define DAY_KEY_GRACE_S 60

/* The Redis limiter. */
typedef struct redis_limiter {
    gw_limiter base;        /* ops; must stay first */
    gw_redis *r;            /* connection manager (one reference) */
    gw_limit_params p;      /* the budget shared by every replica */
    int64_t lease_ms;       /* life of a slot never released */
    char *k_win;            /* P rl:win */
    char *k_lease;          /* P rl:lease */
    char *k_day;            /* P rl:day: (the date is appended per call) */
} redis_limiter;

/* The fallback limiter. */
typedef struct fallback_limiter {
    gw_limiter base;        /* ops; must stay first */
    gw_limiter *redis;      /* shared budget, owned */
    gw_limiter *local;      /* this replica's share, owned */
    _Atomic bool on_local;  /* the last acquire went to the local share */
} fallback_limiter;

/* KEYS[1] win, KEYS[2] lease, KEYS[3] day key ending at ARGV[6], KEYS[4] day
 * key ending at ARGV[7]. ARGV: calls_per_window, window_ms, max_concurrent,
 * lease_ms, daily_quota (0: none), midnight 1 (s), midnight 2 (s), lease id,
 * concurrency retry cap (ms). Returns {0, 0} taken, {1, ms} wait,
 * {2, ms} quota spent. */
static const char ACQUIRE_SCRIPT[] =
    "local calls = tonumber(ARGV[1])\n"
    "local window = tonumber(ARGV[2])\n"
    "local maxc = tonumber(ARGV[3])\n"
    "local lease = tonumber(ARGV[4])\n"
    "local quota = tonumber(ARGV[5])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local dayk, dayend\n"
    "if quota > 0 then\n"
    "  local s = tonumber(t[1])\n"
    "  if s < tonumber(ARGV[6]) then dayk = KEYS[3] dayend = tonumber(ARGV[6])\n"
    "  elseif s < tonumber(ARGV[7]) then dayk = KEYS[4] dayend = tonumber(ARGV[7])\n"
    "  else return redis.error_reply('ERR clock skew between gateway and Redis') end\n"
    "  local used = tonumber(redis.call('GET', dayk) or '0')\n"
    "  if used >= quota then return {2, math.max(dayend * 1000 - now, 1)} end\n"
    "end\n"
    "local snow = string.format('%d', now)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', snow)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', snow)\n"
    "local inwin = redis.call('ZCARD', KEYS[1])\n"
    "local inflight = redis.call('ZCARD', KEYS[2])\n"
    "if inwin >= calls or inflight >= maxc then\n"
    "  local wait = 1\n"
    "  if inflight >= maxc then\n"
    "    local f = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
    "    wait = math.min(tonumber(f[2]) - now, tonumber(ARGV[9]))\n"
    "  end\n"
    "  if inwin >= calls then\n"
    "    local f = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "    wait = math.max(wait, math.min(tonumber(f[2]) - now, window))\n"
    "  end\n"
    "  return {1, math.max(math.floor(wait), 1)}\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], string.format('%d', now + lease), ARGV[8])\n"
    "redis.call('ZADD', KEYS[1], string.format('%d', now + lease + window), ARGV[8])\n"
    "redis.call('PEXPIRE', KEYS[2], lease + 1000)\n"
    "redis.call('PEXPIRE', KEYS[1], lease + window + 1000)\n"
    "if quota > 0 then\n"
    "  redis.call('INCR', dayk)\n"
    "  redis.call('EXPIREAT', dayk, dayend + tonumber(ARGV[10]))\n"
    "end\n"
    "return {0, 0}\n";

/* KEYS[1] win, KEYS[2] lease; ARGV[1] window_ms, ARGV[2] lease id. */
static const char RELEASE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local window = tonumber(ARGV[1])\n"
    "redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "if redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%d', now + window), ARGV[2]) == 1 then\n"
    "  if redis.call('PTTL', KEYS[1]) < window + 1000 then redis.call('PEXPIRE', KEYS[1], window + 1000) end\n"
    "end\n"
    "return 0\n";

/* ---- helpers ---------------------------------------------------------------- */

static char *join2(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* "yyyymmdd" of the US-Central day that ends at midnight m (epoch s). Noon
 * of that day is about 12 h before m; read at UTC-6 it is within an hour of
 * local noon whatever the daylight saving, so the date is right. */
static void central_date(int64_t m, char out[16])
{
    time_t noon = (time_t)(m - 12 * 3600 - 6 * 3600);
    struct tm tm;
    if (gmtime_r(&noon, &tm) == NULL || strftime(out, 16, "%Y%m%d", &tm) == 0)
        snprintf(out, 16, "%lld", (long long)m);
}

static void lease_hex(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

static gw_limit_result limiter_error(void)
{
    gw_counter_add(gw_metrics_counter("limiter_redis_errors_total",
                                      "outbound slot requests the Redis limiter could not answer",
                                      NULL),
                   1);
    return GW_LIMIT_ERROR;
}

/* ---- the Redis limiter ------------------------------------------------------ */

static gw_limit_result rl_try_acquire(gw_limiter *l, int64_t now_ms, gw_slot *slot,
                                      int64_t *retry_in_ms)
{
    redis_limiter *rl = (redis_limiter *)l;
    gw_limit_result res = GW_LIMIT_ERROR;
    char *day1 = NULL, *day2 = NULL;
    redisReply *rep = NULL;
    uint64_t id = 0;

    *retry_in_ms = 0;
    if (RAND_bytes((unsigned char *)&id, sizeof id) != 1)
        goto out;
    /* Day candidates from the local clock, an hour early so that a Redis
     * clock a little behind ours still finds its day. */
    int64_t now_s = now_ms / 1000;
    int64_t m1 = gw_next_central_midnight(now_s - 3600);
    int64_t m2 = gw_next_central_midnight(m1);
    char d1[16], d2[16];
    central_date(m1, d1);
    central_date(m2, d2);
    day1 = join2(rl->k_day, d1);
    day2 = join2(rl->k_day, d2);
    if (day1 == NULL || day2 == NULL)
        goto out;

    char a_calls[24], a_win[24], a_maxc[24], a_lease[24], a_quota[24], a_m1[24], a_m2[24],
        a_id[17], a_cap[24], a_grace[24];
    snprintf(a_calls, sizeof a_calls, "%lld", (long long)rl->p.calls_per_window);
    snprintf(a_win, sizeof a_win, "%lld", (long long)rl->p.window_ms);
    snprintf(a_maxc, sizeof a_maxc, "%lld", (long long)rl->p.max_concurrent);
    snprintf(a_lease, sizeof a_lease, "%lld", (long long)rl->lease_ms);
    snprintf(a_quota, sizeof a_quota, "%lld", (long long)rl->p.daily_quota);
    snprintf(a_m1, sizeof a_m1, "%lld", (long long)m1);
    snprintf(a_m2, sizeof a_m2, "%lld", (long long)m2);
    lease_hex(id, a_id);
    snprintf(a_cap, sizeof a_cap, "%d", CONCURRENCY_RETRY_CAP_MS);
    snprintf(a_grace, sizeof a_grace, "%d", DAY_KEY_GRACE_S);
    const char *keys[4] = {rl->k_win, rl->k_lease, day1, day2};
    const char *args[10] = {a_calls, a_win, a_maxc, a_lease, a_quota,
                            a_m1,    a_m2,  a_id,   a_cap,   a_grace};
    rep = gw_redis_script(rl->r, ACQUIRE_SCRIPT, keys, 4, args, NULL, 10);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_INTEGER)
        goto out;
    long long code = rep->element[0]->integer, ms = rep->element[1]->integer;
    if (code == 0) {
        slot->id = id;
        slot->owner = rl;
        res = GW_LIMIT_OK;
    } else if (code == 1 || code == 2) {
        *retry_in_ms = ms < 1 ? 1 : ms;
        res = code == 1 ? GW_LIMIT_WAIT : GW_LIMIT_QUOTA;
    }
out:
    if (rep)
        freeReplyObject(rep);
    free(day1);
    free(day2);
    return res == GW_LIMIT_ERROR ? limiter_error() : res;
}

static void rl_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    redis_limiter *rl = (redis_limiter *)l;
    if (slot == NULL || slot->owner != rl)
        return;
    char a_win[24], a_id[17];
    snprintf(a_win, sizeof a_win, "%lld", (long long)rl->p.window_ms);
    lease_hex(slot->id, a_id);
    const char *keys[2] = {rl->k_win, rl->k_lease};
    const char *args[2] = {a_win, a_id};
    /* On failure the lease simply expires after lease_ms. */
    redisReply *rep = gw_redis_script(rl->r, RELEASE_SCRIPT, keys, 2, args, NULL, 2);
    if (rep)
        freeReplyObject(rep);
}

static void rl_destroy(gw_limiter *l)
{
    redis_limiter *rl = (redis_limiter *)l;
    if (rl == NULL)
        return;
    gw_redis_unref(rl->r);
    free(rl->k_win);
    free(rl->k_lease);
    free(rl->k_day);
    free(rl);
}

static const gw_limiter_ops redis_limiter_ops = {
    .name = "redis",
    .try_acquire = rl_try_acquire,
    .release = rl_release,
    .destroy = rl_destroy,
};

gw_limiter *gw_limiter_redis_new(gw_redis *r, const gw_limit_params *p, int64_t lease_ms)
{
    if (r == NULL || p == NULL || p->calls_per_window < 1 || p->window_ms < 1 ||
        p->max_concurrent < 1 || p->daily_quota < 0 || lease_ms < 1)
        return NULL;
    redis_limiter *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    rl->base.ops = &redis_limiter_ops;
    rl->r = gw_redis_ref(r);
    rl->p = *p;
    rl->lease_ms = lease_ms;
    rl->k_win = join2(gw_redis_prefix(r), "rl:win");
    rl->k_lease = join2(gw_redis_prefix(r), "rl:lease");
    rl->k_day = join2(gw_redis_prefix(r), "rl:day:");
    if (rl->k_win == NULL || rl->k_lease == NULL || rl->k_day == NULL) {
        rl_destroy(&rl->base);
        return NULL;
    }
    return &rl->base;
}

/* ---- the fallback limiter --------------------------------------------------- */

static gw_limit_result fb_try_acquire(gw_limiter *l, int64_t now_ms, gw_slot *slot,
                                      int64_t *retry_in_ms)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    gw_limit_result res = fb->redis->ops->try_acquire(fb->redis, now_ms, slot, retry_in_ms);
    if (res != GW_LIMIT_ERROR) {
        if (atomic_exchange(&fb->on_local, false))
            GW_LOG(GW_LOG_INFO, NULL, "limiter: Redis answers again; back to the shared budget");
        return res;
    }
    if (!atomic_exchange(&fb->on_local, true))
        GW_LOG(GW_LOG_WARN, NULL, "limiter: Redis unavailable; using this replica's share of "
                                  "the budget (ratelimit.fallback_share)");
    gw_counter_add(gw_metrics_counter("limiter_fallback_total",
                                      "outbound slot requests answered by the local fallback share",
                                      NULL),
                   1);
    return fb->local->ops->try_acquire(fb->local, now_ms, slot, retry_in_ms);
}

static void fb_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    if (slot == NULL)
        return;
    if (slot->owner == fb->redis)
        fb->redis->ops->release(fb->redis, slot, now_ms);
    else
        fb->local->ops->release(fb->local, slot, now_ms);
}

static void fb_destroy(gw_limiter *l)
{
    fallback_limiter *fb = (fallback_limiter *)l;
    if (fb == NULL)
        return;
    if (fb->redis)
        fb->redis->ops->destroy(fb->redis);
    if (fb->local)
        fb->local->ops->destroy(fb->local);
    free(fb);
}

static const gw_limiter_ops fallback_limiter_ops = {
    .name = "redis",
    .try_acquire = fb_try_acquire,
    .release = fb_release,
    .destroy = fb_destroy,
};

gw_limiter *gw_limiter_fallback_new(gw_limiter *redis_limiter, gw_limiter *local_limiter)
{
    fallback_limiter *fb = NULL;
    if (redis_limiter == NULL || local_limiter == NULL ||
        (fb = calloc(1, sizeof *fb)) == NULL) {
        if (redis_limiter)
            redis_limiter->ops->destroy(redis_limiter);
        if (local_limiter)
            local_limiter->ops->destroy(local_limiter);
        return NULL;
    }
    fb->base.ops = &fallback_limiter_ops;
    fb->redis = redis_limiter;
    fb->local = local_limiter;
    atomic_init(&fb->on_local, false);
    return &fb->base;
}

bool gw_limiter_fallback_active(gw_limiter *l)
{
    if (l == NULL || l->ops != &fallback_limiter_ops)
        return false;
    return atomic_load(&((fallback_limiter *)l)->on_local);
}
