/* gateway/upstream/engine.c - the upstream engine: one thread, one curl multi handle,
 * every SOAP call to Marketo.
 *
 * Reading order: the structs, the submit side (gw_upstream_submit, any
 * thread), then the engine thread: engine_main() moves submitted jobs from the
 * mutex-protected inbox into the private waiting list (FIFO, doubly linked),
 * scan_waiting() expires jobs and takes a pacing token (pace_wait_ms) and a
 * limiter slot for each call in order, start_call() puts one job's envelope
 * on the wire, finish_call() classifies the answer into done / retry-later /
 * give-up. Every job leaves through end_job(), which calls its done callback
 * exactly once and never under a lock.
 *
 * Coalescing (see upstream.h): start_call() is the only place where jobs
 * become a call; it folds compatible waiting key jobs into the call it
 * starts (merge_waiting). scan_waiting() lets a waiting key job ride on a
 * call in flight that already asks for all its keys and is fresh enough
 * for its cache epoch (try_attach, call_fresh_for).
 * finish_call() hands the answer to every member (distribute_ok /
 * distribute_failure); each member then ends or retries on its own.
 */
#include "gateway/upstream/upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/log.h"
#include "gateway/metrics.h"

#define UP_MIN_HOST_CONNS 16        /* curl connections to the endpoint, at least */
#define UP_POOL_MAX 16              /* idle easy handles kept for reuse */
#define UP_MIN_ATTEMPT_MS 100       /* never start an attempt with less time than this left */
#define UP_CONNECT_TIMEOUT_MS 10000 /* TCP+TLS connect budget (capped by the call's) */
#define UP_LIMIT_ERROR_WAIT_MS 50   /* limiter backend error: try again after this */
#define UP_MAX_POLL_MS 1000         /* longest sleep in curl_multi_poll */
#define UP_FAULT_BACKOFF_MS 1000    /* first backoff after a rate/internal fault */
#define UP_TRANSPORT_BACKOFF_MS 500 /* first backoff after a transport error or 5xx */
#define UP_BACKOFF_CAP_MS 30000     /* longest backoff */
#define UP_BODY_INITIAL (16u * 1024u) /* first allocation of a response buffer */
#define UP_BODY_KEEP (256u * 1024u)   /* response buffers up to this size are kept in the pool */

/* Marketo fault codes the engine treats specially. */
#define MKTO_FAULT_QUOTA 20015
#define MKTO_FAULT_EXPIRED 20016
#define MKTO_FAULT_RATE 20023
#define MKTO_FAULT_CONCURRENCY 20024

#define NOUTCOMES 8 /* gw_outcome values */
#define NKINDS 2    /* gw_call_kind values */

/* One call on the wire (or idle in the pool): an easy handle and its buffers. */
typedef struct gw_call {
    CURL *easy;                    /* reused handle; its connection lives in the multi's cache */
    gw_job *job;                   /* the job that started the call (NULL when idle); its
                                    * fields receive the parsed answer first */
    gw_job **members;              /* every job the call serves, job first (owned array) */
    size_t nmembers;               /* entries in members */
    size_t capmembers;             /* allocated entries of members */
    mkto_query get;         /* GET_MULTIPLE: what goes on the wire (keys -> keys below) */
    const char *keys[SOAP_MAX_KEYS_PER_CALL]; /* key calls: distinct keys of all members
                                    * (strings borrowed from the members' jobs) */
    size_t nkeys;                  /* entries in keys; 0: not a key call built from the union */
    bool shareable;                /* later key jobs may ride on this call */
    uint64_t sent_seq;             /* u->take_seq when the call was sent: jobs taken up
                                    * to it read their cache epoch before the send */
    uint64_t epoch;                /* cache epoch one member read before the send (the
                                    * most recently taken member that has one); 0: none */
    bool attributable;             /* leads of this call can be matched back to keys */
    int64_t ends_ms;               /* monotonic: the call's own timeout */
    gw_slot slot;                  /* limiter slot held while in flight */
    char *req;                     /* envelope sent (owned; freed when the call ends) */
    size_t reqlen;                 /* its length */
    char *body;                    /* response body received so far (owned) */
    size_t len;                    /* bytes in body */
    size_t cap;                    /* allocated bytes of body */
    size_t max;                    /* cap on the body: max_response_bytes */
    bool too_large;                /* the write callback refused more than max */
    bool deadline_capped;          /* CURLOPT_TIMEOUT_MS was cut to the job's deadline */
    int64_t started_ms;            /* monotonic start of the call */
    char errbuf[CURL_ERROR_SIZE];  /* curl's error text (debug logs only: may name a host) */
    struct gw_call *next;          /* in-flight list or pool link */
    struct gw_call *prev;          /* in-flight list link */
} gw_call;

struct gw_upstream {
    /* copied settings */
    char *endpoint;                /* SOAP URL */
    char *user_id;                 /* mktowsUserId */
    char *encryption_key;          /* HMAC key (secret; wiped on free) */
    int64_t timeout_ms;            /* one call's deadline */
    int64_t connect_timeout_ms;    /* connect phase budget */
    size_t max_response;           /* response body cap */
    int max_attempts;              /* attempts per job incl. the first */
    bool tls_verify;               /* verify peer and host name */
    int64_t rl_window_s;           /* rolling window length: Retry-After hint for 20023 */
    long max_calls;                /* in-flight calls the engine allows itself */

    gw_limiter *lim;               /* borrowed rate limiter */
    CURLM *multi;                  /* curl multi handle (engine thread, wakeup from any) */
    struct curl_slist *headers;    /* request headers shared by every call */

    pthread_mutex_t mu;            /* guards the fields down to `exited` */
    gw_job *inbox_head;            /* submitted, not yet seen by the engine */
    gw_job *inbox_tail;            /* last of the inbox */
    bool stopping;                 /* shutdown requested */
    int64_t drain_deadline_ms;     /* when stopping: end of the drain */
    bool exited;                   /* engine no longer takes jobs: submit ends them itself */

    pthread_mutex_t shut_mu;       /* serialises shutdown's join */
    pthread_t thread;              /* the engine thread */
    bool started;                  /* thread created */
    bool joined;                   /* thread joined (or never started and shut down) */

    /* engine-thread state */
    gw_job *wait_head;             /* waiting jobs, FIFO by submit time */
    gw_job *wait_tail;             /* last waiting job */
    gw_call *active;               /* calls in flight */
    long nactive;                  /* entries in active */
    gw_call *pool;                 /* idle calls */
    int npool;                     /* entries in pool */
    int64_t last_hint_ms;          /* the limiter's last WAIT hint */
    int64_t limiter_retry_at_ms;   /* monotonic: do not ask the limiter again before this
                                    * (0: ask now; reset when one of our slots comes back) */
    uint64_t rng;                  /* xorshift state for backoff jitter */

    atomic_size_t queued;          /* jobs in inbox + waiting list */
    atomic_size_t in_flight;       /* calls in flight */

    /* metrics (series live in the global registry) */
    gw_counter *m_calls[NKINDS][NOUTCOMES];  /* SOAP calls by operation and outcome */
    gw_counter *m_jobs[NKINDS][NOUTCOMES];   /* finished jobs by operation and outcome */
    gw_counter *m_retries[NKINDS];           /* retried attempts by operation */
    gw_histogram *m_duration[NKINDS];        /* call duration, seconds */
    gw_histogram *m_queue_wait;              /* submit to first call start, seconds */
    gw_counter *m_coalesced;                 /* jobs served by a call they did not start */
    gw_histogram *m_keys_per_call;           /* distinct keys per getMultipleLeads key call */
    gw_counter *m_pacing_waits;              /* calls started after waiting for a pacing token */

    int64_t gather_ms;             /* gateway.coalesce_window_ms */
    uint64_t call_gen;             /* bumped at each call start (single-flight rescans) */
    uint64_t take_seq;             /* jobs taken from the inbox so far (engine thread) */

    /* pacing: a token bucket in front of the limiter (engine thread only) */
    bool pace_on;                  /* pacing enabled (rl_calls_per_window > 0) */
    double pace_rate;              /* tokens per ms: calls_per_window / window_ms */
    double pace_burst;             /* bucket size: min(calls_per_window, max_concurrent) */
    double pace_tokens;            /* tokens in the bucket as of pace_last_ms */
    int64_t pace_last_ms;          /* monotonic time of the last refill */
};

/* How one attempt ended, as finish_call() classifies it. */
typedef struct attempt_result {
    gw_outcome outcome;            /* outcome if the job ends now */
    bool retry;                    /* worth another attempt */
    int64_t delay_ms;              /* wait before that attempt */
} attempt_result;

