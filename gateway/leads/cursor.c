/* gateway/leads/cursor.c - opaque paging tokens: encode, authenticate, verify.
 *
 * Payload: compact JSON {"v":1,"b":binding,"p":stream_position,
 * "w":window_oldest,"e":expires_at}. Token: base64url(payload) "."
 * base64url(HMAC-SHA256(key, payload)), unpadded. Decoding checks, in this
 * order: length and alphabet, canonical base64url of both halves, the MAC
 * (constant time) over the decoded payload, and only then parses the JSON,
 * so nothing an attacker wrote reaches the JSON parser.
 */
#include "gateway/leads/cursor.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define MAC_LEN 32
#define MAC_B64_LEN 43 /* unpadded base64 of 32 bytes */

int gw_cursor_key_init(gw_cursor_key *k, const char *secret)
{
    if (k == NULL)
        return -1;
    if (secret == NULL || secret[0] == '\0')
        return RAND_bytes(k->key, sizeof(k->key)) == 1 ? 0 : -1;
    SHA256((const unsigned char *)secret, strlen(secret), k->key);
    return 0;
}

/* Writes unpadded base64url of in[0..n) into a malloc'd string; NULL on no memory. */
static char *b64url_encode(const unsigned char *in, size_t n)
{
    if (n > (size_t)GW_CURSOR_MAX_LEN * 2)
        return NULL;
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return out;
}

/* Decodes unpadded base64url in[0..n) into out (capacity cap). Refuses
 * non-canonical encodings (length 1 mod 4, non-zero unused bits), so that
 * each byte string has exactly one token. Returns the length or -1. */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 == 1 || n > (size_t)GW_CURSOR_MAX_LEN)
        return -1;
    size_t padded = n + (4 - n % 4) % 4;
    if (padded / 4 * 3 > cap)
        return -1;
    char buf[GW_CURSOR_MAX_LEN + 4];
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '-')
            ch = '+';
        else if (ch == '_')
            ch = '/';
        buf[i] = ch;
    }
    for (size_t i = n; i < padded; i++)
        buf[i] = '=';
    int len = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)padded);
    if (len < 0)
        return -1;
    len -= (int)(padded - n); /* EVP_DecodeBlock counts padding as zero bytes */
    if (len < 0)
        return -1;
    /* Canonical form: re-encoding gives the input back. */
    char *again = b64url_encode(out, (size_t)len);
    if (again == NULL)
        return -1;
    int same = strlen(again) == n && memcmp(again, in, n) == 0;
    free(again);
    return same ? len : -1;
}

char *gw_cursor_encode(const gw_cursor_key *k, const gw_cursor *c)
{
    char *token = NULL;
    char *payload = NULL;
    char *p64 = NULL;
    char *m64 = NULL;
    json_t *obj = NULL;

    if (k == NULL || c == NULL || c->binding == NULL)
        return NULL;
    obj = json_pack("{s:i, s:s, s:s, s:I, s:I}", "v", 1, "b", c->binding, "p",
                    c->stream_position != NULL ? c->stream_position : "", "w",
                    (json_int_t)c->window_oldest, "e", (json_int_t)c->expires_at);
    if (obj == NULL)
        goto out;
    payload = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (payload == NULL)
        goto out;
    size_t plen = strlen(payload);
    if (4 * ((plen + 2) / 3) + 1 + MAC_B64_LEN > GW_CURSOR_MAX_LEN)
        goto out;

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), k->key, sizeof(k->key), (const unsigned char *)payload, plen, mac,
             &maclen) == NULL ||
        maclen != MAC_LEN)
        goto out;
    p64 = b64url_encode((const unsigned char *)payload, plen);
    m64 = b64url_encode(mac, maclen);
    if (p64 == NULL || m64 == NULL)
        goto out;
    size_t p64len = strlen(p64);
    size_t m64len = strlen(m64);
    if (p64len + 1 + m64len > GW_CURSOR_MAX_LEN)
        goto out;
    token = malloc(p64len + 1 + m64len + 1);
    if (token == NULL)
        goto out;
    memcpy(token, p64, p64len);
    token[p64len] = '.';
    memcpy(token + p64len + 1, m64, m64len + 1);
