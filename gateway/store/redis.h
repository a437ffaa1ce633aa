/* gateway/store/redis.h - the Redis backends: one cache and one outbound budget shared
 * by every gateway replica.
 *
 * gw_redis is a connection manager for one Redis server: a small pool of
 * hiredis contexts (a context is used by one thread at a time, never two),
 * AUTH and SELECT on connect, a command timeout, and a backoff after any
 * failure (100 ms doubling to 5 s, jittered) during which every call fails
 * at once without touching the network, so a dead Redis never adds a
 * timeout to each request. After the backoff the next call reconnects.
 * Health is one atomic flag, exported as the redis_up gauge and logged once
 * per transition (warn when Redis goes away, info when it is back).
 *
 * On top of it: the Redis cache (gw_cache_ops, redis_cache.c), the Redis
 * limiter (gw_limiter_ops, redis_limiter.c), and the fallback limiter that
 * uses the Redis one while Redis answers and this replica's share of what
 * the budget has left while it does not. None of them builds another:
 * gw_backends_create() (backends.h) picks and builds them from the settings.
 *
 * Metrics: redis_up (gauge 1/0), redis_errors_total (I/O and protocol
 * errors), cache_redis_errors_total (cache calls that failed: the caller
 * bypassed the cache), limiter_redis_errors_total (acquires Redis could not
 * answer), limiter_fallback_total (acquires answered by the fallback share).
 */
#ifndef GW_REDIS_H
#define GW_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config/config.h"
#include "gateway/store/cache.h"
#include "gateway/store/ratelimit.h"

typedef struct gw_redis gw_redis;

/* Connection settings of a gw_redis. */
typedef struct gw_redis_opts {
    gw_redis_addr addr;          /* host, port, db, username, password */
    const char *key_prefix;      /* prefix of every key ("mktgw:"); copied */
    int64_t connect_timeout_ms;  /* TCP connect deadline */
    int64_t command_timeout_ms;  /* one command's (or script's) deadline */
} gw_redis_opts;

/* Parses a redis:// URL (redis://[[user]:password@]host[:port][/db]) into
 * out, with the same rules as the settings loader; the password comes from
 * the URL or, when it has none, from password (NULL: none). Returns 0, or -1
 * when the URL is malformed or empty. */
int gw_redis_parse_url(const char *url, const char *password, gw_redis_addr *out);

/* Creates a connection manager. Connects lazily: the first command
 * connects, so this succeeds even while Redis is down. Returns NULL on bad
 * options or no memory. The caller holds one reference. */
gw_redis *gw_redis_new(const gw_redis_opts *o);

/* Takes one more reference (each backend built on r holds one). */
gw_redis *gw_redis_ref(gw_redis *r);

/* Drops a reference; the last one closes every connection. NULL is fine. */
void gw_redis_unref(gw_redis *r);

/* The key prefix (static for r's lifetime). */
const char *gw_redis_prefix(const gw_redis *r);

/* Whether the last attempt to talk to Redis worked (false before the first). */
bool gw_redis_is_up(const gw_redis *r);

/* A pooled connection. */
typedef struct gw_redis_conn {
    redisContext *ctx;  /* connected hiredis context, for one thread at a time */
    uint64_t gen;       /* the manager's failure generation when it connected */
    bool reused;        /* taken from the idle pool: its server may be gone since */
} gw_redis_conn;

/* Takes a connected context for the calling thread's exclusive use, or
 * returns NULL at once when Redis is in backoff or the connection attempt
 * fails (which starts a backoff). Give it back with gw_redis_release. */
gw_redis_conn *gw_redis_acquire(gw_redis *r);

/* Gives a connection back. failed: it saw an I/O or protocol error: it is
 * freed, every idle connection is dropped and a backoff starts; otherwise
 * it returns to the pool and Redis is marked up. */
void gw_redis_release(gw_redis *r, gw_redis_conn *c, bool failed);

/* Runs a Lua script: EVALSHA with its SHA-1, EVAL when Redis answers
 * NOSCRIPT. A pooled connection that the server closed while it sat idle
 * (Redis restarted: end of file or reset at once, not a timeout) is no
 * outage: the script is sent once more on a new connection. keys/args:
 * nkeys and nargs strings (args with explicit lengths in arglens, NULL for
 * NUL-terminated). Returns the reply (caller frees with
 * freeReplyObject), or NULL on an I/O failure (the backoff is started) or
 * when r is in backoff. An error reply from the script is returned as
 * such; the caller decides. */
redisReply *gw_redis_script(gw_redis *r, const char *script, const char *const *keys,
                            size_t nkeys, const char *const *args, const size_t *arglens,
                            size_t nargs);

/* Test hook: forgets the backoff so the next call tries to connect now. */
void gw_redis_reset_backoff(gw_redis *r);

/* ---- backends ------------------------------------------------------------ */

/* The Redis cache (layout in redis_cache.c). TTLs in seconds. Takes its own
 * reference on r. Returns NULL on no memory. */
gw_cache *gw_cache_redis_new(gw_redis *r, int64_t ttl_s, int64_t negative_ttl_s);

/* The Redis limiter shared by every replica using the same Redis and key
 * prefix. lease_ms: how long a slot stays held when its holder never
 * releases it (a replica that died). Takes its own reference on r. Returns
 * NULL on bad params or no memory. */
gw_limiter *gw_limiter_redis_new(gw_redis *r, const gw_limit_params *p, int64_t lease_ms);

/* The fallback limiter: asks shared (made by gw_limiter_redis_new) first
 * and, while Redis does not answer, grants from this replica's share
 * (share, clamped to (0, 1]) of what the budget has left, counting the
 * calls this replica made through Redis and what Redis last said the other
 * replicas had spent; when Redis answers again (or shows it lost its data)
 * it is told this replica's calls it did not count before anything else.
 * Details at the top of redis_limiter.c. Takes ownership of shared
 * (destroyed with it, also on failure). Returns NULL when shared is not a
 * Redis limiter, or on no memory. */
gw_limiter *gw_limiter_fallback_new(gw_limiter *shared, double share);

/* Whether the last acquire of a fallback limiter was answered by its local
 * share (false for other limiters). For tests and logs. */
bool gw_limiter_fallback_active(gw_limiter *l);

#endif /* GW_REDIS_H */
