/* gateway/leads/cursor.h - opaque paging tokens around Marketo's streamPosition.
 *
 * A cursor is base64url(payload) "." base64url(HMAC-SHA256(secret, payload)),
 * no padding, at most GW_CURSOR_MAX_LEN bytes. The payload (JSON) carries the
 * binding (the canonical selector, fields and limit: see gw_selector_binding),
 * Marketo's stream position, the updated-at window being walked, and an
 * expiry. The MAC is compared in constant time. Tokens are authenticated,
 * not encrypted: they never carry key values (e-mails), only list names and
 * dates.
 */
#ifndef GW_CURSOR_H
#define GW_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#define GW_CURSOR_MAX_LEN 4096

typedef struct gw_cursor_key {
    unsigned char key[32]; /* HMAC-SHA256 key */
} gw_cursor_key;

typedef struct gw_cursor {
    char *binding;          /* canonical query the cursor belongs to (owned) */
    char *stream_position;  /* Marketo's streamPosition for the next call; "" none (owned) */
    int64_t window_oldest;  /* updated-at walk: oldest bound of the current window, epoch s; 0 otherwise */
    int64_t expires_at;     /* epoch seconds */
} gw_cursor;

/* Derives the key from secret (SHA-256 of it), or draws a random one when
 * secret is NULL or empty. Returns 0 or -1 (no randomness). */
int gw_cursor_key_init(gw_cursor_key *k, const char *secret);

/* Returns a malloc'd token (caller frees), or NULL if it would exceed
 * GW_CURSOR_MAX_LEN or on no memory. */
char *gw_cursor_encode(const gw_cursor_key *k, const gw_cursor *c);

typedef enum gw_cursor_status {
    GW_CURSOR_OK = 0,
    GW_CURSOR_MALFORMED = -1, /* not a token of ours: bad encoding, bad JSON, wrong MAC */
    GW_CURSOR_EXPIRED = -2,   /* authentic but past expires_at */
} gw_cursor_status;

/* Verifies and decodes token at now_s. On OK, out is filled (caller clears). */
gw_cursor_status gw_cursor_decode(const gw_cursor_key *k, const char *token, int64_t now_s,
                                  gw_cursor *out);

/* Frees the strings; leaves c zeroed. */
void gw_cursor_clear(gw_cursor *c);

#endif /* GW_CURSOR_H */
