/* gateway/store/backends.h - the cache and the limiter the gateway runs with,
 * chosen and built from the settings.
 *
 * The one place that knows every backend: the in-process cache and limiter
 * (cache.h, ratelimit.h) and the Redis ones (redis.h). No backend builds
 * another; main.c calls gw_backends_create() once at start.
 */
#ifndef GW_BACKENDS_H
#define GW_BACKENDS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "gateway/err.h"
#include "gateway/store/cache.h"
#include "gateway/store/ratelimit.h"

/* The budget in the settings, as limiter params. */
gw_limit_params gw_limit_params_from_config(const gw_config *cfg);

/* How long a Redis lease lives: one SOAP call's deadline plus a margin. */
int64_t gw_redis_lease_ms(const gw_config *cfg);

/* Builds the cache and the limiter from the settings. redis_url empty: the
 * in-process cache and limiter. Otherwise the Redis cache and the fallback
 * limiter (Redis, then rl_fallback_share of what the budget has left). Redis
 * need not be up at start: both backends reconnect by themselves. Returns 0,
 * or -1 with a message in err (no secret in it) and nothing allocated.
 * Destroy with (*cache)->ops->destroy and (*limiter)->ops->destroy. */
int gw_backends_create(const gw_config *cfg, gw_cache **cache, gw_limiter **limiter, gw_err *err);

#endif /* GW_BACKENDS_H */
