/* gateway/store/redis.cache.c - the lookup cache in Redis, shared by every replica.
 *
 * Layout (P = the key prefix):
 *   P c:<TYPE>:<value>  HASH, one per key type and normalised key value;
 *                       field = field set ("" = all fields), value =
 *                       "<expiry ms>:<json>". The key expires with the longest
 *                       TTL of its fields; each field also carries its own
 *                       expiry (Redis time), so a negative entry never lives
 *                       longer than the negative TTL. DEL of this one key drops
 *                       every field-set variant.
 *   P id:<lead id>      SET of the hash keys whose JSON holds that lead; expires
 *                       after the longest cache TTL (plus a minute).
 *   P epoch             invalidation counter; starts at a random value when
 *                       missing, so a Redis that lost its data can never hand
 *                       out an epoch a lookup read before the loss.
 * Each operation is one Lua script (one round trip, atomic): get_many reads
 * n fields and the epoch; put_many stores only when the epoch is still the
 * one get_many read; invalidate drops hashes (by key and through the id
 * sets) and increments the epoch. So a lookup in flight during a sync can
 * never write pre-sync data back, whichever replica does what.
 *
 * When an invalidation cannot reach Redis, it is kept here (bounded; past
 * the bound a full purge of the cache keys is scheduled instead) and
 * replayed before any other operation of this replica; until then every
 * read of this replica bypasses the cache. The replay does not wait for
 * this replica's next request: a thread of the cache (the replayer) tries
 * every REPLAY_TICK_MS while something is kept (through the connection
 * manager's backoff, so a dead Redis costs nothing), and tells the syncs
 * waiting on it (await_invalidations) once it landed or at their deadline.
 * Until the replay lands, the other replicas can still read the entries it
 * drops: a sync therefore waits for it before answering, and says so when
 * it could not (gateway/leads/sync.c).
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
#include "gateway/store/redis.h"

/* Pending invalidation keys kept while Redis is down, before a full purge instead. */
#define PENDING_MAX 10000
/* How often the replayer tries kept invalidations and checks deadlines, ms. */
#define REPLAY_TICK_MS 50
/* Extra life of the id sets beyond the cache TTL, seconds. */
#define ID_SET_EXTRA_S 60

/* A growable list of owned strings. */
typedef struct strlist {
    char **v;      /* the strings, owned */
    size_t n;      /* used */
    size_t cap;    /* allocated */
} strlist;

/* A caller waiting for the kept invalidations to land. */
typedef struct waiter {
    int64_t deadline_ms;      /* monotonic ms: told false then */
    gw_cache_settled_fn fn;   /* told once */
    void *arg;                /* fn's argument */
    bool confirmed;           /* what fn is told (set when settled) */
    struct waiter *next;      /* next in the list */
} waiter;

/* The Redis cache. */
typedef struct redis_cache {
    gw_cache base;          /* ops; must stay first */
    gw_redis *r;            /* connection manager (one reference) */
    int64_t ttl_s;          /* positive entries */
    int64_t neg_ttl_s;      /* "[]" entries */
    pthread_mutex_t mu;     /* guards the pending fields below; taken before wmu */
    strlist pend_hashes;    /* hash keys to DEL once Redis answers */
    strlist pend_idsets;    /* id set keys to expand and DEL once Redis answers */
    bool pend_purge;        /* too many pending: purge every cache key instead */
    _Atomic bool pending;   /* any of the three above is set */
    pthread_mutex_t wmu;    /* guards the waiters and the flags below */
    pthread_cond_t wcv;     /* wakes the replayer (monotonic clock) */
    waiter *waiters;        /* callers of await_invalidations not told yet */
    bool telling;           /* the replayer is calling settled waiters (without wmu) */
    pthread_cond_t told_cv; /* signalled when it is done with them */
    bool no_waits;          /* stop_waits done: no new waiter */
    bool stopping;          /* destroy: the replayer ends */
    pthread_t replayer;     /* the replay thread */
    bool replayer_on;       /* replayer started (destroy joins it) */
} redis_cache;

/* ---- scripts ---------------------------------------------------------------- */

