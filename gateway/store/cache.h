/* gateway/store/cache.h - the lookup cache: per key type, key value and field set.
 *
 * Only key lookups are cached (list and updated-at pages are not). An entry
 * is the JSON array of the lead objects that matched one key (gateway JSON
 * shape, see leadjson.h); "[]" is a negative entry ("no such lead") kept for
 * the negative TTL.
 *
 * Freshness: the cache never serves data older than a sync that went
 * through any gateway sharing it. invalidate() drops every field-set variant
 * of the given keys and every entry holding one of the given lead ids, and
 * advances the epoch. get_many() reports the epoch it read; put_many() with
 * that epoch stores nothing if any invalidation happened in between, so a
 * lookup that was in flight during a sync cannot write pre-sync data back.
 * A shared backend may fail to take an invalidation (Redis stalled): it is
 * then kept and replayed, and await_invalidations() lets the sync wait for
 * it before answering.
 *
 * Key values are compared byte for byte: callers normalise first
 * (mkto_key_normalize, marketo/leadkey.h). Thread safety: every function may
 * be called from any thread.
 */
#ifndef GW_CACHE_H
#define GW_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "soap/soap.h"

typedef struct gw_cache gw_cache;

/* Told once whether the invalidations a caller waited for reached the
 * backend (confirmed) or not before its deadline. */
typedef void (*gw_cache_settled_fn)(void *arg, bool confirmed);

/* One entry to store. */
typedef struct gw_cache_put {
    const char *value;   /* key value (normalised) */
    const char *json;    /* JSON array text of matching leads; "[]" negative */
    const int64_t *ids;  /* lead ids inside json, for invalidation by id */
    size_t nids;         /* entries in ids */
} gw_cache_put;

/* One key to invalidate. */
typedef struct gw_cache_key {
    mkto_key_type type;  /* key type */
    const char *value;   /* key value (normalised) */
} gw_cache_key;

typedef struct gw_cache_ops {
    const char *name; /* "local", "redis" */
    /* Reads n keys of one type under one field set ("" = all fields). out[i]
     * gets a malloc'd NUL-terminated JSON text (caller frees) or NULL on a
     * miss. *epoch gets the epoch to pass to put_many. Returns 0, or -1 when
     * the backend is unavailable (every out[i] NULL: the caller bypasses). */
    int (*get_many)(gw_cache *c, mkto_key_type t, const char *fieldset,
                    const char *const *values, size_t n, char **out, uint64_t *epoch);
    /* Stores n entries (TTL, or negative TTL for "[]") unless the epoch has
     * moved since *epoch was read. Returns 0 stored, 1 skipped (stale), -1 error. */
    int (*put_many)(gw_cache *c, mkto_key_type t, const char *fieldset,
                    const gw_cache_put *items, size_t n, uint64_t epoch);
    /* Drops every variant of the keys and every entry holding one of ids;
     * advances the epoch (even with nothing to drop). Returns 0, or -1 when
     * the backend did not confirm it: the invalidation is then kept and
     * replayed in the background, and this replica serves no hit until it
     * landed (await_invalidations tells when). */
    int (*invalidate)(gw_cache *c, const gw_cache_key *keys, size_t nkeys,
                      const int64_t *ids, size_t nids);
    /* Calls fn(arg, confirmed) once, from a thread of the cache: as soon as
     * no invalidation of this replica is still waiting to reach the backend
     * (confirmed true), or at deadline_ms (monotonic ms, gw_now_ms's clock)
     * if one still is (false). Returns 0 when fn will be called, 1 when
     * nothing waits now (fn is not called), -1 when it cannot wait (no
     * memory, shutting down; fn is not called). NULL in backends whose
     * invalidations cannot fail (in process). */
    int (*await_invalidations)(gw_cache *c, int64_t deadline_ms, gw_cache_settled_fn fn,
                               void *arg);
    /* Ends every wait now (each fn gets false) and refuses new ones: for
     * shutdown, before the HTTP server stops. NULL: nothing to end. */
    void (*stop_waits)(gw_cache *c);
    /* Frees the cache. */
    void (*destroy)(gw_cache *c);
} gw_cache_ops;

struct gw_cache {
    const gw_cache_ops *ops; /* backend's functions; first member of every backend */
};

/* In-process backend: LRU bounded to max_entries, TTLs in seconds. */
gw_cache *gw_cache_local_new(int64_t max_entries, int64_t ttl_s, int64_t negative_ttl_s);

/* Test hook: makes a local cache read time (monotonic ms) from now_ms
 * instead of CLOCK_MONOTONIC; NULL restores the real clock. Ignored for
 * other backends. Call before the cache is shared between threads. */
void gw_cache_local_set_clock(gw_cache *c, int64_t (*now_ms)(void));

/* Entries held by a local cache now (expired ones not yet dropped
 * included); 0 for other backends. For tests and metrics. */
size_t gw_cache_local_size(gw_cache *c);

/* Current invalidation epoch of a local cache (starts at 1); 0 for other
 * backends. For tests. */
uint64_t gw_cache_local_epoch(gw_cache *c);

#endif /* GW_CACHE_H */
