/* gateway/upstream/call.c - one call's life: taken from the pool, its
 * request built by the protocol and put on the wire, its answer read by the
 * protocol and judged (attempt.c), then handed to every member of its batch
 * (coalesce.c), each of which ends or goes back to the waiting list.
 *
 * Reading order: the pool and the request (call_get, build_request,
 * setup_easy), batching and single flight (merge_waiting, up_try_attach),
 * up_start_call, then the answer side (judge_call, finish_call, up_reap).
 * Engine thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/upstream/attempt.h"
#include "gateway/upstream/internal.h"

void up_call_destroy(gw_call *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    mkto_request_clear(&c->req);
    curl_slist_free_all(c->headers);
    free(c->body);
    gw_batch_free(&c->batch);
    free(c);
}

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
        if (!c->easy || gw_batch_init(&c->batch, u->proto->max_keys_per_call) != 0) {
            up_call_destroy(c);
            return NULL;
        }
    }
    c->next = c->prev = NULL;
    c->job = NULL;
    c->batch.nmembers = 0;
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
    mkto_request_clear(&c->req);
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    c->job = NULL;
    c->batch.nmembers = 0;
    c->batch.nkeys = 0;
    c->len = 0;
    if (c->cap > UP_BODY_KEEP) {
        free(c->body);
        c->body = NULL;
        c->cap = 0;
    }
    if (u->npool >= UP_POOL_MAX) {
        up_call_destroy(c);
        return;
    }
    c->next = u->pool;
    u->pool = c;
    u->npool++;
}

/* Has the protocol build the call's request (fresh credentials each time)
 * and turns its headers into curl's list. Returns 0, or -1 with err filled:
 * -1 and an empty err.msg means out of memory, else the call's input cannot
 * be expressed in the API. */
static int build_request(gw_upstream *u, gw_call *c, mkto_err *err)
{
    const gw_job *job = c->job;
    mkto_call call = {.op = MKTO_OP_GET_LEADS, .query = &c->batch.get};
    if (job->kind == GW_CALL_SYNC_MULTIPLE)
        call = (mkto_call){.op = MKTO_OP_SYNC_LEADS, .leads = job->sync_leads,
                           .nleads = job->nsync, .dedup = job->dedup};
    mkto_request_clear(&c->req);
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    if (u->proto->ops->build(u->proto, &call, &c->req, err) != 0)
        return -1;
    /* no "Expect: 100-continue" round trip before the body */
    for (size_t i = 0; i <= c->req.nheaders; i++) {
        const char *line = i < c->req.nheaders ? c->req.headers[i] : "Expect:";
        struct curl_slist *n = curl_slist_append(c->headers, line);
        if (!n) {
            snprintf(err->msg, sizeof err->msg, "out of memory");
            return -1;
        }
        c->headers = n;
    }
    return 0;
}