static const char *const outcome_names[NOUTCOMES] = {
    "ok", "fault", "rate_limited", "quota", "timeout", "unreachable", "bad_response", "shutdown",
};

static const char *const kind_ops[NKINDS] = {"getMultipleLeads", "syncMultipleLeads"};

const char *gw_outcome_name(gw_outcome o)
{
    if ((int)o < 0 || (int)o >= NOUTCOMES)
        return "unknown";
    return outcome_names[o];
}

int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall clock in ms since the epoch: the limiter's time base. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ms rounded up to whole seconds, at least 1. */
static int64_t ceil_seconds(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s;
}

static int kind_index(const gw_job *job)
{
    return job->kind == GW_CALL_SYNC_MULTIPLE ? 1 : 0;
}

void gw_job_clear_results(gw_job *job)
{
    if (!job)
        return;
    mkto_leads_clear(&job->leads);
    mkto_sync_result_clear(&job->sync);
    mkto_fault_clear(&job->fault);
    memset(&job->leads, 0, sizeof job->leads);
    memset(&job->sync, 0, sizeof job->sync);
    memset(&job->fault, 0, sizeof job->fault);
}

/* ---- metrics ------------------------------------------------------------ */

/* Registers every series the engine updates, so /metrics shows them at zero. */
static void metrics_register(gw_upstream *u)
{
    char labels[128];
    for (int k = 0; k < NKINDS; k++) {
        for (int o = 0; o < NOUTCOMES; o++) {
            snprintf(labels, sizeof labels, "operation=\"%s\",outcome=\"%s\"", kind_ops[k],
                     outcome_names[o]);
            /* a call ends ok, fault, timeout, unreachable or bad_response */
            if (o != GW_OUT_RATE_LIMITED && o != GW_OUT_QUOTA && o != GW_OUT_SHUTDOWN)
                u->m_calls[k][o] = gw_metrics_counter(
                    "upstream_calls_total", "SOAP calls made to Marketo, by outcome", labels);
            u->m_jobs[k][o] = gw_metrics_counter(
                "upstream_jobs_total", "Upstream jobs finished, by outcome", labels);
        }
        snprintf(labels, sizeof labels, "operation=\"%s\"", kind_ops[k]);
        u->m_retries[k] = gw_metrics_counter("upstream_retries_total",
                                             "SOAP calls retried after a failed attempt", labels);
        u->m_duration[k] = gw_metrics_histogram("upstream_call_duration_seconds",
                                                "Duration of one SOAP call", labels,
                                                gw_duration_buckets, gw_duration_buckets_n);
    }
    u->m_queue_wait = gw_metrics_histogram("upstream_queue_wait_seconds",
                                           "Wait from submit to the first SOAP call", NULL,
                                           gw_duration_buckets, gw_duration_buckets_n);
    static const double key_buckets[] = {1, 2, 5, 10, 20, 50, 100};
    u->m_coalesced = gw_metrics_counter("upstream_coalesced_jobs_total",
                                        "Lookup jobs served by a SOAP call they did not start",
                                        NULL);
    u->m_keys_per_call = gw_metrics_histogram(
        "upstream_keys_per_call", "Distinct keys per getMultipleLeads key call", NULL,
        key_buckets, sizeof key_buckets / sizeof key_buckets[0]);
    u->m_pacing_waits = gw_metrics_counter(
        "upstream_pacing_waits_total",
        "SOAP calls that waited for a pacing token before they started", NULL);
    /* jobs waiting and calls in flight are exported by ops.c from
     * gw_upstream_queued() / gw_upstream_in_flight() */
}

static void metric_add(gw_counter *c)
{
    if (c)
        gw_counter_add(c, 1);
}

static void observe(gw_histogram *h, double v)
{
    if (h)
        gw_histogram_observe(h, v);
}

/* ---- job lists ---------------------------------------------------------- */

/* Appends job to a list given by its head and tail. */
static void list_append(gw_job **head, gw_job **tail, gw_job *job)
{
    job->q_next = NULL;
    job->q_prev = *tail;
    if (*tail)
        (*tail)->q_next = job;
    else
        *head = job;
    *tail = job;
}

/* Removes a job from the waiting list (engine thread). */
static void waiting_unlink(gw_upstream *u, gw_job *job)
{
    if (job->q_prev)
        job->q_prev->q_next = job->q_next;
    else
        u->wait_head = job->q_next;
    if (job->q_next)
        job->q_next->q_prev = job->q_prev;
    else
        u->wait_tail = job->q_prev;
    job->q_next = job->q_prev = NULL;
    atomic_fetch_sub(&u->queued, 1);
}

/* Puts a job back into the waiting list for a retry, in submit order so that
 * it keeps its place ahead of later jobs (engine thread). */
static void waiting_reinsert(gw_upstream *u, gw_job *job)
{
    gw_job *at = u->wait_head;
    while (at && at->enqueued_ms <= job->enqueued_ms)
        at = at->q_next;
    if (!at) {
        list_append(&u->wait_head, &u->wait_tail, job);
    } else {
        job->q_next = at;
        job->q_prev = at->q_prev;
        if (at->q_prev)
            at->q_prev->q_next = job;
        else
            u->wait_head = job;
        at->q_prev = job;
    }
    atomic_fetch_add(&u->queued, 1);
}

/* Ends a job: sets its outcome and runs its callback. The job is not in any
 * list and no engine lock is held; the job must not be touched afterwards. */
static void end_job(gw_upstream *u, gw_job *job, gw_outcome outcome)
{
    job->outcome = outcome;
    metric_add(u->m_jobs[kind_index(job)][outcome]);
    /* back-pressure outcomes are expected under load: info, not warn */
    bool pressure = outcome == GW_OUT_RATE_LIMITED || outcome == GW_OUT_QUOTA ||
                    outcome == GW_OUT_SHUTDOWN;
    if (outcome != GW_OUT_OK)
        GW_LOG(pressure ? GW_LOG_INFO : GW_LOG_WARN,
               json_pack("{s:s, s:s, s:i, s:s}", "operation", kind_ops[kind_index(job)],
                         "outcome", gw_outcome_name(outcome), "attempts", job->attempts,
                         "detail", job->detail),
               "upstream job failed");
    job->done(job, job->done_arg);
}

/* Ends a job that never made it onto the engine (SHUTDOWN), on the caller's thread. */
static void end_job_unqueued(gw_upstream *u, gw_job *job)
{
    snprintf(job->detail, sizeof job->detail, "engine stopped");
    end_job(u, job, GW_OUT_SHUTDOWN);
}

/* ---- construction --------------------------------------------------------- */

static void call_destroy(gw_call *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    free(c->req);
    free(c->body);
    free(c->members);
    free(c);
}

/* Sets up the pacing bucket from the rate-limit settings: refill rate
 * calls_per_window / window_ms, burst min(calls_per_window, max_concurrent)
 * (at least 1), starting full. Pacing is off when calls_per_window <= 0. */
static void pace_init(gw_upstream *u, const gw_config *cfg)
{
    int64_t calls = cfg->rl_calls_per_window;
    int64_t window_ms = (cfg->rl_window_seconds > 0 ? cfg->rl_window_seconds : 20) * 1000;
    u->pace_on = calls > 0;
    if (!u->pace_on)
        return;
    int64_t burst = calls;
    if (cfg->rl_max_concurrent > 0 && cfg->rl_max_concurrent < burst)
        burst = cfg->rl_max_concurrent;
    u->pace_rate = (double)calls / (double)window_ms;
    u->pace_burst = (double)max64(1, burst);
    u->pace_tokens = u->pace_burst;
    u->pace_last_ms = gw_now_ms();
}

/* Refills the pacing bucket up to now. Returns 0 when a token is available,
 * else the ms until the next one (engine thread). */