/* KEYS[1] epoch, KEYS[2..] hashes; ARGV[1] field set, ARGV[2] epoch seed.
 * Returns {epoch, v1, ...} with false (nil) for misses and expired fields. */
static const char GET_SCRIPT[] =
    "local e = redis.call('GET', KEYS[1])\n"
    "if not e then redis.call('SET', KEYS[1], ARGV[2], 'NX') e = redis.call('GET', KEYS[1]) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local out = {e}\n"
    "for i = 2, #KEYS do\n"
    "  local v = redis.call('HGET', KEYS[i], ARGV[1])\n"
    "  local r = false\n"
    "  if v then\n"
    "    local sep = string.find(v, ':', 1, true)\n"
    "    local exp = sep and tonumber(string.sub(v, 1, sep - 1))\n"
    "    if exp and exp > now then r = string.sub(v, sep + 1) end\n"
    "  end\n"
    "  out[i] = r\n"
    "end\n"
    "return out\n";

/* KEYS[1] epoch, KEYS[2..] hashes; ARGV[1] epoch read, ARGV[2] field set,
 * ARGV[3] id set prefix, ARGV[4] id set TTL, then per hash: TTL, json, nids,
 * ids. Returns 1 (stale: nothing stored) or 0. */
static const char PUT_SCRIPT[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 1 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local idttl = tonumber(ARGV[4])\n"
    "local a = 5\n"
    "for i = 2, #KEYS do\n"
    "  local ttl = tonumber(ARGV[a])\n"
    "  local nids = tonumber(ARGV[a + 2])\n"
    "  redis.call('HSET', KEYS[i], ARGV[2], string.format('%d', now + ttl * 1000) .. ':' .. ARGV[a + 1])\n"
    "  if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end\n"
    "  a = a + 3\n"
    "  for j = 1, nids do\n"
    "    local s = ARGV[3] .. ARGV[a]\n"
    "    a = a + 1\n"
    "    redis.call('SADD', s, KEYS[i])\n"
    "    if redis.call('TTL', s) < idttl then redis.call('EXPIRE', s, idttl) end\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS[1] epoch, KEYS[2 .. 1+ARGV[1]] hashes, the rest id sets; ARGV[2]
 * epoch seed. Drops them all, increments the epoch, returns it. */
static const char INVALIDATE_SCRIPT[] =
    "local nk = tonumber(ARGV[1])\n"
    "for i = 2, 1 + nk do redis.call('DEL', KEYS[i]) end\n"
    "for i = 2 + nk, #KEYS do\n"
    "  local m = redis.call('SMEMBERS', KEYS[i])\n"
    "  for _, k in ipairs(m) do redis.call('DEL', k) end\n"
    "  redis.call('DEL', KEYS[i])\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[2]) end\n"
    "return redis.call('INCR', KEYS[1])\n";

/* ---- helpers ---------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wakes the replayer (something was kept, landed, or a waiter came). */
static void wake_replayer(redis_cache *rc)
{
    pthread_mutex_lock(&rc->wmu);
    pthread_cond_signal(&rc->wcv);
    pthread_mutex_unlock(&rc->wmu);
}

/* Concatenates up to three strings into a new one (NULL parts are empty). */
static char *cat3(const char *a, const char *b, const char *c)
{
    size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0, lc = c ? strlen(c) : 0;
    char *s = malloc(la + lb + lc + 1);
    if (s == NULL)
        return NULL;
    if (la)
        memcpy(s, a, la);
    if (lb)
        memcpy(s + la, b, lb);
    if (lc)
        memcpy(s + la + lb, c, lc);
    s[la + lb + lc] = '\0';
    return s;
}

/* "<prefix>c:<TYPE>:" for a key type; NULL on a bad type or no memory. */
static char *hash_key(const redis_cache *rc, mkto_key_type t, const char *value)
{
    const char *tn = mkto_key_type_name(t);
    if (tn == NULL || value == NULL)
        return NULL;
    char head[64];
    snprintf(head, sizeof head, "c:%s:", tn);
    return cat3(gw_redis_prefix(rc->r), head, value);
}

static void free_strs(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int strlist_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    char *d = strdup(s);
    if (d == NULL)
        return -1;
    l->v[l->n++] = d;
    return 0;
}

static void strlist_clear(strlist *l)
{
    free_strs(l->v, l->n);
    memset(l, 0, sizeof *l);
}

/* A random starting epoch (1 .. 2^40), for an epoch key that is missing. */
static void epoch_seed(char out[24])
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
        v = (uint64_t)(uintptr_t)out ^ (uint64_t)time(NULL);
    snprintf(out, 24, "%llu", (unsigned long long)((v & ((1ULL << 40) - 1)) + 1));
}