/* Sets every option of the call's request on its easy handle. */
static void setup_easy(gw_upstream *u, gw_call *c, int64_t timeout_ms)
{
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, c->req.url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    if (c->req.body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req.body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req.body_len);
    }
    if (strcmp(c->req.method, c->req.body ? "POST" : "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->req.method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
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

/* Folds the waiting jobs that may join call c (gw_batch_can_merge) into it,
 * in queue order, while its key set has room. Returns the jobs added. */
static size_t merge_waiting(gw_upstream *u, gw_call *c, int64_t now)
{
    size_t added = 0;
    gw_job *next;
    for (gw_job *j = u->wait_head; j && !gw_batch_full(&c->batch); j = next) {
        next = j->q_next;
        if (!job_ready(j, now, c->ends_ms) || !gw_batch_can_merge(&c->batch, j))
            continue;
        if (gw_batch_add(&c->batch, j) != 0)
            break;
        up_waiting_unlink(u, j);
        added++;
    }
    return added;
}

/* Single flight: lets a waiting key job ride on a call in flight that can
 * carry it (gw_batch_can_carry). Returns true when the job joined. */
bool up_try_attach(gw_upstream *u, gw_job *job, int64_t now)
{
    if (!is_key_job(u, job) || job->attach_gen == u->call_gen)
        return false;
    job->attach_gen = u->call_gen;
    for (gw_call *c = u->active; c; c = c->next) {
        if (!job_ready(job, now, c->ends_ms) || !gw_batch_can_carry(&c->batch, job))
            continue;
        if (gw_batch_add(&c->batch, job) != 0)
            return false;
        up_waiting_unlink(u, job);
        if (job->attempts == 0)
            observe(u->m_queue_wait, (double)(now - job->enqueued_ms) / 1000.0);
        job->attempts++;
        note_coalesced(u, job);
        return true;
    }
    return false;
}

/* gw_batch_unmerge's requeue: back into the waiting list. */
static void requeue_member(gw_job *job, void *arg)
{
    up_waiting_reinsert(arg, job);
}

/* Takes a call's members out of it (the caller now owns the array) so that
 * their done callbacks never see the call in use. */
static gw_job **take_members(gw_call *c, size_t *n)
{
    gw_job **mem = c->batch.members;
    *n = c->batch.nmembers;
    c->batch.members = NULL;
    c->batch.capmembers = 0;
    c->batch.nmembers = 0;
    return mem;
}

/* Ends every job of mem with outcome o, giving each the starter's detail. */
static void end_members(gw_upstream *u, gw_job **mem, size_t nm, const gw_job *starter,
                        const char *detail, gw_outcome o)
{
    for (size_t i = 0; i < nm; i++) {
        if (mem[i] != starter)
            snprintf(mem[i]->detail, sizeof mem[i]->detail, "%s", detail);
        up_end_job(u, mem[i], o);
    }
    free(mem);
}

/* Books the start of call c for each of its members. */
static void note_start(gw_upstream *u, gw_call *c, int64_t now)
{
    for (size_t i = 0; i < c->batch.nmembers; i++) {
        gw_job *m = c->batch.members[i];
        if (m->attempts == 0)
            observe(u->m_queue_wait, (double)(now - m->enqueued_ms) / 1000.0);
        m->attempts++;
        m->paced = false;
        if (m != c->job)
            note_coalesced(u, m);
    }
    if (c->batch.nkeys > 0)
        observe(u->m_keys_per_call, (double)c->batch.nkeys);
}

/* Starts one call for a job that holds a limiter slot and is already out of
 * the waiting list, folding compatible waiting key jobs into it; on failure
 * the slot is given back and the members end. This is the one place where
 * jobs become calls. Returns the number of waiting jobs it took. */
size_t up_start_call(gw_upstream *u, gw_job *job, const gw_slot *slot, int64_t now)
{
    mkto_err perr = {{0}};
    gw_outcome fail = GW_OUT_UNREACHABLE;
    size_t merged = 0;
    gw_call *c = call_get(u);
    if (!c) {
        snprintf(job->detail, sizeof job->detail, "out of memory");
        up_end_job(u, job, fail);
        u->lim->ops->release(u->lim, slot, wall_ms());
        return 0;
    }
    int64_t budget = job->deadline_ms - now;
    int64_t tmo = min64(u->timeout_ms, budget);
    c->job = job;
    c->ends_ms = now + tmo;
    if (gw_batch_start(&c->batch, job) != 0) {
        snprintf(job->detail, sizeof job->detail, "out of memory");
        goto fail;
    }
    if (c->batch.shareable)
        merged = merge_waiting(u, c, now);
    int rc = build_request(u, c, &perr);
    if (rc != 0 && c->batch.nmembers > 1) {
        /* one member's keys cannot be encoded: let each run on its own */
        gw_batch_unmerge(&c->batch, requeue_member, u);
        rc = build_request(u, c, &perr);
    }
    if (rc != 0) {
        /* the caller's input cannot be encoded: no call is made */
        fail = GW_OUT_BAD_RESPONSE;
        snprintf(job->detail, sizeof job->detail, "request: %.120s", perr.msg);
        goto fail;
    }
    c->deadline_capped = budget <= u->timeout_ms;
    c->slot = *slot;
    c->started_ms = now;
    gw_batch_stamp(&c->batch, u->take_seq);
    setup_easy(u, c, tmo);
    if (curl_multi_add_handle(u->multi, c->easy) != CURLM_OK) {
        snprintf(job->detail, sizeof job->detail, "curl_multi_add_handle failed");
        goto fail;
    }
    note_start(u, c, now);
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
    if (c->batch.nmembers == 0) {
        call_put(u, c);
        up_end_job(u, job, fail);
        return merged;
    }
    size_t nm;
    gw_job **mem = take_members(c, &nm);
    char detail[sizeof job->detail];
    snprintf(detail, sizeof detail, "%s", job->detail);
    call_put(u, c);
    end_members(u, mem, nm, job, detail, fail);
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

/* Has the protocol read the answer of a finished call into the starter's
 * result fields, gathers the facts of the attempt and classifies it
 * (attempt.c). Fills the starter's detail, retry_after_s, maybe_applied. */
static void judge_call(gw_upstream *u, gw_call *c, CURLcode res, gw_attempt *r)
{
    gw_job *job = c->job;
    mkto_err perr = {{0}};
    gw_attempt_facts f = {
        .kind = job->kind, .attempts = job->attempts, .transport = res,
        .too_large = c->too_large, .deadline_capped = c->deadline_capped,
        .max_response = c->max, .parsed = MKTO_PARSED_FOREIGN,
    };
    mkto_fault_clear(&job->fault);
    if (res == CURLE_OK) {
        curl_off_t ra = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &f.http_status);
        if (curl_easy_getinfo(c->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            f.retry_after_s = (int64_t)ra;
        mkto_answer ans = {.leads = &job->leads, .sync = &job->sync, .fault = &job->fault};
        mkto_op op = job->kind == GW_CALL_SYNC_MULTIPLE ? MKTO_OP_SYNC_LEADS : MKTO_OP_GET_LEADS;
        f.parsed = u->proto->ops->parse(u->proto, op, f.http_status, c->body ? c->body : "",
                                        c->len, &ans, &perr);
        f.parse_msg = perr.msg;
        f.fault_code = job->fault.code;
    } else {
        f.sent = call_was_sent(c->easy);
    }
    gw_attempt_policy pol = {.window_s = u->rl_window_s, .now_wall_s = wall_ms() / 1000,
                             .rng = &u->rng};
    gw_attempt_classify(&f, &pol, r);
    if (r->outcome != GW_OUT_FAULT)
        mkto_fault_clear(&job->fault); /* only a fault's own text travels */
    snprintf(job->detail, sizeof job->detail, "%s", r->detail);
    if (r->retry_after_s > 0)
        job->retry_after_s = r->retry_after_s;
    if (r->maybe_applied)
        job->maybe_applied = true;
}

/* Queues job again for a retry after the failed attempt r, or ends it with
 * r's outcome when its attempts or time are spent. Returns true when queued. */
static bool retry_or_end(gw_upstream *u, gw_job *job, const gw_attempt *r, int64_t now)
{
    int64_t next = now + r->delay_ms;
    if (r->retry && job->attempts < u->max_attempts &&
        next + UP_MIN_ATTEMPT_MS <= job->deadline_ms) {
        job->last_outcome = r->outcome;
        job->not_before_ms = next;
        up_waiting_reinsert(u, job);
        return true;
    }
    up_end_job(u, job, r->outcome);
    return false;
}

/* Ends or requeues every member of a merged call once its answer (or
 * failure) has been handed out; then returns the call to the pool. */
static void finish_members(gw_upstream *u, gw_call *c, const gw_attempt *r, int64_t now)
{
    int k = kind_index(c->job);
    bool retried = false;
    if (r->outcome == GW_OUT_OK)
        gw_batch_distribute_ok(&c->batch);
    else
        gw_batch_distribute_failure(&c->batch);
    /* from here on no key of the call is read: members may be freed by their
     * done callbacks as they end */
    size_t nm;
    gw_job **mem = take_members(c, &nm);
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
                up_waiting_reinsert(u, m);
            } else {
                snprintf(m->detail, sizeof m->detail, "no time left for its own call");
                up_end_job(u, m, GW_OUT_TIMEOUT);
            }
            continue;
        }
        up_end_job(u, m, m->outcome);
    }
    free(mem);
    if (retried) {
        metric_add(u->m_retries[k]);
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:s, s:I, s:s, s:I}", "operation", op_name(u, k), "members",
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

    gw_attempt r;
    judge_call(u, c, res, &r);
    metric_add(u->m_calls[k][r.outcome]);
    if (res != CURLE_OK && c->errbuf[0])
        GW_LOG(GW_LOG_DEBUG, json_pack("{s:s, s:s}", "operation", op_name(u, k), "curl", c->errbuf),
               "upstream transport error");
    if (c->batch.nmembers > 1) {
        finish_members(u, c, &r, now);
        return;
    }
    call_put(u, c);

    if (r.outcome == GW_OUT_OK) {
        up_end_job(u, job, GW_OUT_OK);
        return;
    }
    int64_t next = now + r.delay_ms;
    if (r.retry && job->attempts < u->max_attempts &&
        next + UP_MIN_ATTEMPT_MS <= job->deadline_ms) {
        job->last_outcome = r.outcome;
        job->not_before_ms = next;
        metric_add(u->m_retries[k]);
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:s, s:i, s:s, s:I}", "operation", op_name(u, k), "attempt",
                         job->attempts, "detail", job->detail, "delay_ms", (json_int_t)r.delay_ms),
               "upstream call failed, retrying");
        up_waiting_reinsert(u, job);
        return;
    }
    up_end_job(u, job, r.outcome);
}

/* Collects finished transfers. Returns how many finished. */
int up_reap(gw_upstream *u)
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

void up_abort_calls(gw_upstream *u)
{
    while (u->active) {
        gw_call *c = u->active;
        call_detach(u, c);
        size_t nm;
        gw_job **mem = take_members(c, &nm);
        call_put(u, c);
        for (size_t i = 0; i < nm; i++) {
            gw_job *job = mem[i];
            if (job->kind == GW_CALL_SYNC_MULTIPLE)
                job->maybe_applied = true;
            snprintf(job->detail, sizeof job->detail, "call cut at the drain deadline");
            up_end_job(u, job, GW_OUT_SHUTDOWN);
        }
        free(mem);
    }
}
