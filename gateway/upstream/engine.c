/* gateway/upstream/engine.c - the upstream engine: one thread, one curl multi handle,
 * every call to Marketo.
 *
 * The engine does not know which API it speaks: the protocol
 * (marketo/protocol.h, chosen by protocols.c) builds each request and reads
 * each answer. What may merge is decided in coalesce.c, how an attempt ended
 * in attempt.c, and the token bucket is pacing.c; this file owns the thread,
 * the queue, the calls on the wire, limiter slots and deadlines.
 *
 * Reading order: the structs, the submit side (gw_upstream_submit, any
 * thread), then the engine thread: engine_main() moves submitted jobs from the
 * mutex-protected inbox into the private waiting list (FIFO, doubly linked),
 * scan_waiting() expires jobs and takes a pacing token and a limiter slot
 * for each call in order, up_start_call() puts one call's request on the wire,
 * finish_call() has the answer read and classified into done / retry-later /
 * give-up. Every job leaves through up_end_job(), which calls its done callback
 * exactly once and never under a lock.
 *
 * Coalescing (see upstream.h): up_start_call() is the only place where jobs
 * become a call; it folds compatible waiting key jobs into the call it
 * starts (merge_waiting). scan_waiting() lets a waiting key job ride on a
 * call in flight that already asks for all its keys and is fresh enough
 * for its cache epoch (try_attach). finish_call() hands the answer to every
 * member (gw_batch_distribute_*); each member then ends or retries on its own.
 */
#include "gateway/upstream/upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/upstream/internal.h"
#include "gateway/upstream/protocols.h"

/* ms rounded up to whole seconds, at least 1. */
static int64_t ceil_seconds(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s;
}

/* ---- metrics ------------------------------------------------------------ */

/* Registers every series the engine updates, so /metrics shows them at zero. */
static void metrics_register(gw_upstream *u)
{
    char labels[128];
    for (int k = 0; k < NKINDS; k++) {
        for (int o = 0; o < NOUTCOMES; o++) {
            snprintf(labels, sizeof labels, "operation=\"%s\",outcome=\"%s\"", op_name(u, k),
                     gw_outcome_name((gw_outcome)o));
            /* a call ends ok, fault, timeout, unreachable or bad_response */
            if (o != GW_OUT_RATE_LIMITED && o != GW_OUT_QUOTA && o != GW_OUT_SHUTDOWN)
                u->m_calls[k][o] = gw_metrics_counter(
                    "upstream_calls_total", "Calls made to Marketo, by outcome", labels);
            u->m_jobs[k][o] = gw_metrics_counter(
                "upstream_jobs_total", "Upstream jobs finished, by outcome", labels);
        }
        snprintf(labels, sizeof labels, "operation=\"%s\"", op_name(u, k));
        u->m_retries[k] = gw_metrics_counter("upstream_retries_total",
                                             "Calls retried after a failed attempt", labels);
        u->m_duration[k] = gw_metrics_histogram("upstream_call_duration_seconds",
                                                "Duration of one call to Marketo", labels,
                                                gw_duration_buckets, gw_duration_buckets_n);
    }
    u->m_queue_wait = gw_metrics_histogram("upstream_queue_wait_seconds",
                                           "Wait from submit to the first call", NULL,
                                           gw_duration_buckets, gw_duration_buckets_n);
    static const double key_buckets[] = {1, 2, 5, 10, 20, 50, 100};
    u->m_coalesced = gw_metrics_counter("upstream_coalesced_jobs_total",
                                        "Lookup jobs served by a call they did not start",
                                        NULL);
    u->m_keys_per_call = gw_metrics_histogram(
        "upstream_keys_per_call", "Distinct keys per key lookup call", NULL,
        key_buckets, sizeof key_buckets / sizeof key_buckets[0]);
    u->m_pacing_waits = gw_metrics_counter(
        "upstream_pacing_waits_total",
        "Calls that waited for a pacing token before they started", NULL);
    /* jobs waiting and calls in flight are exported by ops.c from
     * gw_upstream_queued() / gw_upstream_in_flight() */
}

/* ---- construction --------------------------------------------------------- */