static int failed(void)
{
    gw_counter_add(gw_metrics_counter("cache_redis_errors_total",
                                      "Redis cache calls that failed (the lookup bypassed the cache)",
                                      NULL),
                   1);
    return -1;
}

/* Reads an integer or numeric string reply. Returns 0 or -1. */
static int reply_u64(const redisReply *rep, uint64_t *out)
{
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer >= 0) {
        *out = (uint64_t)rep->integer;
        return 0;
    }
    if (rep->type != REDIS_REPLY_STRING || rep->len == 0 || rep->len > 20)
        return -1;
    char buf[24], *end;
    memcpy(buf, rep->str, rep->len);
    buf[rep->len] = '\0';
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Runs the invalidate script: hashes[nh] then idsets[ns]. Returns 0 or -1. */
static int run_invalidate(redis_cache *rc, char **hashes, size_t nh, char **idsets, size_t ns)
{
    const char **keys = malloc((1 + nh + ns) * sizeof *keys);
    char *ek = cat3(gw_redis_prefix(rc->r), "epoch", NULL);
    int ret = -1;
    if (keys == NULL || ek == NULL)
        goto out;
    keys[0] = ek;
    for (size_t i = 0; i < nh; i++)
        keys[1 + i] = hashes[i];
    for (size_t i = 0; i < ns; i++)
        keys[1 + nh + i] = idsets[i];
    char nk[24], seed[24];
    snprintf(nk, sizeof nk, "%zu", nh);
    epoch_seed(seed);
    const char *args[2] = {nk, seed};
    redisReply *rep = gw_redis_script(rc->r, INVALIDATE_SCRIPT, keys, 1 + nh + ns, args, NULL, 2);
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        ret = 0;
    if (rep)
        freeReplyObject(rep);
out:
    free(keys);
    free(ek);
    return ret;
}

