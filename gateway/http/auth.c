/* gateway/http/auth.c - API keys: which configured key a request carries
 * (Authorization: Bearer or X-API-Key), compared in constant time, and the
 * per-key share of the Marketo budget (auth.key_calls_per_minute,
 * gateway/leads/keylimit.c) charged when a request first needs Marketo.
 * Calls request.c and reply.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "gateway/http/server_internal.h"
#include "gateway/log.h"

/* Which configured API key key is: its index, or -1. Compares SHA-256
 * digests with CRYPTO_memcmp against every key and picks the match without
 * a branch, so neither the key's length nor which key matched shows in the
 * timing. */
static long key_index(const gw_server *s, const char *key)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    size_t found = 0; /* index + 1 of the match, 0: none */
    if (key == NULL || *key == '\0')
        return -1;
    SHA256((const unsigned char *)key, strlen(key), d);
    for (size_t i = 0; i < s->nkeys; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(d, s->key_digests + i * SHA256_DIGEST_LENGTH,
                                           SHA256_DIGEST_LENGTH) == 0);
        found |= (0 - eq) & (i + 1);
    }
    OPENSSL_cleanse(d, sizeof d);
    return (long)found - 1;
}

/* Whether r carries a valid API key in Authorization: Bearer or X-API-Key. */
bool gw_srv_authorized(gw_req *r)
{
    const gw_server *s = r->srv;
    long idx = -1;
    if (s->auth_off)
        return true;
    const char *authz = gw_req_header(r, "Authorization");
    if (authz != NULL && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *tok = authz + 7;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        idx = key_index(s, tok);
    }
    const char *xkey = gw_req_header(r, "X-API-Key");
    if (idx < 0 && xkey != NULL)
        idx = key_index(s, xkey);
    r->key_index = idx;
    return idx >= 0;
}

bool gw_req_admit_upstream(gw_req *r)
{
    gw_keylimit *kl = r->srv->app->keylimit;
    if (r->admitted || kl == NULL || r->key_index < 0)
        return true;
    r->admitted = true;
    int64_t remaining = 0, reset_s = 0;
    int refused = gw_keylimit_take(kl, (size_t)r->key_index, gw_now_ms(), &remaining, &reset_s);
    char policy[64], state[64], retry[24];
    snprintf(policy, sizeof policy, "\"marketo\";q=%" PRId64 ";w=60", gw_keylimit_quota(kl));
    snprintf(state, sizeof state, "\"marketo\";r=%" PRId64 ";t=%" PRId64, remaining, reset_s);
    gw_req_add_header(r, "RateLimit-Policy", policy);
    gw_req_add_header(r, "RateLimit", state);
    if (!refused)
        return true;
    snprintf(retry, sizeof retry, "%" PRId64, reset_s);
    gw_req_add_header(r, "Retry-After", retry);
    gw_req_reply_problem(r, 429, "Too Many Requests",
                         "this API key has used its share of the Marketo budget "
                         "(auth.key_calls_per_minute); retry later",
                         json_pack("{s:s}", "type", "key-rate-limited"));
    return false;
}

bool gw_req_charge_upstream(gw_req *r)
{
    gw_keylimit *kl = r->srv->app->keylimit;
    if (kl == NULL || r->key_index < 0)
        return true;
    int64_t remaining = 0, reset_s = 0;
    return gw_keylimit_take(kl, (size_t)r->key_index, gw_now_ms(), &remaining, &reset_s) == 0;
}
