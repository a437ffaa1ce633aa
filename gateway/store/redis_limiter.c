/* gateway/store/redis_limiter.c - the outbound budget in Redis, shared by every
 * replica.
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
 *   P rl:gen         a random name for this Redis dataset, set when missing:
 *                    when it changes, Redis lost what it knew (a restart
 *                    without persistence, a flush, a failover to an empty
 *                    server) and each replica tells it again (below).
 * One script per operation, so a check and its take are atomic across every
 * replica, and one clock (Redis's TIME) for all of them: acquire drops
 * expired entries, checks the three rules and takes all three or none;
 * release drops the lease and re-scores its window entry to now + window.
 * At every moment rl:win holds every call that Marketo may still count in
 * its rolling window, so the window can never overshoot, at its edges
 * included. Every answer also carries what the fleet has spent (calls in
 * the window, in flight, today), for the fallback.
 *
 * The day is computed here from the local clock (both candidate midnights
 * are sent; the script picks the one that matches Redis's time), so a clock
 * a little off from Redis's still counts in the right day.
 *
 * The fallback limiter that wraps this one is redis_fallback.c.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/rand.h>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/store/redis.h"
#include "gateway/store/redis_limiter_int.h"

/* KEYS[1] win, KEYS[2] lease, KEYS[3] day key ending at ARGV[6], KEYS[4] day
 * key ending at ARGV[7], KEYS[5] gen. ARGV: calls_per_window, window_ms,
 * max_concurrent, lease_ms, daily_quota (0: none), midnight 1 (s), midnight
 * 2 (s), lease id, concurrency retry cap (ms), day key grace (s), a new
 * generation name (used when gen is missing), the generation expected (""
 * any). Returns {code, ms, calls in window, calls in flight, day count, day
 * end (s), generation}: code 0 taken, 1 wait ms, 2 quota spent (ms to
 * midnight), 3 not the generation expected (nothing checked or taken). */
static const char ACQUIRE_SCRIPT[] =
    "local calls = tonumber(ARGV[1])\n"
    "local window = tonumber(ARGV[2])\n"
    "local maxc = tonumber(ARGV[3])\n"
    "local lease = tonumber(ARGV[4])\n"
    "local quota = tonumber(ARGV[5])\n"
    "local g = redis.call('GET', KEYS[5])\n"
    "if not g then redis.call('SET', KEYS[5], ARGV[11]) g = ARGV[11] end\n"
    "if ARGV[12] ~= '' and ARGV[12] ~= g then return {3, 0, 0, 0, 0, 0, g} end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local snow = string.format('%d', now)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', snow)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', snow)\n"
    "local inwin = redis.call('ZCARD', KEYS[1])\n"
    "local inflight = redis.call('ZCARD', KEYS[2])\n"
    "local dayk, dayend, used = nil, 0, 0\n"
    "if quota > 0 then\n"
    "  local s = tonumber(t[1])\n"
    "  if s < tonumber(ARGV[6]) then dayk = KEYS[3] dayend = tonumber(ARGV[6])\n"
    "  elseif s < tonumber(ARGV[7]) then dayk = KEYS[4] dayend = tonumber(ARGV[7])\n"
    "  else return redis.error_reply('ERR clock skew between gateway and Redis') end\n"
    "  used = tonumber(redis.call('GET', dayk) or '0')\n"
    "  if used >= quota then return {2, math.max(dayend * 1000 - now, 1), inwin, inflight, used, dayend, g} end\n"
    "end\n"
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
    "  return {1, math.max(math.floor(wait), 1), inwin, inflight, used, dayend, g}\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], string.format('%d', now + lease), ARGV[8])\n"
    "redis.call('ZADD', KEYS[1], string.format('%d', now + lease + window), ARGV[8])\n"
    "redis.call('PEXPIRE', KEYS[2], lease + 1000)\n"
    "redis.call('PEXPIRE', KEYS[1], lease + window + 1000)\n"
    "if quota > 0 then\n"
    "  used = redis.call('INCR', dayk)\n"
    "  redis.call('EXPIREAT', dayk, dayend + tonumber(ARGV[10]))\n"
    "end\n"
    "return {0, 0, inwin + 1, inflight + 1, used, dayend, g}\n";

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

/* Tells Redis what one replica knows and Redis may have missed (a restart,
 * an outage). KEYS[1] win, KEYS[2] lease, KEYS[3] gen, KEYS[4] the day key
 * of the facts. ARGV: window_ms, a new generation name, daily_quota (0: no
 * day), the day's midnight (s), day key grace (s), the fleet's count of that
 * day as last seen, this replica's calls since that Redis does not count, n,
 * then n triples (lease id, 1 in flight / 0 released, ms left: of the lease
 * in flight, of the window once released). Calls are added where missing
 * and never made to count longer than they already do (ZADD LT); the day
 * becomes max(count, seen) + calls since. Returns {generation, day count}. */
