/* config/config.h - the gateway's settings: one table, an INI file, the environment.
 *
 * Order of precedence: built-in default < INI file (--config FILE) <
 * environment variable SECTION_KEY (upper case: [marketo] soap_endpoint ->
 * MARKETO_SOAP_ENDPOINT). Every key lives in one table in config.c with its
 * type, default, min, max and validator; an unknown key, a bad number or an
 * out-of-range value fails the load with a message naming the key.
 *
 * Ownership: gw_config owns every string in it; gw_config_free() releases
 * them and copes with a zeroed or half-loaded struct.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gw_config {
    /* [marketo] */
    char *soap_endpoint;          /* SOAP endpoint URL; NULL/empty: not configured (readyz 503) */
    char *user_id;                /* mktowsUserId */
    char *encryption_key;         /* HMAC-SHA1 key (secret) */
    int64_t timeout_ms;           /* one SOAP call's deadline (30000) */
    int64_t max_response_bytes;   /* cap on one SOAP response body (64 MiB) */
    int64_t retry_max_attempts;   /* attempts per SOAP call incl. the first (3) */
    bool tls_verify;              /* verify the upstream's TLS certificate (true) */

    /* [gateway] */
    char *listen;                 /* "host:port" (127.0.0.1:8080) */
    char *metrics_listen;         /* "host:port" of a GET /metrics-only listener; "": /metrics on listen */
    int64_t threads;              /* HTTP worker threads (0: number of cores) */
    int64_t max_body_bytes;       /* request body cap (8 MiB) */
    int64_t max_body_total_bytes; /* request body bytes held at once, all connections (32 MiB) */
    int64_t max_keys;             /* keys in one lookup before 400 (1000) */
    int64_t max_page_size;        /* largest limit= (1000) */
    int64_t default_page_size;    /* limit when none given (100) */
    int64_t sync_batch_size;      /* leads per syncMultipleLeads call (300, max 300) */
    int64_t max_sync_leads;       /* leads in one POST /leads/sync (10000) */
    int64_t connection_limit;     /* open HTTP connections (1024) */
    int64_t idle_timeout_s;       /* per-connection idle timeout (30) */
    int64_t header_timeout_ms;    /* a request's header block must be in within this (10000) */
    int64_t body_timeout_ms;      /* a request's body must be in within this of its headers (60000) */
    int64_t max_connections_per_client; /* open connections per client address (0: no cap) */
    int64_t drain_timeout_ms;     /* shutdown: longest wait for in-flight work (20000) */
    int64_t request_timeout_ms;   /* a whole request's deadline, all SOAP calls (60000) */
    int64_t coalesce_window_ms;   /* a key lookup waits this long for others to merge with (0) */
    char *log_level;              /* debug|info|warn|error (info) */

    /* [auth] */
    char *api_keys;               /* comma-separated inbound keys (secret) */
    bool auth_disabled;           /* true turns auth off; only with api_keys empty */
    int64_t auth_key_calls_per_minute; /* per-API-key requests needing Marketo per minute (0: off) */

    /* [cursor] */
    char *cursor_secret;          /* MAC key (secret); empty: random per process */
    int64_t cursor_ttl_seconds;   /* cursor lifetime (3600) */

    /* [redis] */
    char *redis_url;              /* redis://[:password@]host:port/db; empty: in-process */
    char *redis_password;         /* REDIS_PASSWORD (secret), instead of one in the URL */
    char *redis_key_prefix;       /* prefix of every key ("mktgw:") */
    int64_t redis_connect_timeout_ms; /* (500) */
    int64_t redis_command_timeout_ms; /* (500) */
    int64_t redis_invalidation_wait_ms; /* longest a sync waits for its cache invalidation (5000) */

    /* [cache] */
    int64_t cache_ttl_seconds;          /* positive entries (300) */
    int64_t cache_negative_ttl_seconds; /* "no such lead" entries (30) */
    int64_t cache_max_entries;          /* in-process LRU bound (100000) */

    /* [ratelimit] */
    int64_t rl_calls_per_window;  /* outbound calls per rolling window (100) */
    int64_t rl_window_seconds;    /* window length (20) */
    int64_t rl_max_concurrent;    /* outbound calls in flight (10) */
    int64_t rl_daily_quota;       /* outbound calls per US-Central day (10000) */
    int64_t rl_queue_timeout_ms;  /* longest wait for a slot before 429 (10000) */
    double rl_fallback_share;     /* share of the budget used while Redis is down (0.333) */

    /* [cors] */
    char *cors_allowed_origins;   /* comma-separated; "*" allowed; empty: no CORS */
} gw_config;

/* Fills cfg with defaults, then the INI file at path (NULL: none), then the
 * environment. Returns 0, or -1 with a one-line message in err naming the
 * key (and the file line for INI errors). cfg must be zeroed or freed. */
int gw_config_load(gw_config *cfg, const char *path, char *err, size_t errlen);

/* Cross-key checks done after loading (e.g. auth.disabled needs api_keys
 * empty, auth on needs at least one key). Returns 0 or -1 with err. */
int gw_config_validate(const gw_config *cfg, char *err, size_t errlen);

/* Prints the effective settings as INI, secrets shown as "****" (or "" when
 * empty). For --check-config. */
void gw_config_print(const gw_config *cfg, FILE *out);

/* Releases every string; leaves cfg zeroed. */
void gw_config_free(gw_config *cfg);

/* The settings table, for tests and tools: the number of keys, and the
 * section and key name of entry i (table order; NULL when i is out of
 * range). The environment variable of a key is SECTION_KEY in upper case. */
size_t gw_config_key_count(void);
const char *gw_config_key_section(size_t i);
const char *gw_config_key_name(size_t i);

/* Splits a validated gateway.listen value into host (brackets of an IPv6
 * literal removed) and port. Returns 0, or -1 when listen is malformed or
 * host does not fit in hostlen bytes. */
int gw_config_split_listen(const char *listen, char *host, size_t hostlen, uint16_t *port);

/* Splits a comma-separated setting (auth.api_keys, gateway.cors_allowed_origins)
 * into trimmed (spaces, tabs), non-empty malloc'd copies: *out gets the array
 * and *n its length (NULL and 0 for NULL or an empty list). Returns 0, or -1
 * out of memory; what was split so far is then left in *out for the caller
 * to free, as on success. */
int gw_config_split_list(const char *in, char ***out, size_t *n);

/* A parsed redis.url: redis://[[user]:password@]host[:port][/db]. */
typedef struct gw_redis_addr {
    char host[256];               /* host name or IP literal, brackets removed */
    int port;                     /* TCP port (6379 when the URL has none) */
    int db;                       /* database number (0 when the URL has none) */
    char username[128];           /* ACL user from the URL ("" for the default user) */
    char password[256];           /* from the URL, else redis.password; "" for none (secret) */
} gw_redis_addr;

/* Parses cfg->redis_url into out, taking the password from the URL or,
 * when the URL has none, from cfg->redis_password. Returns 0; 1 when no
 * Redis is configured (redis_url empty); -1 when the URL is malformed. */
int gw_config_redis_addr(const gw_config *cfg, gw_redis_addr *out);

#endif /* GW_CONFIG_H */
