/* gateway/store/backends.c - the factory: in-process or Redis backends, by
 * the settings.
 *
 * redis.url empty: the in-process LRU cache and limiter. Set: the Redis cache
 * and the Redis limiter behind the fallback limiter (this replica's share of
 * what the budget has left while Redis does not answer), all on one Redis
 * connection manager that each backend holds a reference to.
 */
#include "gateway/store/backends.h"

#include <stdio.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/store/redis.h"

/* Margin added to one SOAP call's deadline to make a limiter lease. */
#define LEASE_MARGIN_MS 2000

gw_limit_params gw_limit_params_from_config(const gw_config *cfg)
{
    gw_limit_params p = {
        .calls_per_window = cfg->rl_calls_per_window,
        .window_ms = cfg->rl_window_seconds * 1000,
        .max_concurrent = cfg->rl_max_concurrent,
        .daily_quota = cfg->rl_daily_quota,
    };
    return p;
}

int64_t gw_redis_lease_ms(const gw_config *cfg)
{
    int64_t t = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
    return t + LEASE_MARGIN_MS;
}

int gw_backends_create(const gw_config *cfg, gw_cache **cache, gw_limiter **limiter, gw_err *err)
{
    gw_cache *ca = NULL;
    gw_limiter *rl = NULL, *li = NULL;
    gw_redis *r = NULL;
    int rc = -1;
    gw_limit_params p = gw_limit_params_from_config(cfg);

    *cache = NULL;
    *limiter = NULL;
    if (cfg->redis_url == NULL || cfg->redis_url[0] == '\0') {
        ca = gw_cache_local_new(cfg->cache_max_entries, cfg->cache_ttl_seconds,
                                cfg->cache_negative_ttl_seconds);
        li = gw_limiter_local_new(&p);
        if (ca == NULL || li == NULL) {
            gw_err_set(err, 0, "cannot create the in-process cache or limiter (bad settings?)");
            goto out;
        }
        rc = 0;
        goto out;
    }

    gw_redis_opts o;
    memset(&o, 0, sizeof o);
    if (gw_config_redis_addr(cfg, &o.addr) != 0) {
        gw_err_set(err, 0, "redis.url: malformed");
        goto out;
    }
    o.key_prefix = cfg->redis_key_prefix ? cfg->redis_key_prefix : "mktgw:";
    o.connect_timeout_ms = cfg->redis_connect_timeout_ms > 0 ? cfg->redis_connect_timeout_ms : 500;
    o.command_timeout_ms = cfg->redis_command_timeout_ms > 0 ? cfg->redis_command_timeout_ms : 500;
    r = gw_redis_new(&o);
    explicit_bzero(o.addr.password, sizeof o.addr.password);
    if (r == NULL) {
        gw_err_set(err, 0, "cannot create the Redis client (bad redis.* settings?)");
        goto out;
    }
    ca = gw_cache_redis_new(r, cfg->cache_ttl_seconds, cfg->cache_negative_ttl_seconds);
    rl = gw_limiter_redis_new(r, &p, gw_redis_lease_ms(cfg));
    if (ca == NULL || rl == NULL) {
        gw_err_set(err, 0, "cannot create the Redis cache or limiter (bad settings?)");
        goto out;
    }
    li = gw_limiter_fallback_new(rl, cfg->rl_fallback_share);
    rl = NULL; /* owned by li now (or freed by it on failure) */
    if (li == NULL) {
        gw_err_set(err, 0, "out of memory");
        goto out;
    }
    GW_LOG(GW_LOG_INFO,
           json_pack("{s:s, s:i, s:i, s:s, s:f}", "host", o.addr.host, "port", o.addr.port, "db",
                     o.addr.db, "prefix", o.key_prefix, "fallback_share", cfg->rl_fallback_share),
           "cache and limiter: Redis (shared by every replica)");
    rc = 0;
out:
    if (rl)
        rl->ops->destroy(rl);
    if (rc == 0) {
        *cache = ca;
        *limiter = li;
    } else {
        if (ca)
            ca->ops->destroy(ca);
        if (li)
            li->ops->destroy(li);
    }
    gw_redis_unref(r);
    return rc;
}