static const char RECONCILE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local window = tonumber(ARGV[1])\n"
    "local g = redis.call('GET', KEYS[3])\n"
    "if not g then redis.call('SET', KEYS[3], ARGV[2]) g = ARGV[2] end\n"
    "local used = 0\n"
    "if tonumber(ARGV[3]) > 0 then\n"
    "  used = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
    "  local seen = tonumber(ARGV[6])\n"
    "  if used < seen then used = seen end\n"
    "  used = used + tonumber(ARGV[7])\n"
    "  redis.call('SET', KEYS[4], string.format('%d', used))\n"
    "  redis.call('EXPIREAT', KEYS[4], tonumber(ARGV[4]) + tonumber(ARGV[5]))\n"
    "end\n"
    "local n = tonumber(ARGV[8])\n"
    "local maxw, maxl = 0, 0\n"
    "for i = 0, n - 1 do\n"
    "  local id = ARGV[9 + 3 * i]\n"
    "  local left = tonumber(ARGV[11 + 3 * i])\n"
    "  if ARGV[10 + 3 * i] == '1' then\n"
    "    redis.call('ZADD', KEYS[2], 'LT', string.format('%d', now + left), id)\n"
    "    redis.call('ZADD', KEYS[1], 'LT', string.format('%d', now + left + window), id)\n"
    "    maxl = math.max(maxl, left)\n"
    "    maxw = math.max(maxw, left + window)\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[2], id)\n"
    "    redis.call('ZADD', KEYS[1], 'LT', string.format('%d', now + left), id)\n"
    "    maxw = math.max(maxw, left)\n"
    "  end\n"
    "end\n"
    "if maxl > 0 and redis.call('PTTL', KEYS[2]) < maxl + 1000 then redis.call('PEXPIRE', KEYS[2], maxl + 1000) end\n"
    "if maxw > 0 and redis.call('PTTL', KEYS[1]) < maxw + 1000 then redis.call('PEXPIRE', KEYS[1], maxw + 1000) end\n"
    "return {g, used}\n";

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

uint64_t rl_random_id(void)
{
    uint64_t id = 0;
    if (RAND_bytes((unsigned char *)&id, sizeof id) != 1)
        return 0;
    return id;
}

/* Copies a string or integer reply into out (size GEN_LEN). Returns 0 or -1. */
static int reply_text(const redisReply *rep, char out[GEN_LEN])
{
    if (rep->type == REDIS_REPLY_STRING && rep->len > 0 && rep->len < GEN_LEN) {
        memcpy(out, rep->str, rep->len);
        out[rep->len] = '\0';
        return 0;
    }
    if (rep->type == REDIS_REPLY_INTEGER) {
        snprintf(out, GEN_LEN, "%lld", (long long)rep->integer);
        return 0;
    }
    return -1;
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

gw_limit_result rl_acquire(redis_limiter *rl, int64_t now_ms, uint64_t id,
                                  const char *expect_gen, rl_answer *a)
{
    char *day1 = NULL, *day2 = NULL;
    redisReply *rep = NULL;

    memset(a, 0, sizeof *a);
    a->res = GW_LIMIT_ERROR;
    uint64_t seed = rl_random_id();
    if (id == 0 || seed == 0)
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
        a_id[17], a_cap[24], a_grace[24], a_seed[17];
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
    lease_hex(seed, a_seed);
    const char *keys[5] = {rl->k_win, rl->k_lease, day1, day2, rl->k_gen};
    const char *args[12] = {a_calls, a_win, a_maxc, a_lease, a_quota, a_m1,
                            a_m2,    a_id,  a_cap,  a_grace, a_seed,  expect_gen ? expect_gen : ""};
    rep = gw_redis_script(rl->r, ACQUIRE_SCRIPT, keys, 5, args, NULL, 12);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 7)
        goto out;
    for (size_t i = 0; i < 6; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER)
            goto out;
    if (reply_text(rep->element[6], a->gen) < 0)
        goto out;
    long long code = rep->element[0]->integer, ms = rep->element[1]->integer;
    a->in_window = rep->element[2]->integer;
    a->in_flight = rep->element[3]->integer;
    a->day_used = rep->element[4]->integer;
    a->day_end_s = rep->element[5]->integer;
    if (code == 0) {
        a->res = GW_LIMIT_OK;
    } else if (code == 1 || code == 2) {
        a->retry_ms = ms < 1 ? 1 : ms;
        a->res = code == 1 ? GW_LIMIT_WAIT : GW_LIMIT_QUOTA;
    } else if (code == 3) {
        a->gen_changed = true;
        a->retry_ms = 1;
        a->res = GW_LIMIT_WAIT;
    }
out:
    if (rep)
        freeReplyObject(rep);
    free(day1);
    free(day2);
    if (a->res == GW_LIMIT_ERROR)
        limiter_error();
    return a->res;
}