static int64_t pace_wait_ms(gw_upstream *u, int64_t now)
{
    if (!u->pace_on)
        return 0;
    if (now > u->pace_last_ms) {
        u->pace_tokens += (double)(now - u->pace_last_ms) * u->pace_rate;
        if (u->pace_tokens > u->pace_burst)
            u->pace_tokens = u->pace_burst;
        u->pace_last_ms = now;
    }
    double missing = 1.0 - u->pace_tokens;
    if (missing <= 1e-9)
        return 0;
    int64_t ms = (int64_t)(missing / u->pace_rate);
    if ((double)ms * u->pace_rate < missing)
        ms++;
    return ms < 1 ? 1 : ms;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

gw_upstream *gw_upstream_new(const gw_config *cfg, gw_limiter *lim, char *err, size_t errlen)
{
    gw_upstream *u = NULL;
    struct curl_slist *h = NULL;
    const char *hdrs[] = {"Content-Type: text/xml; charset=UTF-8", "SOAPAction: \"\"", "Expect:"};
    if (!cfg || !lim || !lim->ops) {
        snprintf(err, errlen, "upstream: missing configuration or limiter");
        return NULL;
    }
    if (!cfg->soap_endpoint || !cfg->soap_endpoint[0]) {
        snprintf(err, errlen, "upstream: marketo.soap_endpoint is not set");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "upstream: curl_global_init failed");
        return NULL;
    }
    u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errlen, "upstream: out of memory");
        curl_global_cleanup();
        return NULL;
    }
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->shut_mu, NULL);
    atomic_init(&u->queued, 0);
    atomic_init(&u->in_flight, 0);
    u->lim = lim;
    u->endpoint = strdup(cfg->soap_endpoint);
    u->user_id = dup_or_empty(cfg->user_id);
    u->encryption_key = dup_or_empty(cfg->encryption_key);
    u->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
    u->connect_timeout_ms = min64(UP_CONNECT_TIMEOUT_MS, u->timeout_ms);
    u->max_response = cfg->max_response_bytes > 0 ? (size_t)cfg->max_response_bytes
                                                  : SOAP_DEFAULT_MAX_RESPONSE;
    u->max_attempts = cfg->retry_max_attempts > 0
                          ? (int)min64(cfg->retry_max_attempts, 100) : 1;
    u->tls_verify = cfg->tls_verify;
    u->rl_window_s = cfg->rl_window_seconds > 0 ? cfg->rl_window_seconds : 20;
    u->max_calls = (long)max64(UP_MIN_HOST_CONNS, cfg->rl_max_concurrent + 4);
    u->last_hint_ms = 1000;
    u->gather_ms = cfg->coalesce_window_ms > 0 ? min64(cfg->coalesce_window_ms, 1000) : 0;
    pace_init(u, cfg);
    u->rng = (uint64_t)wall_ms() ^ ((uint64_t)(uintptr_t)u << 16) ^ 0x9e3779b97f4a7c15ull;
    if (!u->endpoint || !u->user_id || !u->encryption_key) {
        snprintf(err, errlen, "upstream: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        struct curl_slist *n = curl_slist_append(h, hdrs[i]);
        if (!n) {
            curl_slist_free_all(h);
            snprintf(err, errlen, "upstream: out of memory");
            goto fail;
        }
        h = n;
    }
    u->headers = h;
    u->multi = curl_multi_init();
    if (!u->multi) {
        snprintf(err, errlen, "upstream: curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, u->max_calls);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, u->max_calls);
    metrics_register(u);
    return u;
fail:
    gw_upstream_free(u);
    return NULL;
}

/* ---- submit side ------------------------------------------------------------ */

void gw_upstream_submit(gw_upstream *u, gw_job *job)
{
    job->outcome = GW_OUT_OK;
    memset(&job->leads, 0, sizeof job->leads);
    memset(&job->sync, 0, sizeof job->sync);
    memset(&job->fault, 0, sizeof job->fault);
    job->retry_after_s = 0;
    job->attempts = 0;
    job->maybe_applied = false;
    job->detail[0] = '\0';
    job->not_before_ms = 0;
    job->enqueued_ms = gw_now_ms();
    job->last_outcome = GW_OUT_UNREACHABLE;
    job->solo = false;
    job->coalesced = false;
    job->attach_gen = 0;
    job->taken_seq = 0;
    job->paced = false;

    pthread_mutex_lock(&u->mu);
    if (u->exited) {
        pthread_mutex_unlock(&u->mu);
        end_job_unqueued(u, job);
        return;
    }
    list_append(&u->inbox_head, &u->inbox_tail, job);
    atomic_fetch_add(&u->queued, 1);
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
}

size_t gw_upstream_queued(gw_upstream *u)
{
    return atomic_load(&u->queued);
}

size_t gw_upstream_in_flight(gw_upstream *u)
{
    return atomic_load(&u->in_flight);
}

/* ---- calls ------------------------------------------------------------------ */

/* curl write callback: appends to the call's body, refusing to grow past max
 * (returning less than given aborts the transfer with CURLE_WRITE_ERROR). */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    gw_call *c = arg;
    size_t n = size * nmemb;
    if (n > c->max - c->len) {
        c->too_large = true;
        return 0;
    }
    if (c->len + n > c->cap) {
        size_t ncap = c->cap ? c->cap : UP_BODY_INITIAL;
        while (ncap < c->len + n)
            ncap = ncap > c->max / 2 ? c->max : ncap * 2;
        char *nb = realloc(c->body, ncap);
        if (!nb)
            return 0;
        c->body = nb;
        c->cap = ncap;
    }
    memcpy(c->body + c->len, data, n);
    c->len += n;
    return n;
}

/* Takes an idle call from the pool, or makes a new one. NULL on no memory. */
static gw_call *call_get(gw_upstream *u)
{
    gw_call *c = u->pool;
    if (c) {
        u->pool = c->next;
        u->npool--;
        curl_easy_reset(c->easy);
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        c->easy = curl_easy_init();
        if (!c->easy) {
            free(c);
            return NULL;
        }
    }
    c->next = c->prev = NULL;
    c->job = NULL;
    c->nmembers = 0;
    memset(&c->get, 0, sizeof c->get);
    c->nkeys = 0;
    c->shareable = false;
    c->sent_seq = 0;
    c->epoch = 0;
    c->attributable = false;
    c->ends_ms = 0;
    c->len = 0;
    c->too_large = false;
    c->deadline_capped = false;
    c->max = u->max_response;
    c->errbuf[0] = '\0';
    return c;
}

/* Returns a finished call to the pool (or frees it when the pool is full). */
static void call_put(gw_upstream *u, gw_call *c)
{
    free(c->req);
    c->req = NULL;
    c->reqlen = 0;
    c->job = NULL;
    c->nmembers = 0;
    c->nkeys = 0;
    c->len = 0;
    if (c->cap > UP_BODY_KEEP) {
        free(c->body);
        c->body = NULL;
        c->cap = 0;
    }
    if (u->npool >= UP_POOL_MAX) {
        call_destroy(c);
        return;
    }
    c->next = u->pool;
    u->pool = c;
    u->npool++;
}

/* Builds a fresh envelope for the job (new timestamp and signature).
 * Returns SOAP_OK or a soap_status with err filled. */
static int build_envelope(gw_upstream *u, const gw_call *c, char **out, size_t *outlen,
                          soap_err *err)
{
    const gw_job *job = c->job;
    char ts[SOAP_TIMESTAMP_LEN];
    int rc = soap_timestamp_now(ts);
    if (rc != SOAP_OK) {
        snprintf(err->msg, sizeof err->msg, "cannot format the timestamp");
        return rc;
    }
    soap_auth auth = {.user_id = u->user_id, .encryption_key = u->encryption_key, .timestamp = ts};
    if (job->kind == GW_CALL_SYNC_MULTIPLE)
        return soap_build_sync_multiple_leads(&auth, job->sync_leads, job->nsync, job->dedup, out,
                                              outlen, err);
    return soap_build_get_multiple_leads(&auth, &c->get, out, outlen, err);
}

/* Sets every option of one SOAP POST on the call's easy handle. */
static void setup_easy(gw_upstream *u, gw_call *c, int64_t timeout_ms)
{
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, u->endpoint);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->reqlen);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, u->headers);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)min64(u->connect_timeout_ms, timeout_ms));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, u->tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, u->tls_verify ? 2L : 0L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "marketo-gateway/" GW_VERSION);
    /* libcurl re-sends a request on its own, on a new connection, when a
     * reused keep-alive connection dies before any answer byte. That is
     * harmless for getMultipleLeads, but a syncMultipleLeads may have been
     * applied by then: the re-send would report the leads it just created
     * as UPDATED (or, without dedup, create them twice), and if Marketo is
     * gone the re-send's connect failure hides that the first one was sent.
     * A sync therefore never reuses a connection (no re-send is possible)
     * and leaves none behind for others (its connection is closed after
     * it, so it takes no place among the lookups' idle ones). */
    if (c->job->kind == GW_CALL_SYNC_MULTIPLE) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
}

/* ---- coalescing --------------------------------------------------------------- */

