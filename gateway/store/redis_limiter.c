/* gateway/store/redis_limiter.c - the outbound budget in Redis, shared by every
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

/* Longest suggested wait when only concurrency is full (a release may come sooner). */
#define CONCURRENCY_RETRY_CAP_MS 10
/* Longest wait the local share suggests: Redis may answer again before. */
#define FALLBACK_RETRY_CAP_MS 250
/* Life of a day counter after its midnight, seconds. */
#define DAY_KEY_GRACE_S 60
/* Room for a data generation name (16 hex digits and a NUL, with slack). */
#define GEN_LEN 24

/* The Redis limiter. */
typedef struct redis_limiter {
    gw_limiter base;        /* ops; must stay first */
    gw_redis *r;            /* connection manager (one reference) */
    gw_limit_params p;      /* the budget shared by every replica */
    int64_t lease_ms;       /* life of a slot never released */
    char *k_win;            /* P rl:win */
    char *k_lease;          /* P rl:lease */
    char *k_day;            /* P rl:day: (the date is appended per call) */
    char *k_gen;            /* P rl:gen */
} redis_limiter;

/* What one acquire script answered. */
typedef struct rl_answer {
    gw_limit_result res;    /* OK, WAIT or QUOTA (ERROR: no answer, nothing else set) */
    int64_t retry_ms;       /* WAIT/QUOTA: when to ask again */
    int64_t in_window;      /* the fleet's calls counting in the window, after this answer */
    int64_t in_flight;      /* the fleet's calls in flight, after this answer */
    int64_t day_used;       /* the fleet's calls of the day ending at day_end_s (quota on) */
    int64_t day_end_s;      /* that day's US-Central midnight; 0 without a quota */
    char gen[GEN_LEN];      /* Redis's data generation */
    bool gen_changed;       /* not the generation expected: nothing was taken */
} rl_answer;

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

/* A random 64-bit id (lease ids, generation names); 0 when none is available. */
static uint64_t random_id(void)
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

/* Runs the acquire script for lease id `id`. expect_gen: the data
 * generation the caller last saw ("" or NULL: any). Fills *a; returns
 * a->res (GW_LIMIT_ERROR when Redis gave no usable answer; counted). A
 * generation mismatch is a->gen_changed with a->res WAIT and nothing taken. */
static gw_limit_result rl_acquire(redis_limiter *rl, int64_t now_ms, uint64_t id,
                                  const char *expect_gen, rl_answer *a)
{
    char *day1 = NULL, *day2 = NULL;
    redisReply *rep = NULL;

    memset(a, 0, sizeof *a);
    a->res = GW_LIMIT_ERROR;
    uint64_t seed = random_id();
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
    uint64_t id = random_id();
    gw_limit_result res = rl_acquire(rl, now_ms, id, "", &a);
    *retry_in_ms = res == GW_LIMIT_OK || res == GW_LIMIT_ERROR ? 0 : a.retry_ms;
    if (res == GW_LIMIT_OK) {
        slot->id = id;
        slot->owner = rl;
    }
    return res;
}

/* Gives lease id back to Redis. Returns 0, or -1 when Redis did not answer
 * (the lease then expires after lease_ms). */
static int rl_release_lease(redis_limiter *rl, uint64_t id)
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

static void rl_destroy(gw_limiter *l)
{
    redis_limiter *rl = (redis_limiter *)l;
    if (rl == NULL)
        return;
    gw_redis_unref(rl->r);
    free(rl->k_win);
    free(rl->k_lease);
    free(rl->k_day);
    free(rl->k_gen);
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
    rl->k_gen = join2(gw_redis_prefix(r), "rl:gen");
    if (rl->k_win == NULL || rl->k_lease == NULL || rl->k_day == NULL || rl->k_gen == NULL) {
        rl_destroy(&rl->base);
        return NULL;
    }
    return &rl->base;
}

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
    uint64_t lease = random_id();
    fb_take(fb, (size_t)free_idx, now_ms, lease != 0 ? lease : (uint64_t)now_ms, false, slot);
    fb->unreported++;
    *retry_in_ms = 0;
    return GW_LIMIT_OK;
}

/* One record sent to Redis by a reconcile. */
typedef struct told_call {
    size_t idx;     /* its record */
    uint32_t gen;   /* the record's gen when it was read */
    bool flying;    /* it was in flight */
} told_call;

/* Tells Redis what it may have missed: this replica's calls that still
 * count, and the day (see RECONCILE_SCRIPT). Returns 0 (every record sent
 * is now shared, the day's count and generation are Redis's), or -1 when
 * Redis did not answer (nothing changes here). Call with acq_mu held, mu
 * not held. */
