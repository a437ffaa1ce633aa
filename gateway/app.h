/* gateway/app.h - the process-wide state every handler can reach.
 *
 * Built once in main() before the HTTP daemon starts, torn down after it
 * stops; handlers only read it (the atomics excepted).
 */
#ifndef GW_APP_H
#define GW_APP_H

#include <stdatomic.h>
#include <stdbool.h>

#include "config/config.h"
#include "gateway/store/cache.h"
#include "gateway/leads/cursor.h"
#include "gateway/leads/keylimit.h"
#include "gateway/leads/query.h"
#include "gateway/store/ratelimit.h"
#include "gateway/upstream/upstream.h"

typedef struct gw_app {
    const gw_config *cfg;      /* effective settings (owned by main) */
    gw_upstream *upstream;     /* the engine (owned by main) */
    gw_limiter *limiter;       /* outbound budget (owned by main) */
    gw_cache *cache;           /* lookup cache (owned by main) */
    gw_cursor_key cursor_key;  /* cursor MAC key */
    gw_query_limits qlimits;   /* from cfg, for gw_query_parse */
    char **api_keys;           /* parsed auth.api_keys (owned by main) */
    size_t napi_keys;          /* entries in api_keys */
    gw_keylimit *keylimit;     /* per-API-key budget (owned by main); NULL: off */
    bool upstream_configured;  /* marketo.soap_endpoint set */
    gw_call_limits call_limits; /* what one upstream call may carry (set with upstream;
                                 * the lead routes run only when it is configured) */
    atomic_bool draining;      /* SIGTERM seen: readyz 503, no new work */
} gw_app;

#endif /* GW_APP_H */