bool gw_lead_matches_key(const mkto_lead *l, mkto_key_type t, const char *key)
{
    if (!l || !key)
        return false;
    if (t == MKTO_KEY_IDNUM) {
        if (!l->has_id)
            return false;
        errno = 0;
        char *end = NULL;
        long long v = strtoll(key, &end, 10);
        if (errno != 0 || end == key || *end != '\0')
            return false;
        return (int64_t)v == l->id;
    }
    if (t == MKTO_KEY_EMAIL)
        return l->email && strcasecmp(l->email, key) == 0;
    const char *an = mkto_key_type_attr(t);
    if (!an)
        return false;
    for (size_t i = 0; i < l->nattrs; i++) {
        if (strcmp(l->attrs[i].name, an) != 0 || !l->attrs[i].value)
            continue;
        if (t == MKTO_KEY_LEADOWNEREMAIL)
            return strcasecmp(l->attrs[i].value, key) == 0;
        return strcmp(l->attrs[i].value, key) == 0;
    }
    return false;
}

/* Whether two key values of type t name the same key. */
static bool key_eq(mkto_key_type t, const char *a, const char *b)
{
    if (t == MKTO_KEY_EMAIL || t == MKTO_KEY_LEADOWNEREMAIL)
        return strcasecmp(a, b) == 0;
    return strcmp(a, b) == 0;
}

/* Whether a job may share a call: a first-page key lookup of 1..100 keys
 * that has not been set apart. */
static bool is_key_job(const gw_job *job)
{
    return job->kind == GW_CALL_GET_MULTIPLE && job->get.kind == MKTO_SEL_KEYS && !job->solo &&
           !job->get.stream_position && job->get.keys && job->get.nkeys >= 1 &&
           job->get.nkeys <= SOAP_MAX_KEYS_PER_CALL;
}

/* Whether the leads answering p can be matched back to its keys: always for
 * IDNUM and EMAIL, else when the mapping attribute comes back (all fields,
 * or the attribute among includeAttributes). */
static bool shape_attributable(const mkto_query *p)
{
    if (p->key_type == MKTO_KEY_IDNUM || p->key_type == MKTO_KEY_EMAIL)
        return true;
    const char *an = mkto_key_type_attr(p->key_type);
    if (!an)
        return false;
    if (!p->attrs || p->nattrs == 0)
        return true;
    for (size_t i = 0; i < p->nattrs; i++)
        if (p->attrs[i] && strcmp(p->attrs[i], an) == 0)
            return true;
    return false;
}

/* Whether attribute name a is among attrs[0..n). */
static bool has_attr(const char *const *attrs, size_t n, const char *a)
{
    for (size_t i = 0; i < n; i++)
        if (attrs[i] && strcmp(attrs[i], a) == 0)
            return true;
    return false;
}

/* Whether two key selectors ask the same thing of each lead: key type,
 * batch size and the same set of includeAttributes. */
static bool same_shape(const mkto_query *a, const mkto_query *b)
{
    if (a->key_type != b->key_type || a->batch_size != b->batch_size)
        return false;
    size_t na = a->attrs ? a->nattrs : 0, nb = b->attrs ? b->nattrs : 0;
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!a->attrs[i] || !has_attr(b->attrs, nb, a->attrs[i]))
            return false;
    for (size_t i = 0; i < nb; i++)
        if (!b->attrs[i] || !has_attr(a->attrs, na, b->attrs[i]))
            return false;
    return true;
}

/* Whether key k is among the call's keys. */
static bool call_has_key(const gw_call *c, const char *k)
{
    for (size_t i = 0; i < c->nkeys; i++)
        if (key_eq(c->get.key_type, c->keys[i], k))
            return true;
    return false;
}

/* Whether job keys[0..i) already hold a key equal to keys[i]. */
static bool earlier_dup(const gw_job *job, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (key_eq(job->get.key_type, job->get.keys[j], job->get.keys[i]))
            return true;
    return false;
}

/* Distinct keys of job not yet in call c. */
static size_t new_keys(const gw_call *c, const gw_job *job)
{
    size_t n = 0;
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (!call_has_key(c, job->get.keys[i]) && !earlier_dup(job, i))
            n++;
    return n;
}

/* Distinct keys of job. */
static size_t distinct_keys(const gw_job *job)
{
    size_t n = 0;
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (!earlier_dup(job, i))
            n++;
    return n;
}

/* Whether job's key set is the call's whole key set. */
static bool covers_call(const gw_call *c, const gw_job *job)
{
    return new_keys(c, job) == 0 && distinct_keys(job) == c->nkeys;
}

/* Adds job to call c's members and its new keys to the call's key set
 * (the caller checked that they fit). Returns 0 or -1 on no memory. */
static int add_member(gw_call *c, gw_job *job)
{
    if (c->nmembers == c->capmembers) {
        size_t ncap = c->capmembers ? c->capmembers * 2 : 8;
        gw_job **nm = realloc(c->members, ncap * sizeof *nm);
        if (!nm)
            return -1;
        c->members = nm;
        c->capmembers = ncap;
    }
    c->members[c->nmembers++] = job;
    if (c->nkeys > 0 || c->nmembers == 1) {
        for (size_t i = 0; i < job->get.nkeys; i++) {
            const char *k = job->get.keys[i];
            if (c->nkeys < SOAP_MAX_KEYS_PER_CALL && !call_has_key(c, k))
                c->keys[c->nkeys++] = k;
        }
    }
    return 0;
}

/* Books a job that joins a call it did not start: counts it once in
 * upstream_coalesced_jobs_total. */
static void note_coalesced(gw_upstream *u, gw_job *job)
{
    if (!job->coalesced) {
        job->coalesced = true;
        metric_add(u->m_coalesced);
    }
}

/* Whether a waiting job may still be served now (not in backoff, not past
 * its queue deadline or its last start time) by a call that runs until
 * ends_ms. */
static bool job_ready(const gw_job *job, int64_t now, int64_t ends_ms)
{
    if (job->not_before_ms > now)
        return false;
    if (job->attempts == 0 && now >= job->queue_deadline_ms)
        return false;
    if (now >= job->deadline_ms - UP_MIN_ATTEMPT_MS)
        return false;
    return job->deadline_ms >= ends_ms;
}

/* Folds waiting key jobs of the call's shape into c (already holding its
 * starter) while the key set stays within 100. Non-attributable shapes take
 * only jobs with the starter's very key set. Returns the jobs added. */
static size_t merge_waiting(gw_upstream *u, gw_call *c, int64_t now)
{
    size_t added = 0;
    gw_job *next;
    for (gw_job *j = u->wait_head; j && c->nkeys < SOAP_MAX_KEYS_PER_CALL; j = next) {
        next = j->q_next;
        if (!is_key_job(j) || !same_shape(&c->get, &j->get) || !job_ready(j, now, c->ends_ms))
            continue;
        if (c->attributable) {
            if (c->nkeys + new_keys(c, j) > SOAP_MAX_KEYS_PER_CALL)
                continue;
        } else if (!covers_call(c, j)) {
            continue;
        }
        if (add_member(c, j) != 0)
            break;
        waiting_unlink(u, j);
        added++;
    }
    return added;
}

/* Whether call c's answer is at least as fresh as job's cache epoch, so the
 * job may take it and store it under that epoch: the job was taken from the
 * inbox before the call was sent (it read its epoch before the send), or a
 * member read the job's very epoch before the send (no invalidation between
 * the send and the job's read). A call sent before a sync was applied may
 * answer pre-sync data; a lookup that started after that sync answered has a
 * newer epoch and must not ride on it. */
static bool call_fresh_for(const gw_call *c, const gw_job *job)
{
    if (job->taken_seq != 0 && job->taken_seq <= c->sent_seq)
        return true;
    return job->epoch != 0 && job->epoch == c->epoch;
}

/* Notes what the call's answer is as fresh as, as it is sent: the inbox
 * position (every member and every job waiting now read its epoch before)
 * and the epoch of its most recently taken member that has one. */
static void stamp_freshness(gw_upstream *u, gw_call *c)
{
    uint64_t newest = 0;
    c->sent_seq = u->take_seq;
    c->epoch = 0;
    for (size_t i = 0; i < c->nmembers; i++) {
        const gw_job *m = c->members[i];
        if (m->epoch != 0 && m->taken_seq >= newest) {
            newest = m->taken_seq;
            c->epoch = m->epoch;
        }
    }
}

/* Single flight: lets a waiting key job ride on a call in flight that asks
 * for all its keys in the same shape (and, for a shape whose leads cannot be
 * attributed, for exactly its keys), when the call is fresh enough for it
 * (call_fresh_for). Returns true when the job joined. */