/* Appends a backslash-escaped glob of s (for SCAN MATCH) to out. */
static void glob_escape(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    for (; *s && o + 3 < outlen; s++) {
        if (*s == '*' || *s == '?' || *s == '[' || *s == ']' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
}

/* Deletes every key matching pattern with SCAN + UNLINK. Returns 0 or -1. */
static int purge_pattern(redis_cache *rc, const char *pattern)
{
    gw_redis_conn *c = gw_redis_acquire(rc->r);
    if (c == NULL)
        return -1;
    char cursor[32] = "0";
    bool bad = false;
    do {
        redisReply *rep = redisCommandArgv(
            c->ctx, 6, (const char *[]){"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}, NULL);
        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof cursor) {
            bad = rep == NULL;
            if (rep)
                freeReplyObject(rep);
            gw_redis_release(rc->r, c, bad);
            return -1;
        }
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
        cursor[rep->element[0]->len] = '\0';
        redisReply *keys = rep->element[1];
        if (keys->elements > 0) {
            const char **argv = malloc((keys->elements + 1) * sizeof *argv);
            size_t *lens = malloc((keys->elements + 1) * sizeof *lens);
            redisReply *d = NULL;
            if (argv && lens) {
                argv[0] = "UNLINK";
                lens[0] = 6;
                for (size_t i = 0; i < keys->elements; i++) {
                    argv[1 + i] = keys->element[i]->str;
                    lens[1 + i] = keys->element[i]->len;
                }
                d = redisCommandArgv(c->ctx, (int)keys->elements + 1, argv, lens);
            }
            free(argv);
            free(lens);
            bool ok = d && d->type == REDIS_REPLY_INTEGER;
            bad = d == NULL;
            if (d)
                freeReplyObject(d);
            if (!ok) {
                freeReplyObject(rep);
                gw_redis_release(rc->r, c, bad);
                return -1;
            }
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    gw_redis_release(rc->r, c, false);
    return 0;
}

/* Replays the invalidations that could not reach Redis. Returns 0 when none
 * is left, -1 when some still are (the caller must not trust the cache). */
static int flush_pending(redis_cache *rc)
{
    if (!atomic_load(&rc->pending))
        return 0;
    /* One replay at a time; the others bypass the cache meanwhile. */
    if (pthread_mutex_trylock(&rc->mu) != 0)
        return -1;
    int ret = -1;
    if (!atomic_load(&rc->pending)) {
        ret = 0;
        goto out;
    }
    if (rc->pend_purge) {
        /* The epoch first: a lookup that read it before can no longer
         * write back while the (not atomic) scan goes on. */
        char esc[512], pat[600];
        glob_escape(gw_redis_prefix(rc->r), esc, sizeof esc);
        snprintf(pat, sizeof pat, "%sc:*", esc);
        if (run_invalidate(rc, NULL, 0, NULL, 0) < 0 || purge_pattern(rc, pat) < 0)
            goto out;
        snprintf(pat, sizeof pat, "%sid:*", esc);
        if (purge_pattern(rc, pat) < 0)
            goto out;
    } else if (run_invalidate(rc, rc->pend_hashes.v, rc->pend_hashes.n, rc->pend_idsets.v,
                              rc->pend_idsets.n) < 0) {
        goto out;
    }
    strlist_clear(&rc->pend_hashes);
    strlist_clear(&rc->pend_idsets);
    rc->pend_purge = false;
    atomic_store(&rc->pending, false);
    GW_LOG(GW_LOG_INFO, NULL, "redis cache: invalidations made while Redis was away replayed");
    ret = 0;
out:
    pthread_mutex_unlock(&rc->mu);
    if (ret == 0)
        wake_replayer(rc); /* tells the waiters */
    return ret;
}

/* Keeps an invalidation that failed, for flush_pending. */
static void keep_pending(redis_cache *rc, char **hashes, size_t nh, char **idsets, size_t ns)
{
    pthread_mutex_lock(&rc->mu);
    if (!rc->pend_purge) {
        if (rc->pend_hashes.n + rc->pend_idsets.n + nh + ns > PENDING_MAX) {
            rc->pend_purge = true;
        } else {
            for (size_t i = 0; i < nh && !rc->pend_purge; i++)
                rc->pend_purge = strlist_push(&rc->pend_hashes, hashes[i]) < 0;
            for (size_t i = 0; i < ns && !rc->pend_purge; i++)
                rc->pend_purge = strlist_push(&rc->pend_idsets, idsets[i]) < 0;
        }
        if (rc->pend_purge) {
            strlist_clear(&rc->pend_hashes);
            strlist_clear(&rc->pend_idsets);
        }
    }
    atomic_store(&rc->pending, true);
    pthread_mutex_unlock(&rc->mu);
    wake_replayer(rc);
    GW_LOG(GW_LOG_WARN, NULL, "redis cache: invalidation kept until Redis answers; the cache is "
                              "bypassed until then");
}

/* Tells every waiter whose question is answered: all of them when nothing
 * is kept any more (confirmed), those past their deadline otherwise. Moves
 * them to *done (called by the caller without wmu). Call with wmu held. */
static void settle_waiters_locked(redis_cache *rc, int64_t now, waiter **done)
{
    bool landed = !atomic_load(&rc->pending);
    waiter **pp = &rc->waiters;
    while (*pp != NULL) {
        waiter *w = *pp;
        if (landed || now >= w->deadline_ms) {
            w->confirmed = landed;
            *pp = w->next;
            w->next = *done;
            *done = w;
        } else {
            pp = &w->next;
        }
    }
}

/* Calls and frees settled waiters (all told false with force_false). */
static void tell_waiters(waiter *done, bool force_false)
{
    while (done != NULL) {
        waiter *w = done;
        done = w->next;
        w->fn(w->arg, w->confirmed && !force_false);
        free(w);
    }
}

/* The replayer: while invalidations are kept or callers wait, tries the
 * replay every REPLAY_TICK_MS and settles the waiters; sleeps otherwise. */
static void *replayer_main(void *arg)
{
    redis_cache *rc = arg;
    pthread_mutex_lock(&rc->wmu);
    while (!rc->stopping) {
        if (!atomic_load(&rc->pending) && rc->waiters == NULL) {
            pthread_cond_wait(&rc->wcv, &rc->wmu);
            continue;
        }
        pthread_mutex_unlock(&rc->wmu);
        if (atomic_load(&rc->pending))
            flush_pending(rc);
        pthread_mutex_lock(&rc->wmu);
        waiter *done = NULL;
        int64_t now = mono_ms();
        settle_waiters_locked(rc, now, &done);
        if (done != NULL) {
            rc->telling = true;
            pthread_mutex_unlock(&rc->wmu);
            tell_waiters(done, false);
            pthread_mutex_lock(&rc->wmu);
            rc->telling = false;
            pthread_cond_broadcast(&rc->told_cv);
            continue;
        }
        if (rc->stopping)
            break;
        int64_t next = now + REPLAY_TICK_MS;
        for (const waiter *w = rc->waiters; w != NULL; w = w->next)
            if (w->deadline_ms < next)
                next = w->deadline_ms;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (next - now) * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&rc->wcv, &rc->wmu, &ts);
    }
    pthread_mutex_unlock(&rc->wmu);
    return NULL;
}

/* ---- gw_cache_ops ----------------------------------------------------------- */

static int rc_get_many(gw_cache *c, mkto_key_type t, const char *fieldset,
                       const char *const *values, size_t n, char **out, uint64_t *epoch)
{
    redis_cache *rc = (redis_cache *)c;
    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    if (flush_pending(rc) < 0)
        return failed();

    int ret = -1;
    char **keys = calloc(n + 1, sizeof *keys);
    redisReply *rep = NULL;
    if (keys == NULL)
        goto out;
    keys[0] = cat3(gw_redis_prefix(rc->r), "epoch", NULL);
    if (keys[0] == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        if ((keys[1 + i] = hash_key(rc, t, values[i])) == NULL)
            goto out;
    char seed[24];
    epoch_seed(seed);
    const char *args[2] = {fieldset ? fieldset : "", seed};
    rep = gw_redis_script(rc->r, GET_SCRIPT, (const char *const *)keys, n + 1, args, NULL, 2);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != n + 1 ||
        reply_u64(rep->element[0], epoch) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        redisReply *e = rep->element[1 + i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        out[i] = malloc(e->len + 1);
        if (out[i] == NULL)
            goto out;
        memcpy(out[i], e->str, e->len);
        out[i][e->len] = '\0';
    }
    ret = 0;
out:
    if (rep)
        freeReplyObject(rep);
    free_strs(keys, n + 1);
    if (ret < 0) {
        for (size_t i = 0; i < n; i++) {
            free(out[i]);
            out[i] = NULL;
        }
        return failed();
    }
    return 0;
}

static int rc_put_many(gw_cache *c, mkto_key_type t, const char *fieldset,
                       const gw_cache_put *items, size_t n, uint64_t epoch)
{
    redis_cache *rc = (redis_cache *)c;
    if (flush_pending(rc) < 0)
        return failed();
    if (n == 0)
        return 0;

    size_t nargs = 4 + 3 * n;
    for (size_t i = 0; i < n; i++)
        nargs += items[i].nids;
    int ret = -1;
    char **keys = calloc(n + 1, sizeof *keys);
    char **owned = calloc(nargs, sizeof *owned); /* numbers formatted here */
    const char **args = calloc(nargs, sizeof *args);
    redisReply *rep = NULL;
    if (keys == NULL || owned == NULL || args == NULL)
        goto out;
    keys[0] = cat3(gw_redis_prefix(rc->r), "epoch", NULL);
    if (keys[0] == NULL)
        goto out;
    char ep[24], idttl[24];
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)epoch);
    int64_t maxttl = rc->ttl_s > rc->neg_ttl_s ? rc->ttl_s : rc->neg_ttl_s;
    snprintf(idttl, sizeof idttl, "%lld", (long long)(maxttl + ID_SET_EXTRA_S));
    char *idprefix = cat3(gw_redis_prefix(rc->r), "id:", NULL);
    if (idprefix == NULL)
        goto out;
    owned[0] = idprefix;
    args[0] = ep;
    args[1] = fieldset ? fieldset : "";
    args[2] = idprefix;
    args[3] = idttl;
    size_t a = 4;
    for (size_t i = 0; i < n; i++) {
        const gw_cache_put *it = &items[i];
        if (it->json == NULL || (keys[1 + i] = hash_key(rc, t, it->value)) == NULL)
            goto out;
        bool neg = strcmp(it->json, "[]") == 0;
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)(neg ? rc->neg_ttl_s : rc->ttl_s));
        if ((owned[a] = strdup(num)) == NULL)
            goto out;
        args[a] = owned[a];
        args[a + 1] = it->json;
        snprintf(num, sizeof num, "%zu", it->nids);
        if ((owned[a + 2] = strdup(num)) == NULL)
            goto out;
        args[a + 2] = owned[a + 2];
        a += 3;
        for (size_t j = 0; j < it->nids; j++) {
            snprintf(num, sizeof num, "%lld", (long long)it->ids[j]);
            if ((owned[a] = strdup(num)) == NULL)
                goto out;
            args[a] = owned[a];
            a++;
        }
    }
    rep = gw_redis_script(rc->r, PUT_SCRIPT, (const char *const *)keys, n + 1, args, NULL, nargs);
    if (rep && rep->type == REDIS_REPLY_INTEGER && (rep->integer == 0 || rep->integer == 1))
        ret = (int)rep->integer;
out:
    if (rep)
        freeReplyObject(rep);
    free_strs(keys, n + 1);
    free_strs(owned, nargs);
    free(args);
    return ret < 0 ? failed() : ret;
}

static int rc_invalidate(gw_cache *c, const gw_cache_key *keys, size_t nkeys,
                         const int64_t *ids, size_t nids)
{
    redis_cache *rc = (redis_cache *)c;
    /* Hashes: the given keys, and the IDNUM entry of each id. */
    size_t nh = nkeys + nids;
    char **hashes = calloc(nh ? nh : 1, sizeof *hashes);
    char **idsets = calloc(nids ? nids : 1, sizeof *idsets);
    int ret = -1;
    bool built = false;
    if (hashes == NULL || idsets == NULL)
        goto out;
    for (size_t i = 0; i < nkeys; i++)
        if ((hashes[i] = hash_key(rc, keys[i].type, keys[i].value)) == NULL)
            goto out;
    for (size_t i = 0; i < nids; i++) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)ids[i]);
        if ((hashes[nkeys + i] = hash_key(rc, MKTO_KEY_IDNUM, num)) == NULL ||
            (idsets[i] = cat3(gw_redis_prefix(rc->r), "id:", num)) == NULL)
            goto out;
    }
    built = true;
    if (flush_pending(rc) == 0 && run_invalidate(rc, hashes, nh, idsets, nids) == 0)
        ret = 0;