gw_upstream *gw_upstream_new(const gw_config *cfg, gw_limiter *lim, gw_err *err)
{
    gw_upstream *u = NULL;
    if (!cfg || !lim || !lim->ops) {
        gw_err_set(err, 0, "upstream: missing configuration or limiter");
        return NULL;
    }
    mkto_protocol *proto = gw_protocol_new(cfg, err);
    if (!proto)
        return NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gw_err_set(err, 0, "upstream: curl_global_init failed");
        mkto_protocol_free(proto);
        return NULL;
    }
    u = calloc(1, sizeof *u);
    if (!u) {
        gw_err_set(err, 0, "upstream: out of memory");
        mkto_protocol_free(proto);
        curl_global_cleanup();
        return NULL;
    }
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->shut_mu, NULL);
    atomic_init(&u->queued, 0);
    atomic_init(&u->in_flight, 0);
    u->proto = proto;
    u->lim = lim;
    u->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
    u->connect_timeout_ms = min64(UP_CONNECT_TIMEOUT_MS, u->timeout_ms);
    u->max_response = proto->max_response;
    u->max_attempts = cfg->retry_max_attempts > 0
                          ? (int)min64(cfg->retry_max_attempts, 100) : 1;
    u->tls_verify = cfg->tls_verify;
    u->rl_window_s = cfg->rl_window_seconds > 0 ? cfg->rl_window_seconds : 20;
    u->max_calls = (long)max64(UP_MIN_HOST_CONNS, cfg->rl_max_concurrent + 4);
    u->last_hint_ms = 1000;
    u->gather_ms = cfg->coalesce_window_ms > 0 ? min64(cfg->coalesce_window_ms, 1000) : 0;
    gw_pacer_init(&u->pacer, cfg->rl_calls_per_window, u->rl_window_s * 1000,
                  cfg->rl_max_concurrent, gw_now_ms());
    u->rng = (uint64_t)wall_ms() ^ ((uint64_t)(uintptr_t)u << 16) ^ 0x9e3779b97f4a7c15ull;
    u->multi = curl_multi_init();
    if (!u->multi) {
        gw_err_set(err, 0, "upstream: curl_multi_init failed");
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
        up_end_job_unqueued(u, job);
        return;
    }
    up_list_append(&u->inbox_head, &u->inbox_tail, job);
    atomic_fetch_add(&u->queued, 1);
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
}

gw_call_limits gw_upstream_limits(const gw_upstream *u)
{
    return (gw_call_limits){.keys_per_call = u->proto->max_keys_per_call,
                            .sync_per_call = u->proto->max_sync_per_call,
                            .batch_size = u->proto->max_batch_size};
}

size_t gw_upstream_queued(gw_upstream *u)
{
    return atomic_load(&u->queued);
}

size_t gw_upstream_in_flight(gw_upstream *u)
{
    return atomic_load(&u->in_flight);
}

/* ---- the waiting list ---------------------------------------------------------- */

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
    up_end_job(u, job, o);
}

/* One walk of the waiting list. */
typedef struct scan_state {
    int64_t now;               /* monotonic time of the walk */
    int64_t wake;              /* when the list next needs a look */
    bool blocked;              /* no call may start now (concurrency, limiter) */
    bool pace_blocked;         /* no key lookup may start now (pacing) */
} scan_state;

static void wake_at(scan_state *s, int64_t t)
{
    s->wake = min64(s->wake, t);
}

/* Asks the limiter for a slot for job and starts its call, or ends the job
 * (quota spent), or notes when to ask again. Returns true when waiting jobs
 * further on may have joined the call (the walk starts over). */
static bool take_slot(gw_upstream *u, gw_job *job, bool paced_kind, scan_state *s)
{
    gw_slot slot = {0};
    int64_t hint = 0;
    switch (u->lim->ops->try_acquire(u->lim, wall_ms(), &slot, &hint)) {
    case GW_LIMIT_OK:
        if (paced_kind)
            gw_pacer_take(&u->pacer);
        if (job->paced) {
            job->paced = false;
            metric_add(u->m_pacing_waits);
        }
        up_waiting_unlink(u, job);
        return up_start_call(u, job, &slot, s->now) > 0;
    case GW_LIMIT_QUOTA:
        up_waiting_unlink(u, job);
        job->retry_after_s = ceil_seconds(hint);
        snprintf(job->detail, sizeof job->detail, "daily quota spent");
        up_end_job(u, job, GW_OUT_QUOTA);
        return false;
    case GW_LIMIT_WAIT:
        s->blocked = true;
        u->last_hint_ms = max64(1, hint);
        u->limiter_retry_at_ms = s->now + u->last_hint_ms;
        wake_at(s, u->limiter_retry_at_ms);
        return false;
    case GW_LIMIT_ERROR:
    default:
        s->blocked = true;
        u->limiter_retry_at_ms = s->now + UP_LIMIT_ERROR_WAIT_MS;
        wake_at(s, u->limiter_retry_at_ms);
        return false;
    }
}