static bool try_attach(gw_upstream *u, gw_job *job, int64_t now)
{
    if (!is_key_job(job) || job->attach_gen == u->call_gen)
        return false;
    job->attach_gen = u->call_gen;
    for (gw_call *c = u->active; c; c = c->next) {
        if (!c->shareable || !same_shape(&c->get, &job->get) || !job_ready(job, now, c->ends_ms))
            continue;
        if (!call_fresh_for(c, job))
            continue;
        if (new_keys(c, job) != 0)
            continue;
        if (!c->attributable && distinct_keys(job) != c->nkeys)
            continue;
        if (add_member(c, job) != 0)
            return false;
        waiting_unlink(u, job);
        if (job->attempts == 0)
            observe(u->m_queue_wait, (double)(now - job->enqueued_ms) / 1000.0);
        job->attempts++;
        note_coalesced(u, job);
        return true;
    }
    return false;
}

/* Puts the members of c other than its starter back into the waiting list,
 * set apart (solo), and shrinks the call to its starter. */
static void unmerge(gw_upstream *u, gw_call *c)
{
    for (size_t i = 1; i < c->nmembers; i++) {
        c->members[i]->solo = true;
        waiting_reinsert(u, c->members[i]);
    }
    c->nmembers = 1;
    c->nkeys = 0;
    const gw_job *job = c->job;
    for (size_t i = 0; i < job->get.nkeys && c->nkeys < SOAP_MAX_KEYS_PER_CALL; i++)
        if (!call_has_key(c, job->get.keys[i]))
            c->keys[c->nkeys++] = job->get.keys[i];
}

/* Starts one SOAP call for a job that holds a limiter slot and is already out
 * of the waiting list, folding compatible waiting key jobs into it; on
 * failure the slot is given back and the members end. This is the one place
 * where jobs become calls. Returns the number of waiting jobs it took. */
static size_t start_call(gw_upstream *u, gw_job *job, const gw_slot *slot, int64_t now)
{
    soap_err serr = {0};
    gw_outcome fail = GW_OUT_UNREACHABLE;
    size_t merged = 0;
    gw_call *c = call_get(u);
    if (!c) {
        snprintf(job->detail, sizeof job->detail, "out of memory");
        end_job(u, job, fail);
        u->lim->ops->release(u->lim, slot, wall_ms());
        return 0;
    }
    int64_t budget = job->deadline_ms - now;
    int64_t tmo = min64(u->timeout_ms, budget);
    c->job = job;
    c->ends_ms = now + tmo;
    if (add_member(c, job) != 0) {
        snprintf(job->detail, sizeof job->detail, "out of memory");
        goto fail;
    }
    if (job->kind == GW_CALL_GET_MULTIPLE)
        c->get = job->get;
    if (is_key_job(job)) {
        c->get.keys = c->keys;
        c->get.nkeys = c->nkeys;
        c->shareable = true;
        c->attributable = shape_attributable(&job->get);
        merged = merge_waiting(u, c, now);
        c->get.nkeys = c->nkeys;
    } else {
        c->nkeys = 0;
    }
    int rc = build_envelope(u, c, &c->req, &c->reqlen, &serr);
    if (rc != SOAP_OK && c->nmembers > 1) {
        /* one member's keys cannot be encoded: let each run on its own */
        unmerge(u, c);
        c->get.nkeys = c->nkeys;
        rc = build_envelope(u, c, &c->req, &c->reqlen, &serr);
    }
    if (rc != SOAP_OK) {
        /* the caller's input cannot be encoded: no call is made */
        fail = GW_OUT_BAD_RESPONSE;
        snprintf(job->detail, sizeof job->detail, "request: %.120s", serr.msg);
        goto fail;
    }
    c->deadline_capped = budget <= u->timeout_ms;
    c->slot = *slot;
    c->started_ms = now;
    stamp_freshness(u, c);
    setup_easy(u, c, tmo);
    if (curl_multi_add_handle(u->multi, c->easy) != CURLM_OK) {
        snprintf(job->detail, sizeof job->detail, "curl_multi_add_handle failed");
        goto fail;
    }
    for (size_t i = 0; i < c->nmembers; i++) {
        gw_job *m = c->members[i];
        if (m->attempts == 0)
            observe(u->m_queue_wait, (double)(now - m->enqueued_ms) / 1000.0);
        m->attempts++;
        m->paced = false;
        if (m != job)
            note_coalesced(u, m);
    }
    if (c->nkeys > 0)
        observe(u->m_keys_per_call, (double)c->nkeys);
    u->call_gen++;
    c->next = u->active;
    c->prev = NULL;
    if (u->active)
        u->active->prev = c;
    u->active = c;
    u->nactive++;
    atomic_fetch_add(&u->in_flight, 1);
    return merged;
fail:
    u->lim->ops->release(u->lim, slot, wall_ms());
    if (c->nmembers == 0) {
        call_put(u, c);
        end_job(u, job, fail);
        return merged;
    }
    /* the members' done callbacks must not see the call in use: copy them out */
    size_t nm = c->nmembers;
    gw_job **mem = c->members;
    c->members = NULL;
    c->capmembers = 0;
    c->nmembers = 0;
    gw_job *starter = c->job;
    char detail[sizeof starter->detail];
    snprintf(detail, sizeof detail, "%s", starter->detail);
    call_put(u, c);
    for (size_t i = 0; i < nm; i++) {
        if (mem[i] != starter)
            snprintf(mem[i]->detail, sizeof mem[i]->detail, "%s", detail);
        end_job(u, mem[i], fail);
    }
    free(mem);
    return merged;
}

/* Removes a call from the in-flight list and the multi handle and gives its
 * slot back. */
static void call_detach(gw_upstream *u, gw_call *c)
{
    curl_multi_remove_handle(u->multi, c->easy);
    u->lim->ops->release(u->lim, &c->slot, wall_ms());
    if (c->prev)
        c->prev->next = c->next;
    else
        u->active = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    u->nactive--;
    atomic_fetch_sub(&u->in_flight, 1);
}

/* Jittered exponential backoff for the nth failed attempt (n >= 1):
 * base * 2^(n-1), +-25%, capped. */
static int64_t backoff_ms(gw_upstream *u, int n, int64_t base)
{
    int64_t d = base;
    for (int i = 1; i < n && d < UP_BACKOFF_CAP_MS; i++)
        d *= 2;
    d = min64(d, UP_BACKOFF_CAP_MS);
    u->rng ^= u->rng << 13;
    u->rng ^= u->rng >> 7;
    u->rng ^= u->rng << 17;
    int64_t span = d / 2; /* -25% .. +25% */
    if (span > 0)
        d = d - d / 4 + (int64_t)(u->rng % (uint64_t)(span + 1));
    return d;
}

/* Whether the request of a finished call may have reached the server: some
 * of it was sent, or at least the connection was made and sending began. */
static bool call_was_sent(CURL *e)
{
    curl_off_t pre = 0;
    long reqsize = 0;
    curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &reqsize);
    return pre > 0 || reqsize > 0;
}

/* Classifies a transport-level failure (res != CURLE_OK). */
static attempt_result classify_transport(gw_upstream *u, gw_call *c, CURLcode res)
{
    gw_job *job = c->job;
    bool sync = job->kind == GW_CALL_SYNC_MULTIPLE;
    attempt_result r = {.outcome = GW_OUT_UNREACHABLE, .retry = false, .delay_ms = 0};
    bool sent = call_was_sent(c->easy);

    if (c->too_large) {
        r.outcome = GW_OUT_BAD_RESPONSE;
        snprintf(job->detail, sizeof job->detail, "response too large (over %zu bytes)", c->max);
        if (sync)
            job->maybe_applied = true;
        return r;
    }
    switch (res) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        /* nothing reached the server: safe to retry any kind */
        r.retry = true;
        snprintf(job->detail, sizeof job->detail, "connect: %s", curl_easy_strerror(res));
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (!sent) {
            r.retry = !c->deadline_capped;
            r.outcome = c->deadline_capped ? GW_OUT_TIMEOUT : GW_OUT_UNREACHABLE;
            snprintf(job->detail, sizeof job->detail, "connect: timed out");
            break;
        }
        r.outcome = GW_OUT_TIMEOUT;
        r.retry = !c->deadline_capped && !sync;
        snprintf(job->detail, sizeof job->detail, "timed out waiting for the answer");
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
        /* configuration or certificate problems do not heal by retrying */
        snprintf(job->detail, sizeof job->detail, "transport: %s", curl_easy_strerror(res));
        break;
    default:
        r.retry = !sync || !sent;
        snprintf(job->detail, sizeof job->detail, "transport: %s", curl_easy_strerror(res));
        break;
    }
    if (r.retry)
        r.delay_ms = backoff_ms(u, job->attempts, UP_TRANSPORT_BACKOFF_MS);
    if (sync && sent && !r.retry)
        job->maybe_applied = true;
    return r;
}

