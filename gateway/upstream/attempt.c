/* gateway/upstream/attempt.c - retry classification (see attempt.h). */
#include "gateway/upstream/attempt.h"

#include <stdio.h>

#include "gateway/store/ratelimit.h"
#include "marketo/codes.h"

#define AT_FAULT_BACKOFF_MS 1000    /* first backoff after a rate/internal fault */
#define AT_TRANSPORT_BACKOFF_MS 500 /* first backoff after a transport error or 5xx */
#define AT_BACKOFF_CAP_MS 30000     /* longest backoff */
#define AT_RETRY_AFTER_CAP_S 3600   /* longest Retry-After honoured */


static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

int64_t gw_backoff_ms(int n, int64_t base_ms, uint64_t *rng)
{
    int64_t d = base_ms;
    for (int i = 1; i < n && d < AT_BACKOFF_CAP_MS; i++)
        d *= 2;
    if (d > AT_BACKOFF_CAP_MS)
        d = AT_BACKOFF_CAP_MS;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    int64_t span = d / 2; /* -25% .. +25% */
    if (span > 0)
        d = d - d / 4 + (int64_t)(*rng % (uint64_t)(span + 1));
    return d;
}

/* Whether a limit code is the concurrency limit (a slot frees up soon) rather
 * than the rolling window (it frees up within the window). */
static bool is_concurrency_limit(int code)
{
    return code == MKTO_CODE_CONCURRENCY || code == MKTO_CODE_REST_CONCURRENCY;
}

/* A Marketo fault: the code's retry class (marketo/codes.h) decides. */
static void classify_fault(const gw_attempt_facts *f, const gw_attempt_policy *p, gw_attempt *r)
{
    int code = f->fault_code;
    r->outcome = GW_OUT_FAULT;
    snprintf(r->detail, sizeof r->detail, "fault %d", code);
    switch (mkto_code_retry(code)) {
    case MKTO_RETRY_QUOTA:
        /* stays a FAULT (the answer carries marketo_code); retry_after_s
         * says when the quota resets */
        r->retry_after_s = max64(1, gw_next_central_midnight(p->now_wall_s) - p->now_wall_s);
        return;
    case MKTO_RETRY_REAUTH:
        r->retry = true; /* fresh credentials, at once */
        return;
    case MKTO_RETRY_LIMITED:
        r->retry = true;
        if (is_concurrency_limit(code)) {
            r->delay_ms = gw_backoff_ms(f->attempts, AT_FAULT_BACKOFF_MS, p->rng);
            r->retry_after_s = 1;
        } else {
            r->delay_ms = max64(AT_FAULT_BACKOFF_MS,
                                gw_backoff_ms(f->attempts, AT_FAULT_BACKOFF_MS, p->rng));
            r->retry_after_s = p->window_s;
        }
        return;
    case MKTO_RETRY_BACKOFF:
        r->retry = true; /* Marketo-side failures */
        r->delay_ms = gw_backoff_ms(f->attempts, AT_FAULT_BACKOFF_MS, p->rng);
        return;
    case MKTO_RETRY_NONE:
    default:
        return;
    }
}

/* An HTTP answer whose body the protocol did not read as its own. */
static void classify_foreign(const gw_attempt_facts *f, const gw_attempt_policy *p, gw_attempt *r)
{
    bool sync = f->kind == GW_CALL_SYNC_MULTIPLE;
    long status = f->http_status;
    r->outcome = GW_OUT_BAD_RESPONSE;
    if (status >= 500 || status == 429) {
        /* a proxy's or Marketo's error page: transient. A sync is retried only
         * when the status says the request was not processed. */
        snprintf(r->detail, sizeof r->detail, "HTTP %ld", status);
        r->retry = !sync || status == 503 || status == 429;
        if (!r->retry) {
            r->maybe_applied = true;
            return;
        }
        if (f->retry_after_s > 0) {
            int64_t ra = f->retry_after_s < AT_RETRY_AFTER_CAP_S ? f->retry_after_s
                                                                  : AT_RETRY_AFTER_CAP_S;
            r->delay_ms = ra * 1000;
            r->retry_after_s = ra;
        } else {
            r->delay_ms = gw_backoff_ms(f->attempts, AT_TRANSPORT_BACKOFF_MS, p->rng);
        }
        return;
    }
    const char *msg = f->parse_msg ? f->parse_msg : "";
    if (f->parsed == MKTO_PARSED_TOO_LARGE)
        snprintf(r->detail, sizeof r->detail, "response too large");
    else if (status >= 200 && status < 300)
        snprintf(r->detail, sizeof r->detail, "parse: %.120s", msg);
    else
        snprintf(r->detail, sizeof r->detail, "HTTP %ld, parse: %.120s", status, msg);
    if (sync && status >= 200 && status < 300)
        r->maybe_applied = true; /* answered, but we cannot read what happened */
}

/* A transport-level failure (no HTTP answer). */
static void classify_transport(const gw_attempt_facts *f, const gw_attempt_policy *p,
                               gw_attempt *r)
{
    bool sync = f->kind == GW_CALL_SYNC_MULTIPLE;
    r->outcome = GW_OUT_UNREACHABLE;
    if (f->too_large) {
        r->outcome = GW_OUT_BAD_RESPONSE;
        snprintf(r->detail, sizeof r->detail, "response too large (over %zu bytes)",
                 f->max_response);
        r->maybe_applied = sync;
        return;
    }
    switch (f->transport) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        /* nothing reached the server: safe to retry any kind */
        r->retry = true;
        snprintf(r->detail, sizeof r->detail, "connect: %s", curl_easy_strerror(f->transport));
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (!f->sent) {
            r->retry = !f->deadline_capped;
            r->outcome = f->deadline_capped ? GW_OUT_TIMEOUT : GW_OUT_UNREACHABLE;
            snprintf(r->detail, sizeof r->detail, "connect: timed out");
            break;
        }
        r->outcome = GW_OUT_TIMEOUT;
        r->retry = !f->deadline_capped && !sync;
        snprintf(r->detail, sizeof r->detail, "timed out waiting for the answer");
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
        /* configuration or certificate problems do not heal by retrying */
        snprintf(r->detail, sizeof r->detail, "transport: %s", curl_easy_strerror(f->transport));
        break;
    default:
        r->retry = !sync || !f->sent;
        snprintf(r->detail, sizeof r->detail, "transport: %s", curl_easy_strerror(f->transport));
        break;
    }
    if (r->retry)
        r->delay_ms = gw_backoff_ms(f->attempts, AT_TRANSPORT_BACKOFF_MS, p->rng);
    if (sync && f->sent && !r->retry)
        r->maybe_applied = true;
}

void gw_attempt_classify(const gw_attempt_facts *f, const gw_attempt_policy *p, gw_attempt *out)
{
    *out = (gw_attempt){.outcome = GW_OUT_OK};
    if (f->transport != CURLE_OK) {
        classify_transport(f, p, out);
        return;
    }
    switch (f->parsed) {
    case MKTO_PARSED_OK:
        return;
    case MKTO_PARSED_FAULT:
        classify_fault(f, p, out);
        return;
    default:
        classify_foreign(f, p, out);
        return;
    }
}