/* Whether job's time is up; if so ends it (already unlinked). */
static bool expire_if_due(gw_upstream *u, gw_job *job, scan_state *s)
{
    int64_t last_start = job->deadline_ms - UP_MIN_ATTEMPT_MS;
    if (job->attempts == 0 && s->now >= job->queue_deadline_ms) {
        up_waiting_unlink(u, job);
        expire_job(u, job, GW_OUT_RATE_LIMITED);
        return true;
    }
    if (s->now >= last_start) {
        up_waiting_unlink(u, job);
        expire_job(u, job, job->attempts == 0 ? GW_OUT_TIMEOUT : job->last_outcome);
        return true;
    }
    wake_at(s, last_start);
    if (job->attempts == 0)
        wake_at(s, job->queue_deadline_ms);
    return false;
}

/* Walks the waiting list in order: ends jobs whose time is up, skips jobs in
 * backoff, lets key jobs ride on calls in flight, takes limiter slots for
 * the others until the limiter says WAIT (FIFO: later jobs do not
 * overtake). Returns the monotonic time at which the list next needs a look. */
static int64_t scan_waiting(gw_upstream *u, int64_t now)
{
    scan_state s = {.now = now, .wake = now + UP_MAX_POLL_MS};
    gw_job *next;
    for (gw_job *job = u->wait_head; job; job = next) {
        next = job->q_next;
        if (expire_if_due(u, job, &s))
            continue;
        if (job->not_before_ms > now) {
            wake_at(&s, job->not_before_ms);
            continue;
        }
        if (up_try_attach(u, job, now))
            continue; /* single flight: rides on a call in flight */
        bool key_job = is_key_job(u, job);
        if (u->gather_ms > 0 && job->attempts == 0 && key_job &&
            now < job->enqueued_ms + u->gather_ms) {
            /* the gather window: wait a little for company */
            wake_at(&s, job->enqueued_ms + u->gather_ms);
            continue;
        }
        if (s.blocked)
            continue;
        if (u->nactive >= u->max_calls) {
            s.blocked = true;
            continue;
        }
        /* Pacing holds back key lookups only: they are what merging helps.
         * Syncs and list pages cannot merge, so waiting would only slow
         * them; they go straight to the limiter, which keeps the window. */
        if (key_job && s.pace_blocked)
            continue;
        int64_t pace_ms = key_job ? gw_pacer_wait_ms(&u->pacer, now) : 0;
        if (pace_ms > 0) {
            /* no token yet: the job (and whoever merges with it) goes at
             * the next one; later key jobs wait behind it */
            s.pace_blocked = true;
            job->paced = true;
            wake_at(&s, now + pace_ms);
            continue;
        }
        if (now < u->limiter_retry_at_ms) {
            /* the limiter said WAIT: asking again before its hint (a Redis
             * round trip per socket event) would not help */
            s.blocked = true;
            wake_at(&s, u->limiter_retry_at_ms);
            continue;
        }
        if (take_slot(u, job, key_job, &s))
            next = u->wait_head; /* jobs further on may have joined the call */
    }
    return s.wake;
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
        up_list_append(&u->wait_head, &u->wait_tail, head);
        head = n;
    }
}

/* Drain deadline passed: aborts calls in flight and ends waiting jobs, all
 * SHUTDOWN (the gateway cut them, not Marketo's slowness: 503, not 504). A
 * sync whose call is cut may have been applied (maybe_applied). */
static void abort_everything(gw_upstream *u)
{
    up_abort_calls(u);
    while (u->wait_head) {
        gw_job *job = u->wait_head;
        up_waiting_unlink(u, job);
        up_end_job_unqueued(u, job);
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
        if (up_reap(u) > 0) {
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
                up_end_job_unqueued(u, head);
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
        up_call_destroy(c);
    }
    if (u->multi)
        curl_multi_cleanup(u->multi);
    mkto_protocol_free(u->proto);
    pthread_mutex_destroy(&u->shut_mu);
    pthread_mutex_destroy(&u->mu);
    free(u);
    curl_global_cleanup();
}