out:
    json_decref(obj);
    free(payload);
    free(p64);
    free(m64);
    return token;
}

/* Whether ch belongs to the unpadded base64url alphabet. */
static int is_b64url(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

/* Parses the authenticated payload into out. Returns OK, EXPIRED or MALFORMED. */
static gw_cursor_status parse_payload(const unsigned char *payload, size_t len, int64_t now_s,
                                      gw_cursor *out)
{
    gw_cursor_status st = GW_CURSOR_MALFORMED;
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL || !json_is_object(obj) || json_object_size(obj) != 5)
        goto out;
    json_t *v = json_object_get(obj, "v");
    json_t *b = json_object_get(obj, "b");
    json_t *p = json_object_get(obj, "p");
    json_t *w = json_object_get(obj, "w");
    json_t *e = json_object_get(obj, "e");
    if (!json_is_integer(v) || json_integer_value(v) != 1 || !json_is_string(b) ||
        !json_is_string(p) || !json_is_integer(w) || json_integer_value(w) < 0 ||
        !json_is_integer(e))
        goto out;
    if (json_integer_value(e) <= now_s) {
        st = GW_CURSOR_EXPIRED;
        goto out;
    }
    out->binding = strdup(json_string_value(b));
    out->stream_position = strdup(json_string_value(p));
    if (out->binding == NULL || out->stream_position == NULL) {
        gw_cursor_clear(out);
        goto out;
    }
    out->window_oldest = json_integer_value(w);
    out->expires_at = json_integer_value(e);
    st = GW_CURSOR_OK;
out:
    json_decref(obj);
    return st;
}

gw_cursor_status gw_cursor_decode(const gw_cursor_key *k, const char *token, int64_t now_s,
                                  gw_cursor *out)
{
    if (k == NULL || token == NULL || out == NULL)
        return GW_CURSOR_MALFORMED;
    memset(out, 0, sizeof(*out));

    size_t len = strnlen(token, GW_CURSOR_MAX_LEN + 1);
    if (len == 0 || len > GW_CURSOR_MAX_LEN)
        return GW_CURSOR_MALFORMED;
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (dot != NULL)
                return GW_CURSOR_MALFORMED;
            dot = token + i;
        } else if (!is_b64url(token[i])) {
            return GW_CURSOR_MALFORMED;
        }
    }
    if (dot == NULL || dot == token)
        return GW_CURSOR_MALFORMED;
    size_t p64len = (size_t)(dot - token);
    size_t m64len = len - p64len - 1;
    if (m64len != MAC_B64_LEN)
        return GW_CURSOR_MALFORMED;

    unsigned char payload[GW_CURSOR_MAX_LEN];
    unsigned char mac[MAC_LEN + 3];
    int plen = b64url_decode(token, p64len, payload, sizeof(payload));
    int mlen = b64url_decode(dot + 1, m64len, mac, sizeof(mac));
    if (plen <= 0 || mlen != MAC_LEN)
        return GW_CURSOR_MALFORMED;

    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int wantlen = 0;
    if (HMAC(EVP_sha256(), k->key, sizeof(k->key), payload, (size_t)plen, want, &wantlen) ==
            NULL ||
        wantlen != MAC_LEN)
        return GW_CURSOR_MALFORMED;
    if (CRYPTO_memcmp(want, mac, MAC_LEN) != 0)
        return GW_CURSOR_MALFORMED;

    return parse_payload(payload, (size_t)plen, now_s, out);
}

void gw_cursor_clear(gw_cursor *c)
{
    if (c == NULL)
        return;
    free(c->binding);
    free(c->stream_position);
    memset(c, 0, sizeof(*c));
}