/* Classifies a Marketo fault now in job->fault. */
static attempt_result classify_fault(gw_upstream *u, gw_job *job)
{
    attempt_result r = {.outcome = GW_OUT_FAULT, .retry = false, .delay_ms = 0};
    int code = job->fault.code;
    snprintf(job->detail, sizeof job->detail, "fault %d", code);
    if (code == MKTO_FAULT_QUOTA) {
        /* stays a FAULT (the answer carries marketo_code); retry_after_s
         * says when the quota resets */
        int64_t now_s = wall_ms() / 1000;
        job->retry_after_s = max64(1, gw_next_central_midnight(now_s) - now_s);
        return r;
    }
    if (!soap_fault_code_retryable(code))
        return r;
    r.retry = true;
    switch (code) {
    case MKTO_FAULT_EXPIRED:
        r.delay_ms = 0; /* re-signed with a fresh timestamp at once */
        break;
    case MKTO_FAULT_RATE:
        r.delay_ms = max64(UP_FAULT_BACKOFF_MS, backoff_ms(u, job->attempts, UP_FAULT_BACKOFF_MS));
        job->retry_after_s = u->rl_window_s;
        break;
    case MKTO_FAULT_CONCURRENCY:
        r.delay_ms = backoff_ms(u, job->attempts, UP_FAULT_BACKOFF_MS);
        job->retry_after_s = 1;
        break;
    default: /* 20011, 10001: Marketo-side failures */
        r.delay_ms = backoff_ms(u, job->attempts, UP_FAULT_BACKOFF_MS);
        break;
    }
    return r;
}

/* Classifies an HTTP answer: parses the body with the parser of the job's
 * kind into the job's result fields. */
static attempt_result classify_http(gw_upstream *u, gw_call *c)
{
    gw_job *job = c->job;
    bool sync = job->kind == GW_CALL_SYNC_MULTIPLE;
    attempt_result r = {.outcome = GW_OUT_OK, .retry = false, .delay_ms = 0};
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    const char *body = c->body ? c->body : "";
    soap_err serr = {0};
    int rc;

    mkto_fault_clear(&job->fault);
    memset(&job->fault, 0, sizeof job->fault);
    if (sync)
        rc = soap_parse_sync_multiple_leads(body, c->len, u->max_response, &job->sync, &job->fault,
                                            &serr);
    else
        rc = soap_parse_get_multiple_leads(body, c->len, u->max_response, &job->leads, &job->fault,
                                           &serr);
    if (rc == SOAP_OK) {
        job->detail[0] = '\0';
        return r;
    }
    if (rc == SOAP_ERR_FAULT)
        return classify_fault(u, job);

    /* not a SOAP answer */
    mkto_fault_clear(&job->fault);
    memset(&job->fault, 0, sizeof job->fault);
    r.outcome = GW_OUT_BAD_RESPONSE;
    if (status >= 500 || status == 429) {
        /* a proxy's or Marketo's error page: transient. A sync is retried only
         * when the status says the request was not processed. */
        snprintf(job->detail, sizeof job->detail, "HTTP %ld", status);
        r.retry = !sync || status == 503 || status == 429;
        if (!r.retry) {
            job->maybe_applied = true;
            return r;
        }
        curl_off_t ra = 0;
        if (curl_easy_getinfo(c->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0) {
            r.delay_ms = (int64_t)min64((int64_t)ra, 3600) * 1000;
            job->retry_after_s = (int64_t)min64((int64_t)ra, 3600);
        } else {
            r.delay_ms = backoff_ms(u, job->attempts, UP_TRANSPORT_BACKOFF_MS);
        }
        return r;
    }
    if (rc == SOAP_ERR_TOO_LARGE)
        snprintf(job->detail, sizeof job->detail, "response too large");
    else if (status >= 200 && status < 300)
        snprintf(job->detail, sizeof job->detail, "parse: %.120s", serr.msg);
    else
        snprintf(job->detail, sizeof job->detail, "HTTP %ld, parse: %.120s", status, serr.msg);
    if (sync && status >= 200 && status < 300)
        job->maybe_applied = true; /* answered, but we cannot read what happened */
    return r;
}

/* ---- answers of merged calls --------------------------------------------------- */

/* *dst = copy of src (NULL stays NULL). Returns false on no memory. */
static bool dup_str(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

/* Deep-copies one lead into dst. Returns 0 or -1 on no memory (dst cleared). */
static int lead_copy(mkto_lead *dst, const mkto_lead *src)
{
    memset(dst, 0, sizeof *dst);
    dst->has_id = src->has_id;
    dst->id = src->id;
    if (!dup_str(&dst->email, src->email) ||
        !dup_str(&dst->foreign_sys_person_id, src->foreign_sys_person_id) ||
        !dup_str(&dst->foreign_sys_type, src->foreign_sys_type))
        goto fail;
    if (src->nattrs > 0) {
        dst->attrs = calloc(src->nattrs, sizeof *dst->attrs);
        if (!dst->attrs)
            goto fail;
        for (size_t i = 0; i < src->nattrs; i++) {
            dst->nattrs = i + 1;
            if (!dup_str(&dst->attrs[i].name, src->attrs[i].name) ||
                !dup_str(&dst->attrs[i].type, src->attrs[i].type) ||
                !dup_str(&dst->attrs[i].value, src->attrs[i].value))
                goto fail;
        }
    }
    return 0;
fail:
    mkto_lead_clear(dst);
    return -1;
}

/* Whether lead l matches one of job's keys. */
static bool lead_is_members(const mkto_lead *l, const gw_job *job)
{
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (gw_lead_matches_key(l, job->get.key_type, job->get.keys[i]))
            return true;
    return false;
}

/* Fills dst with copies of the leads of src that belong to job: all of them
 * with the paging fields when full, else those matching its keys. Returns 0
 * or -1 on no memory (dst cleared). */
static int leads_for_member(const mkto_leads *src, const gw_job *job, bool full,
                            mkto_leads *dst)
{
    memset(dst, 0, sizeof *dst);
    size_t n = 0;
    for (size_t i = 0; i < src->nleads; i++)
        n += full || lead_is_members(&src->leads[i], job);
    if (full) {
        dst->remaining_count = src->remaining_count;
        if (!dup_str(&dst->new_stream_position, src->new_stream_position))
            goto fail;
    }
    if (n > 0) {
        dst->leads = calloc(n, sizeof *dst->leads);
        if (!dst->leads)
            goto fail;
        for (size_t i = 0; i < src->nleads; i++) {
            if (!full && !lead_is_members(&src->leads[i], job))
                continue;
            if (lead_copy(&dst->leads[dst->nleads], &src->leads[i]) != 0)
                goto fail;
            dst->nleads++;
        }
    }
    dst->return_count = (int)dst->nleads;
    return 0;
fail:
    mkto_leads_clear(dst);
    memset(dst, 0, sizeof *dst);
    return -1;
}

/* Keeps in r only the leads matching job's keys (in place). */
static void filter_in_place(mkto_leads *r, const gw_job *job)
{
    size_t w = 0;
    for (size_t i = 0; i < r->nleads; i++) {
        if (lead_is_members(&r->leads[i], job))
            r->leads[w++] = r->leads[i];
        else
            mkto_lead_clear(&r->leads[i]);
    }
    r->nleads = w;
    r->return_count = (int)w;
    r->remaining_count = 0;
    free(r->new_stream_position);
    r->new_stream_position = NULL;
}

/* Splits the OK answer now in the starter's fields among the members of a
 * merged call. Sets each member's outcome (OK, or BAD_RESPONSE when a copy
 * failed) and marks solo the members to run again alone (partial key set
 * and a paged answer). Engine thread; no callback runs here. */
static void distribute_ok(gw_call *c)
{
    gw_job *starter = c->job;
    const mkto_leads *src = &starter->leads;
    bool paged = src->remaining_count > 0 && src->new_stream_position &&
                 src->new_stream_position[0] != '\0';
    for (size_t i = 0; i < c->nmembers; i++) {
        gw_job *m = c->members[i];
        m->outcome = GW_OUT_OK;
        if (m == starter)
            continue;
        mkto_fault_clear(&m->fault); /* a copy from an earlier attempt is stale now */
        memset(&m->fault, 0, sizeof m->fault);
        bool full = covers_call(c, m);
        if (!full && paged) {
            m->solo = true;
            continue;
        }
        if (leads_for_member(src, m, full, &m->leads) != 0) {
            m->outcome = GW_OUT_BAD_RESPONSE;
            snprintf(m->detail, sizeof m->detail, "out of memory");
        } else {
            m->detail[0] = '\0';
        }
    }
    if (!covers_call(c, starter)) {
        if (paged) {
            starter->solo = true;
            mkto_leads_clear(&starter->leads);
            memset(&starter->leads, 0, sizeof starter->leads);
        } else {
            filter_in_place(&starter->leads, starter);
        }
    }
}

/* Gives every member of a merged call a copy of the starter's failure
 * (fault, detail, retry_after_s). Engine thread; no callback runs here. */
static void distribute_failure(gw_call *c)
{
    const gw_job *starter = c->job;
    for (size_t i = 0; i < c->nmembers; i++) {
        gw_job *m = c->members[i];
        if (m == starter)
            continue;
        mkto_fault_clear(&m->fault);
        memset(&m->fault, 0, sizeof m->fault);
        m->fault.code = starter->fault.code;
        m->fault.retryable = starter->fault.retryable;
        if (!dup_str(&m->fault.faultcode, starter->fault.faultcode) ||
            !dup_str(&m->fault.faultstring, starter->fault.faultstring) ||
            !dup_str(&m->fault.message, starter->fault.message)) {
            /* the code is what matters for the mapping; strings are a bonus */
            mkto_fault_clear(&m->fault);
            m->fault.code = starter->fault.code;
            m->fault.retryable = starter->fault.retryable;
        }
        m->retry_after_s = starter->retry_after_s;
        snprintf(m->detail, sizeof m->detail, "%s", starter->detail);
    }
}

/* Queues job again for a retry after the failed attempt r, or ends it with
 * r's outcome when its attempts or time are spent. Returns true when queued. */
static bool retry_or_end(gw_upstream *u, gw_job *job, const attempt_result *r, int64_t now)
{
    int64_t next = now + r->delay_ms;
    if (r->retry && job->attempts < u->max_attempts &&
        next + UP_MIN_ATTEMPT_MS <= job->deadline_ms) {
        job->last_outcome = r->outcome;
        job->not_before_ms = next;
        waiting_reinsert(u, job);
        return true;
    }
    end_job(u, job, r->outcome);
    return false;
}

/* Ends or requeues every member of a merged call once its answer (or
 * failure) has been handed out; then returns the call to the pool. */
static void finish_members(gw_upstream *u, gw_call *c, const attempt_result *r, int64_t now)
{
    int k = kind_index(c->job);
    bool retried = false;
    if (r->outcome == GW_OUT_OK)
        distribute_ok(c);
    else
        distribute_failure(c);
    /* from here on no key of the call is read: members may be freed by their
     * done callbacks as they end */
    size_t nm = c->nmembers;
    gw_job **mem = c->members;
    c->members = NULL;
    c->capmembers = 0;
    c->nmembers = 0;
    call_put(u, c);
    for (size_t i = 0; i < nm; i++) {
        gw_job *m = mem[i];
        if (r->outcome != GW_OUT_OK) {
            retried |= retry_or_end(u, m, r, now);
            continue;
        }
        if (m->solo) {
            if (now + UP_MIN_ATTEMPT_MS <= m->deadline_ms) {
                m->not_before_ms = now;
                m->last_outcome = GW_OUT_TIMEOUT;
                waiting_reinsert(u, m);
            } else {
                snprintf(m->detail, sizeof m->detail, "no time left for its own call");
                end_job(u, m, GW_OUT_TIMEOUT);
            }
            continue;
        }
        end_job(u, m, m->outcome);
    }
    free(mem);
    if (retried) {
        metric_add(u->m_retries[k]);
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:s, s:I, s:s, s:I}", "operation", kind_ops[k], "members",
                         (json_int_t)nm, "detail", r->outcome == GW_OUT_FAULT ? "fault" : "error",
                         "delay_ms", (json_int_t)r->delay_ms),
               "merged upstream call failed, retrying");
    }
}

