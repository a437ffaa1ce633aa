/* tests/fuzz/fuzz_cursor.c - cursor tokens: decode hostile bytes, round-trip ours.
 *
 * Input, used twice:
 *  1. as a token (NUL-terminated copy) for gw_cursor_decode() with a fixed
 *     key at a fixed time: must not crash; on OK the fields are readable;
 *  2. as the payload of a token signed with the right key (so the JSON
 *     payload parser, normally behind the MAC, is fuzzed too): must not
 *     crash; on OK the fields are readable and the cursor is not expired;
 *  3. when at least 17 bytes: bytes 0..7 are window_oldest, 8..15
 *     expires_at, byte 16 splits the rest into binding and stream position.
 *     gw_cursor_encode() then gw_cursor_decode() must give the same fields
 *     back (EXPIRED when expires_at is in the past), and a token with one
 *     character changed must not decode as OK with different fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gateway/leads/cursor.h"
#include "gateway/leads/query.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1750000000LL

/* A little-endian int64 from 8 bytes. */
static int64_t get_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* Decodes the raw input as a token. */
static void decode_raw(const gw_cursor_key *k, const uint8_t *data, size_t size)
{
    char *tok = fuzz_strndup(data, size);
    gw_cursor c;
    memset(&c, 0, sizeof c);
    gw_cursor_status st = gw_cursor_decode(k, tok, NOW, &c);
    if (st == GW_CURSOR_OK) {
        if (c.binding == NULL || c.stream_position == NULL)
            fuzz_fail("decoded cursor with a NULL string");
        (void)strlen(c.binding);
        (void)strlen(c.stream_position);
        if (c.expires_at < NOW)
            fuzz_fail("OK for a cursor that expired at %lld", (long long)c.expires_at);
    } else if (st != GW_CURSOR_MALFORMED && st != GW_CURSOR_EXPIRED) {
        fuzz_fail("status %d is not a gw_cursor_status", (int)st);
    }
    gw_cursor_clear(&c);
    free(tok);
}

/* base64url without padding of in[0..n) into out (room for 4*(n+2)/3+1).
 * Returns the length. */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
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
    return (size_t)len;
}

/* Signs the raw input as a payload with the cursor key and decodes it. */
static void decode_forged(const gw_cursor_key *k, const uint8_t *data, size_t size)
{
    if (size == 0 || size > 2900)
        return;
    static char tok[GW_CURSOR_MAX_LEN + 64];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), k->key, sizeof k->key, data, size, mac, &maclen) == NULL)
        fuzz_fail("HMAC failed");
    size_t o = b64url(data, size, tok);
    tok[o++] = '.';
    b64url(mac, maclen, tok + o);
    gw_cursor c;
    memset(&c, 0, sizeof c);
    gw_cursor_status st = gw_cursor_decode(k, tok, NOW, &c);
    if (st == GW_CURSOR_OK) {
        if (c.binding == NULL || c.stream_position == NULL)
            fuzz_fail("decoded forged cursor with a NULL string");
        (void)strlen(c.binding);
        (void)strlen(c.stream_position);
        if (c.expires_at <= NOW)
            fuzz_fail("OK for a cursor that expired at %lld", (long long)c.expires_at);
    } else if (st != GW_CURSOR_MALFORMED && st != GW_CURSOR_EXPIRED) {
        fuzz_fail("status %d is not a gw_cursor_status", (int)st);
    }
    gw_cursor_clear(&c);
}

/* Encodes a cursor built from the input and decodes it back. */
static void round_trip(const gw_cursor_key *k, const uint8_t *data, size_t size)
{
    gw_cursor in = {0};
    /* window_oldest is an epoch second or 0: the decoder refuses negatives. */
    in.window_oldest = get_i64(data) & INT64_MAX;
    in.expires_at = get_i64(data + 8);
    size_t rest = size - 17;
    size_t split = rest * data[16] / 255u;
    in.binding = fuzz_strndup(data + 17, split);
    in.stream_position = fuzz_strndup(data + 17 + split, rest - split);

    char *tok = gw_cursor_encode(k, &in);
    size_t bl = strlen(in.binding);
    size_t pl = strlen(in.stream_position);
    /* Short valid UTF-8 always fits: 6 bytes per escaped byte, base64, MAC. */
    int must_fit = bl + pl <= 300 && gw_utf8_valid(in.binding, bl) &&
                   gw_utf8_valid(in.stream_position, pl);
    if (tok == NULL) {
        if (must_fit)
            fuzz_fail("encode failed for a %zu+%zu byte UTF-8 cursor", bl, pl);
        goto out;
    }
    if (strlen(tok) > GW_CURSOR_MAX_LEN)
        fuzz_fail("token of %zu bytes", strlen(tok));

    gw_cursor c;
    memset(&c, 0, sizeof c);
    gw_cursor_status st = gw_cursor_decode(k, tok, NOW, &c);
    if (in.expires_at < NOW) {
        if (st != GW_CURSOR_EXPIRED)
            fuzz_fail("cursor expired at %lld decodes as %d", (long long)in.expires_at,
                      (int)st);
    } else if (in.expires_at > NOW) {
        if (st != GW_CURSOR_OK)
            fuzz_fail("fresh cursor (expires %lld) decodes as %d", (long long)in.expires_at,
                      (int)st);
    }
    if (st == GW_CURSOR_OK &&
        (!fuzz_str_eq(c.binding, in.binding) || !fuzz_str_eq(c.stream_position,
                                                             in.stream_position) ||
         c.window_oldest != in.window_oldest || c.expires_at != in.expires_at))
        fuzz_fail("cursor does not round-trip");
    gw_cursor_clear(&c);

    /* Flip one character of the token (chosen by the input): never OK with
     * other contents than ours. */
    size_t tl = strlen(tok);
    if (tl > 0) {
        size_t at = (size_t)(in.window_oldest & 0x7fffffff) % tl;
        tok[at] = tok[at] == 'A' ? 'B' : 'A';
        memset(&c, 0, sizeof c);
        st = gw_cursor_decode(k, tok, NOW, &c);
        if (st == GW_CURSOR_OK &&
            (!fuzz_str_eq(c.binding, in.binding) ||
             !fuzz_str_eq(c.stream_position, in.stream_position) ||
             c.window_oldest != in.window_oldest || c.expires_at != in.expires_at))
            fuzz_fail("tampered token accepted with other contents");
        gw_cursor_clear(&c);
    }
out:
    free(tok);
    free(in.binding);
    free(in.stream_position);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gw_cursor_key key;
    static bool inited;
    if (!inited) {
        if (gw_cursor_key_init(&key, "fuzz-cursor-secret") != 0)
            fuzz_fail("gw_cursor_key_init failed");
        inited = true;
    }
    decode_raw(&key, data, size);
    decode_forged(&key, data, size);
    if (size >= 17)
        round_trip(&key, data, size);
    return 0;
}