out:
    if (ret < 0) {
        if (built)
            keep_pending(rc, hashes, nh, idsets, nids);
        else
            keep_pending(rc, NULL, PENDING_MAX + 1, NULL, 0); /* no memory: purge later */
    }
    free_strs(hashes, nh);
    free_strs(idsets, nids);
    return ret < 0 ? failed() : 0;
}

static int rc_await(gw_cache *c, int64_t deadline_ms, gw_cache_settled_fn fn, void *arg)
{
    redis_cache *rc = (redis_cache *)c;
    if (fn == NULL)
        return -1;
    pthread_mutex_lock(&rc->wmu);
    int ret = -1;
    if (rc->no_waits || rc->stopping || !rc->replayer_on)
        goto out;
    ret = 1;
    if (!atomic_load(&rc->pending))
        goto out;
    ret = -1;
    waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        goto out;
    w->deadline_ms = deadline_ms;
    w->fn = fn;
    w->arg = arg;
    w->next = rc->waiters;
    rc->waiters = w;
    pthread_cond_signal(&rc->wcv);
    ret = 0;
out:
    pthread_mutex_unlock(&rc->wmu);
    return ret;
}

/* Ends the waits; returns once no waiter is being told any more either,
 * so that no request is resumed after it (the server may stop next). */