static gw_limit_result rl_try_acquire(gw_limiter *l, int64_t now_ms, gw_slot *slot,
                                      int64_t *retry_in_ms)
{
    redis_limiter *rl = (redis_limiter *)l;
    rl_answer a;
    uint64_t id = rl_random_id();
    gw_limit_result res = rl_acquire(rl, now_ms, id, "", &a);
    *retry_in_ms = res == GW_LIMIT_OK || res == GW_LIMIT_ERROR ? 0 : a.retry_ms;
    if (res == GW_LIMIT_OK) {
        slot->id = id;
        slot->owner = rl;
    }
    return res;
}

int rl_release_lease(redis_limiter *rl, uint64_t id)
{
    char a_win[24], a_id[17];
    snprintf(a_win, sizeof a_win, "%lld", (long long)rl->p.window_ms);
    lease_hex(id, a_id);
    const char *keys[2] = {rl->k_win, rl->k_lease};
    const char *args[2] = {a_win, a_id};
    redisReply *rep = gw_redis_script(rl->r, RELEASE_SCRIPT, keys, 2, args, NULL, 2);
    int rc = rep != NULL && rep->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

static void rl_release(gw_limiter *l, const gw_slot *slot, int64_t now_ms)
{
    redis_limiter *rl = (redis_limiter *)l;
    (void)now_ms;
    if (slot == NULL || slot->owner != rl)
        return;
    rl_release_lease(rl, slot->id);
}

void rl_free(redis_limiter *rl)
{
    if (rl == NULL)
        return;
    gw_redis_unref(rl->r);
    free(rl->k_win);
    free(rl->k_lease);
    free(rl->k_day);
    free(rl->k_gen);
    free(rl);
}

static void rl_destroy(gw_limiter *l)
{
    rl_free((redis_limiter *)l);
}

int rl_reconcile(redis_limiter *rl, const rl_told *told, size_t n, int64_t day_end_s,
                 int64_t seen, int64_t delta, char gen[GEN_LEN], int64_t *day_count)
{
    int rc = -1;
    char (*ids)[17] = calloc(n ? n : 1, sizeof *ids);
    char (*lefts)[24] = calloc(n ? n : 1, sizeof *lefts);
    const char **args = calloc(8 + 3 * n, sizeof *args);
    char *dayk = NULL;
    redisReply *rep = NULL;
    char d[16];
    central_date(day_end_s, d);
    uint64_t seed = rl_random_id();
    if (ids == NULL || lefts == NULL || args == NULL || seed == 0 ||
        (dayk = join2(rl->k_day, d)) == NULL)
        goto out;
    char a_win[24], a_seed[17], a_quota[24], a_end[24], a_grace[24], a_seen[24], a_delta[24],
        a_n[24];
    snprintf(a_win, sizeof a_win, "%lld", (long long)rl->p.window_ms);
    lease_hex(seed, a_seed);
    snprintf(a_quota, sizeof a_quota, "%lld", (long long)rl->p.daily_quota);
    snprintf(a_end, sizeof a_end, "%lld", (long long)day_end_s);
    snprintf(a_grace, sizeof a_grace, "%d", DAY_KEY_GRACE_S);
    snprintf(a_seen, sizeof a_seen, "%lld", (long long)seen);
    snprintf(a_delta, sizeof a_delta, "%lld", (long long)delta);
    snprintf(a_n, sizeof a_n, "%zu", n);
    const char *head[8] = {a_win, a_seed, a_quota, a_end, a_grace, a_seen, a_delta, a_n};
    memcpy(args, head, sizeof head);
    for (size_t i = 0; i < n; i++) {
        lease_hex(told[i].lease, ids[i]);
        snprintf(lefts[i], sizeof lefts[i], "%lld", (long long)told[i].left_ms);
        args[8 + 3 * i] = ids[i];
        args[9 + 3 * i] = told[i].flying ? "1" : "0";
        args[10 + 3 * i] = lefts[i];
    }
    const char *keys[4] = {rl->k_win, rl->k_lease, rl->k_gen, dayk};
    rep = gw_redis_script(rl->r, RECONCILE_SCRIPT, keys, 4, args, NULL, 8 + 3 * n);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        reply_text(rep->element[0], gen) < 0 || rep->element[1]->type != REDIS_REPLY_INTEGER) {
        limiter_error();
        goto out;
    }
    *day_count = rep->element[1]->integer;
    rc = 0;
out:
    if (rep)
        freeReplyObject(rep);
    free(dayk);
    free(ids);
    free(lefts);
    free(args);
    return rc;
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
    rl->k_gen = join2(gw_redis_prefix(r), "rl:gen");
    if (rl->k_win == NULL || rl->k_lease == NULL || rl->k_day == NULL || rl->k_gen == NULL) {
        rl_free(rl);
        return NULL;
    }
    return &rl->base;
}

bool rl_is_redis(const gw_limiter *l)
{
    return l != NULL && l->ops == &redis_limiter_ops;
}