/* Handles a finished transfer: gives the slot back, classifies the attempt,
 * then ends the job(s) or queues them for a retry. */
static void finish_call(gw_upstream *u, gw_call *c, CURLcode res)
{
    gw_job *job = c->job;
    int k = kind_index(job);
    int64_t now = gw_now_ms();
    call_detach(u, c);
    observe(u->m_duration[k], (double)(now - c->started_ms) / 1000.0);

    attempt_result r = res == CURLE_OK ? classify_http(u, c) : classify_transport(u, c, res);
    metric_add(u->m_calls[k][r.outcome]);
    if (r.outcome != GW_OUT_FAULT) {
        mkto_fault_clear(&job->fault); /* a fault of an earlier attempt is stale now */
        memset(&job->fault, 0, sizeof job->fault);
    }
    if (res != CURLE_OK && c->errbuf[0])
        GW_LOG(GW_LOG_DEBUG, json_pack("{s:s, s:s}", "operation", kind_ops[k], "curl", c->errbuf),
               "upstream transport error");
    if (c->nmembers > 1) {
        finish_members(u, c, &r, now);
        return;
    }
    call_put(u, c);

    if (r.outcome == GW_OUT_OK) {
        end_job(u, job, GW_OUT_OK);
        return;
    }
    int64_t next = now + r.delay_ms;
    if (r.retry && job->attempts < u->max_attempts &&
        next + UP_MIN_ATTEMPT_MS <= job->deadline_ms) {
        job->last_outcome = r.outcome;
        job->not_before_ms = next;
        metric_add(u->m_retries[k]);
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:s, s:i, s:s, s:I}", "operation", kind_ops[k], "attempt",
                         job->attempts, "detail", job->detail, "delay_ms", (json_int_t)r.delay_ms),
               "upstream call failed, retrying");
        waiting_reinsert(u, job);
        return;
    }
    end_job(u, job, r.outcome);
}

/* Collects finished transfers. Returns how many finished. */
static int reap(gw_upstream *u)
{
    int n = 0, left = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(u->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode res = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        gw_call *c = (gw_call *)(void *)priv;
        if (c) {
            finish_call(u, c, res);
            n++;
        }
    }
    return n;
}

/* Ends a job that was waiting (already unlinked) because it ran out of time:
 * RATE_LIMITED when it never got a slot in its queue time, else its last
 * attempt's outcome (TIMEOUT when none was made). */
static void expire_job(gw_upstream *u, gw_job *job, gw_outcome o)
{
    if (o == GW_OUT_RATE_LIMITED) {
        job->retry_after_s = ceil_seconds(u->last_hint_ms);
        snprintf(job->detail, sizeof job->detail, "no outbound slot before the queue deadline");
    } else if (o == GW_OUT_TIMEOUT && job->attempts == 0) {
        snprintf(job->detail, sizeof job->detail, "deadline passed before a call could start");
    }
    end_job(u, job, o);
}

/* Walks the waiting list in order: ends jobs whose time is up, skips jobs in
 * backoff, takes limiter slots for the others until the limiter says WAIT
 * (FIFO: later jobs do not overtake). Returns the monotonic time at which the
 * list next needs a look. */