static int fb_reconcile(fallback_limiter *fb, int64_t now_ms)
{
    redis_limiter *rl = fb->redis;
    int rc = -1;
    size_t n = 0;
    told_call *told = calloc(fb->ncalls ? fb->ncalls : 1, sizeof *told);
    char (*ids)[17] = calloc(fb->ncalls ? fb->ncalls : 1, sizeof *ids);
    char (*lefts)[24] = calloc(fb->ncalls ? fb->ncalls : 1, sizeof *lefts);
    const char **args = calloc(8 + 3 * fb->ncalls, sizeof *args);
    char *dayk = NULL;
    redisReply *rep = NULL;
    if (told == NULL || ids == NULL || lefts == NULL || args == NULL)
        goto out;

    pthread_mutex_lock(&fb->mu);
    fb_roll_day(fb, now_ms);
    int64_t day_end = fb->day_end_s, seen = fb->fleet_day, delta = fb->unreported;
    for (size_t i = 0; i < fb->ncalls; i++) {
        const own_call *c = &fb->calls[i];
        if (!own_counts(c, now_ms))
            continue;
        bool flying = c->until_ms == INT64_MAX;
        int64_t left = flying ? c->taken_ms + rl->lease_ms - now_ms : c->until_ms - now_ms;
        if (left < 1)
            left = 1;
        told[n] = (told_call){.idx = i, .gen = c->gen, .flying = flying};
        lease_hex(c->lease, ids[n]);
        snprintf(lefts[n], sizeof lefts[n], "%lld", (long long)left);
        n++;
    }
    pthread_mutex_unlock(&fb->mu);

    if (n == 0 && delta == 0 && seen == 0) {
        rc = 0; /* nothing to tell; the next acquire learns the generation */
        goto applied;
    }
    char d[16];
    central_date(day_end, d);
    if ((dayk = join2(rl->k_day, d)) == NULL)
        goto out;
    char a_win[24], a_seed[17], a_quota[24], a_end[24], a_grace[24], a_seen[24], a_delta[24],
        a_n[24];
    uint64_t seed = random_id();
    if (seed == 0)
        goto out;
    snprintf(a_win, sizeof a_win, "%lld", (long long)rl->p.window_ms);
    lease_hex(seed, a_seed);
    snprintf(a_quota, sizeof a_quota, "%lld", (long long)rl->p.daily_quota);
    snprintf(a_end, sizeof a_end, "%lld", (long long)day_end);
    snprintf(a_grace, sizeof a_grace, "%d", DAY_KEY_GRACE_S);
    snprintf(a_seen, sizeof a_seen, "%lld", (long long)seen);
    snprintf(a_delta, sizeof a_delta, "%lld", (long long)delta);
    snprintf(a_n, sizeof a_n, "%zu", n);
    const char *head[8] = {a_win, a_seed, a_quota, a_end, a_grace, a_seen, a_delta, a_n};
    memcpy(args, head, sizeof head);
    for (size_t i = 0; i < n; i++) {
        args[8 + 3 * i] = ids[i];
        args[9 + 3 * i] = told[i].flying ? "1" : "0";
        args[10 + 3 * i] = lefts[i];
    }
    const char *keys[4] = {rl->k_win, rl->k_lease, rl->k_gen, dayk};
    rep = gw_redis_script(rl->r, RECONCILE_SCRIPT, keys, 4, args, NULL, 8 + 3 * n);
    char gen[GEN_LEN];
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        reply_text(rep->element[0], gen) < 0 || rep->element[1]->type != REDIS_REPLY_INTEGER) {
        limiter_error();
        goto out;
    }
    pthread_mutex_lock(&fb->mu);
    bool again = false;
    for (size_t i = 0; i < n; i++) {
        own_call *c = &fb->calls[told[i].idx];
        if (c->gen != told[i].gen)
            continue;
        c->shared = true;
        /* released while being told as in flight: its lease must go too */
        if (told[i].flying && c->until_ms != INT64_MAX)
            again = true;
    }
    fb->unreported = fb->day_end_s == day_end && fb->unreported > delta ? fb->unreported - delta : 0;
    if (rl->p.daily_quota > 0 && fb->day_end_s == day_end)
        fb->fleet_day = rep->element[1]->integer;
    snprintf(fb->gen, sizeof fb->gen, "%s", gen);
    fb->reconcile = again;
    pthread_mutex_unlock(&fb->mu);
    if (n > 0 || delta > 0)
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:I, s:I}", "calls", (json_int_t)n, "day_calls", (json_int_t)delta),
               "limiter: Redis told of this replica's calls it did not count");
    rc = 0;
    goto out;
applied:
    pthread_mutex_lock(&fb->mu);
    fb->reconcile = false;
    pthread_mutex_unlock(&fb->mu);
out:
    if (rep)
        freeReplyObject(rep);
    free(dayk);
    free(told);
    free(ids);
    free(lefts);
    free(args);
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
    uint64_t lease = random_id();
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
        rl_destroy(&fb->redis->base);
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
    if (shared->ops != &redis_limiter_ops || (fb = calloc(1, sizeof *fb)) == NULL) {
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
        rl_destroy(&rl->base);
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