static void rc_stop_waits(gw_cache *c)
{
    redis_cache *rc = (redis_cache *)c;
    pthread_mutex_lock(&rc->wmu);
    rc->no_waits = true;
    waiter *done = rc->waiters;
    rc->waiters = NULL;
    while (rc->telling)
        pthread_cond_wait(&rc->told_cv, &rc->wmu);
    pthread_mutex_unlock(&rc->wmu);
    tell_waiters(done, true);
}

/* Frees the cache; waiters not told yet are dropped untold (call
 * stop_waits first). Copes with a half-built one (gw_cache_redis_new). */
static void rc_destroy(gw_cache *c)
{
    redis_cache *rc = (redis_cache *)c;
    if (rc == NULL)
        return;
    if (rc->replayer_on) {
        pthread_mutex_lock(&rc->wmu);
        rc->stopping = true;
        pthread_cond_signal(&rc->wcv);
        pthread_mutex_unlock(&rc->wmu);
        pthread_join(rc->replayer, NULL);
    }
    while (rc->waiters != NULL) {
        waiter *w = rc->waiters;
        rc->waiters = w->next;
        free(w);
    }
    strlist_clear(&rc->pend_hashes);
    strlist_clear(&rc->pend_idsets);
    pthread_cond_destroy(&rc->told_cv);
    pthread_cond_destroy(&rc->wcv);
    pthread_mutex_destroy(&rc->wmu);
    pthread_mutex_destroy(&rc->mu);
    gw_redis_unref(rc->r);
    free(rc);
}