static int64_t scan_waiting(gw_upstream *u, int64_t now)
{
    int64_t wake = now + UP_MAX_POLL_MS;
    bool blocked = false;      /* no call may start now (concurrency, limiter) */
    bool pace_blocked = false; /* no key lookup may start now (pacing) */
    gw_job *next;
    for (gw_job *job = u->wait_head; job; job = next) {
        next = job->q_next;
        int64_t last_start = job->deadline_ms - UP_MIN_ATTEMPT_MS;
        if (job->attempts == 0 && now >= job->queue_deadline_ms) {
            waiting_unlink(u, job);
            expire_job(u, job, GW_OUT_RATE_LIMITED);
            continue;
        }
        if (now >= last_start) {
            waiting_unlink(u, job);
            expire_job(u, job, job->attempts == 0 ? GW_OUT_TIMEOUT : job->last_outcome);
            continue;
        }
        wake = min64(wake, last_start);
        if (job->attempts == 0)
            wake = min64(wake, job->queue_deadline_ms);
        if (job->not_before_ms > now) {
            wake = min64(wake, job->not_before_ms);
            continue;
        }
        if (try_attach(u, job, now))
            continue; /* single flight: rides on a call in flight */
        if (u->gather_ms > 0 && job->attempts == 0 && is_key_job(job) &&
            now < job->enqueued_ms + u->gather_ms) {
            /* the gather window: wait a little for company */
            wake = min64(wake, job->enqueued_ms + u->gather_ms);
            continue;
        }
        if (blocked)
            continue;
        if (u->nactive >= u->max_calls) {
            blocked = true;
            continue;
        }
        /* Pacing holds back key lookups only: they are what merging helps.
         * Syncs and list pages cannot merge, so waiting would only slow
         * them; they go straight to the limiter, which keeps the window. */
        bool paced_kind = is_key_job(job);
        if (paced_kind && pace_blocked)
            continue;
        int64_t pace_ms = paced_kind ? pace_wait_ms(u, now) : 0;
        if (pace_ms > 0) {
            /* pacing: no token yet; the job (and whoever merges with it)
             * goes at the next one; later key jobs wait behind it */
            pace_blocked = true;
            job->paced = true;
            wake = min64(wake, now + pace_ms);
            continue;
        }
        if (now < u->limiter_retry_at_ms) {
            /* the limiter said WAIT: asking again before its hint (a Redis
             * round trip per socket event) would not help */
            blocked = true;
            wake = min64(wake, u->limiter_retry_at_ms);
            continue;
        }
        gw_slot slot = {0};
        int64_t hint = 0;
        gw_limit_result lr = u->lim->ops->try_acquire(u->lim, wall_ms(), &slot, &hint);
        switch (lr) {
        case GW_LIMIT_OK:
            if (u->pace_on && paced_kind)
                u->pace_tokens -= 1.0;
            if (job->paced) {
                job->paced = false;
                metric_add(u->m_pacing_waits);
            }
            waiting_unlink(u, job);
            if (start_call(u, job, &slot, now) > 0)
                next = u->wait_head; /* jobs further on may have joined the call */
            break;
        case GW_LIMIT_QUOTA:
            waiting_unlink(u, job);
            job->retry_after_s = ceil_seconds(hint);
            snprintf(job->detail, sizeof job->detail, "daily quota spent");
            end_job(u, job, GW_OUT_QUOTA);
            break;
        case GW_LIMIT_WAIT:
            blocked = true;
            u->last_hint_ms = max64(1, hint);
            u->limiter_retry_at_ms = now + u->last_hint_ms;
            wake = min64(wake, u->limiter_retry_at_ms);
            break;
        case GW_LIMIT_ERROR:
        default:
            blocked = true;
            u->limiter_retry_at_ms = now + UP_LIMIT_ERROR_WAIT_MS;
            wake = min64(wake, u->limiter_retry_at_ms);
            break;
        }
    }
    return wake;
}

/* Moves the inbox into the waiting list, numbering the jobs in the order
 * taken (taken_seq, for call_fresh_for), and reads the stop state. */
static void take_inbox(gw_upstream *u, bool *stopping, int64_t *drain)
{
    pthread_mutex_lock(&u->mu);
    gw_job *head = u->inbox_head;
    u->inbox_head = u->inbox_tail = NULL;
    *stopping = u->stopping;
    *drain = u->drain_deadline_ms;
    pthread_mutex_unlock(&u->mu);
    while (head) {
        gw_job *n = head->q_next;
        head->taken_seq = ++u->take_seq;
        list_append(&u->wait_head, &u->wait_tail, head);
        head = n;
    }
}

/* Drain deadline passed: aborts calls in flight and ends waiting jobs, all
 * SHUTDOWN (the gateway cut them, not Marketo's slowness: 503, not 504). A
 * sync whose call is cut may have been applied (maybe_applied). */
static void abort_everything(gw_upstream *u)
{
    while (u->active) {
        gw_call *c = u->active;
        call_detach(u, c);
        size_t nm = c->nmembers;
        gw_job **mem = c->members;
        c->members = NULL;
        c->capmembers = 0;
        c->nmembers = 0;
        call_put(u, c);
        for (size_t i = 0; i < nm; i++) {
            gw_job *job = mem[i];
            if (job->kind == GW_CALL_SYNC_MULTIPLE)
                job->maybe_applied = true;
            snprintf(job->detail, sizeof job->detail, "call cut at the drain deadline");
            end_job(u, job, GW_OUT_SHUTDOWN);
        }
        free(mem);
    }
    while (u->wait_head) {
        gw_job *job = u->wait_head;
        waiting_unlink(u, job);
        end_job_unqueued(u, job);
    }
}

/* Marks the engine as exited if no job arrived meanwhile. Returns true when
 * the thread may return. */
static bool try_exit(gw_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    bool ok = u->inbox_head == NULL;
    if (ok)
        u->exited = true;
    pthread_mutex_unlock(&u->mu);
    return ok;
}

/* The engine thread. */
static void *engine_main(void *arg)
{
    gw_upstream *u = arg;
    for (;;) {
        bool stopping;
        int64_t drain;
        take_inbox(u, &stopping, &drain);
        int64_t now = gw_now_ms();
        if (stopping && now >= drain) {
            abort_everything(u);
            if (try_exit(u))
                break;
            continue;
        }
        if (stopping && !u->wait_head && !u->active) {
            if (try_exit(u))
                break;
            continue;
        }
        int64_t wake = scan_waiting(u, now);
        int running = 0;
        curl_multi_perform(u->multi, &running);
        if (reap(u) > 0) {
            u->limiter_retry_at_ms = 0; /* slots came back: ask the limiter again now */
            continue;
        }
        now = gw_now_ms();
        if (stopping)
            wake = min64(wake, drain);
        int64_t tmo = wake - now;
        if (tmo < 0)
            tmo = 0;
        if (tmo > UP_MAX_POLL_MS)
            tmo = UP_MAX_POLL_MS;
        curl_multi_poll(u->multi, NULL, 0, (int)tmo, NULL);
    }
    return NULL;
}

int gw_upstream_start(gw_upstream *u)
{
    pthread_mutex_lock(&u->shut_mu);
    int rc = -1;
    if (u->started || u->joined)
        goto out;
    if (pthread_create(&u->thread, NULL, engine_main, u) != 0)
        goto out;
    u->started = true;
    rc = 0;
out:
    pthread_mutex_unlock(&u->shut_mu);
    return rc;
}

/* ---- shutdown ------------------------------------------------------------------ */

void gw_upstream_shutdown(gw_upstream *u, int64_t drain_deadline_ms)
{
    if (!u)
        return;
    pthread_mutex_lock(&u->mu);
    if (!u->stopping || drain_deadline_ms < u->drain_deadline_ms)
        u->drain_deadline_ms = drain_deadline_ms;
    u->stopping = true;
    pthread_mutex_unlock(&u->mu);
    if (u->multi)
        curl_multi_wakeup(u->multi);

    if (u->started && pthread_equal(pthread_self(), u->thread))
        return; /* from a done callback: the loop sees the flag */

    pthread_mutex_lock(&u->shut_mu);
    if (!u->joined) {
        if (u->started) {
            pthread_join(u->thread, NULL);
        } else {
            /* never started: end what was submitted, on this thread */
            pthread_mutex_lock(&u->mu);
            gw_job *head = u->inbox_head;
            u->inbox_head = u->inbox_tail = NULL;
            u->exited = true;
            pthread_mutex_unlock(&u->mu);
            while (head) {
                gw_job *n = head->q_next;
                head->q_next = head->q_prev = NULL;
                atomic_fetch_sub(&u->queued, 1);
                end_job_unqueued(u, head);
                head = n;
            }
        }
        u->joined = true;
    }
    pthread_mutex_unlock(&u->shut_mu);
}

void gw_upstream_free(gw_upstream *u)
{
    if (!u)
        return;
    gw_upstream_shutdown(u, gw_now_ms());
    while (u->pool) {
        gw_call *c = u->pool;
        u->pool = c->next;
        call_destroy(c);
    }
    if (u->multi)
        curl_multi_cleanup(u->multi);
    curl_slist_free_all(u->headers);
    if (u->encryption_key) {
        explicit_bzero(u->encryption_key, strlen(u->encryption_key));
        free(u->encryption_key);
    }
    free(u->user_id);
    free(u->endpoint);
    pthread_mutex_destroy(&u->shut_mu);
    pthread_mutex_destroy(&u->mu);
    free(u);
    curl_global_cleanup();
}
