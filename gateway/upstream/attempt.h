/* gateway/upstream/attempt.h - how one attempt ended: done, retry (after how
 * long), or give up with which outcome.
 *
 * The engine gathers the facts of a finished call (what curl said, whether
 * the request may have left, the HTTP status, how the protocol read the
 * body, Marketo's fault code) and this module applies the rules:
 * - faults: by the code's retry class in marketo/codes.h: re-sent at once
 *   with fresh credentials (20016), after a jittered backoff (20011, 10001),
 *   after at least 1 s with a Retry-After hint (20023: the rolling window;
 *   20024: 1 s); the daily quota (20015) ends FAULT with retry_after_s until
 *   the next US-Central midnight; any other code ends FAULT at once;
 * - an answer that is not the API's (an HTML error page): 5xx and 429 are
 *   retried (Retry-After honoured) and end BAD_RESPONSE "HTTP 503"; a sync
 *   only after 503 and 429 (the request was not processed); anything else
 *   ends BAD_RESPONSE at once, as does a body over the cap;
 * - transport: connect failures are retried for every kind and end
 *   UNREACHABLE; other errors and timeouts are retried for lookups only: a
 *   sync whose request may have reached Marketo is never re-sent and gets
 *   maybe_applied instead; configuration and certificate errors never heal.
 * Attempts are still bounded by the engine (marketo.retry_max_attempts and
 * the job's deadline).
 */
#ifndef GW_UPSTREAM_ATTEMPT_H
#define GW_UPSTREAM_ATTEMPT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "gateway/upstream/upstream.h"
#include "marketo/protocol.h"

/* What happened to one call. */
typedef struct gw_attempt_facts {
    gw_call_kind kind;         /* lookup or sync */
    int attempts;              /* calls made for the job so far, this one included */
    CURLcode transport;        /* CURLE_OK: an HTTP answer came */
    bool sent;                 /* some of the request may have reached the server */
    bool too_large;            /* the body passed the cap while it arrived */
    bool deadline_capped;      /* the call's timeout was the job's own deadline */
    size_t max_response;       /* the cap (for the detail text) */
    long http_status;          /* CURLE_OK: the status */
    int64_t retry_after_s;     /* CURLE_OK: the Retry-After header; 0: none */
    mkto_parsed parsed;        /* CURLE_OK: how the protocol read the body */
    const char *parse_msg;     /* FOREIGN, TOO_LARGE: the protocol's reason */
    int fault_code;            /* FAULT: Marketo's code */
} gw_attempt_facts;

/* The verdict. */
typedef struct gw_attempt {
    gw_outcome outcome;        /* the job's outcome if it ends now */
    bool retry;                /* worth another attempt */
    int64_t delay_ms;          /* wait before that attempt */
    bool maybe_applied;        /* a sync may have been applied without an answer */
    int64_t retry_after_s;     /* > 0: the hint to give the client */
    char detail[160];          /* what went wrong (no secrets, no keys); "" on OK */
} gw_attempt;

/* Rule parameters. */
typedef struct gw_attempt_policy {
    int64_t window_s;          /* the rate-limit window: Retry-After after 20023 */
    int64_t now_wall_s;        /* wall clock, seconds: for the quota reset */
    uint64_t *rng;             /* xorshift state for the jitter (updated) */
} gw_attempt_policy;

/* Applies the rules to f. */
void gw_attempt_classify(const gw_attempt_facts *f, const gw_attempt_policy *p, gw_attempt *out);

/* Jittered exponential backoff for the nth failed attempt (n >= 1):
 * base * 2^(n-1), +-25%, capped at 30 s. Updates *rng. */
int64_t gw_backoff_ms(int n, int64_t base_ms, uint64_t *rng);

#endif /* GW_UPSTREAM_ATTEMPT_H */