static const gw_cache_ops redis_cache_ops = {
    .name = "redis",
    .get_many = rc_get_many,
    .put_many = rc_put_many,
    .invalidate = rc_invalidate,
    .await_invalidations = rc_await,
    .stop_waits = rc_stop_waits,
    .destroy = rc_destroy,
};

gw_cache *gw_cache_redis_new(gw_redis *r, int64_t ttl_s, int64_t negative_ttl_s)
{
    if (r == NULL || ttl_s < 1 || negative_ttl_s < 1)
        return NULL;
    redis_cache *rc = calloc(1, sizeof *rc);
    if (rc == NULL)
        return NULL;
    pthread_condattr_t ca;
    bool ca_ok = pthread_condattr_init(&ca) == 0;
    bool ok = ca_ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    bool mu_ok = ok && pthread_mutex_init(&rc->mu, NULL) == 0;
    bool wmu_ok = mu_ok && pthread_mutex_init(&rc->wmu, NULL) == 0;
    bool cv_ok = wmu_ok && pthread_cond_init(&rc->wcv, &ca) == 0;
    bool told_ok = cv_ok && pthread_cond_init(&rc->told_cv, NULL) == 0;
    if (ca_ok)
        pthread_condattr_destroy(&ca);
    if (!told_ok) {
        if (cv_ok)
            pthread_cond_destroy(&rc->wcv);
        if (wmu_ok)
            pthread_mutex_destroy(&rc->wmu);
        if (mu_ok)
            pthread_mutex_destroy(&rc->mu);
        free(rc);
        return NULL;
    }
    rc->base.ops = &redis_cache_ops;
    rc->r = gw_redis_ref(r);
    rc->ttl_s = ttl_s;
    rc->neg_ttl_s = negative_ttl_s;
    atomic_init(&rc->pending, false);
    rc->replayer_on = true;
    if (pthread_create(&rc->replayer, NULL, replayer_main, rc) != 0) {
        rc->replayer_on = false;
        rc_destroy(&rc->base);
        return NULL;
    }
    return &rc->base;
}
