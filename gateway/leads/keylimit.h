/* gateway/leads/keylimit.h - per-API-key fairness for requests that need Marketo.
 *
 * One frontend must not eat the whole Marketo budget. Each configured API
 * key gets a token bucket of auth.key_calls_per_minute requests (capacity
 * and refill per minute); a request that needs Marketo (a cache miss, a
 * list page, a sync) takes one token when it first goes upstream; cache
 * hits and bad requests cost nothing. Without a token the request is
 * answered 429 with RateLimit / RateLimit-Policy headers (IETF draft
 * "RateLimit header fields for HTTP") and Retry-After, and nothing is sent.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef GW_KEYLIMIT_H
#define GW_KEYLIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_keylimit gw_keylimit;

/* A bucket per key index 0..nkeys-1, per_minute tokens each. Returns NULL
 * when per_minute <= 0 (fairness off) or on no memory. */
gw_keylimit *gw_keylimit_new(size_t nkeys, int64_t per_minute);

/* Takes a token for key at now_ms (monotonic). Returns 0 when granted, 1
 * when the key's bucket is empty. *remaining gets the whole tokens left,
 * *reset_s the seconds until the next token (>= 1 when refused, 0 when
 * tokens are left). An out-of-range key is granted (no bucket). */
int gw_keylimit_take(gw_keylimit *kl, size_t key, int64_t now_ms, int64_t *remaining,
                     int64_t *reset_s);

/* The configured quota per minute (for RateLimit-Policy). */
int64_t gw_keylimit_quota(const gw_keylimit *kl);

void gw_keylimit_free(gw_keylimit *kl);

#endif /* GW_KEYLIMIT_H */
