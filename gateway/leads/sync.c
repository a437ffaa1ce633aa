/* gateway/leads/sync.c - POST /leads/sync.
 *
 * The body is validated whole before anything is sent (a bad body is 400
 * and costs no SOAP call), one lead at a time, keeping only where each lead
 * is (gw_sync_body_scan). The leads are cut into batches of
 * gateway.sync_batch_size (at most 300), one syncMultipleLeads job each,
 * sent in waves of ratelimit.max_concurrent batches (as many as can be in
 * flight anyway): a wave's leads are converted from the body when it is
 * submitted and freed when it has ended, so a 10,000-lead body costs its own
 * bytes plus one wave, not a parsed copy of everything. A wave whose every
 * batch was refused by the outbound budget ends the sync: the leads after it
 * are NOT_SENT for the same reason. Each input lead gets exactly one result,
 * in input order:
 *   - batch answered:        status k of the answer is lead k of the batch;
 *                            a lead Marketo gave no status for is FAILED;
 *   - batch faulted:         FAILED, "Marketo fault <code>";
 *   - batch never answered:  NOT_SENT with the reason (and a warning when a
 *                            call may have reached Marketo unanswered: a
 *                            connection lost after the request was written,
 *                            a timeout, a call cut at shutdown). Such a
 *                            batch was sent exactly once: neither the
 *                            engine nor libcurl re-sends a sync.
 * The reply is 200, except when every batch was refused by the outbound
 * budget (rate limit or daily quota: nothing was sent), which is 429.
 *
 * Freshness: after each wave and before replying, whatever the outcome, the
 * cache entries of every key the wave may have changed are invalidated (e-mails, ids given
 * and returned, and the values of the key-mapping attributes sent), which
 * also advances the cache epoch so that a lookup in flight cannot write
 * pre-sync data back. A sync answers only once the invalidation is
 * confirmed: when the shared cache (Redis) did not take it, the cache keeps
 * it and replays it in the background, and the request waits (suspended)
 * until it landed, at most redis.invalidation_wait_ms and never past its
 * deadline. The answer says which: X-Cache-Invalidation: confirmed, or
 * pending (and "cache_invalidation": "pending" in the body) when other
 * replicas may still serve the pre-sync entries until the replay lands.
 */
#include "gateway/http/server.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/store/cache.h"
#include "gateway/leads/leadjson.h"
#include "gateway/leads/leads_common.h"
#include "gateway/log.h"
#include "gateway/upstream/upstream.h"
#include "marketo/leadkey.h"
#include "soap/soap.h"

/* A body this large makes the sync give its freed memory back to the
 * system when it ends (glibc keeps small freed blocks otherwise). */
#define SY_TRIM_BYTES (1u << 20)

/* Everything one POST /leads/sync needs until it replies. */
typedef struct sy_state {
    gw_leads_waiter waiter;   /* pending count + request, for the done callbacks */
    gw_sync_body body;        /* where each lead is in the request body (owned) */
    const char *text;         /* the request body (the server's, valid for the request) */
    size_t text_len;          /* its length */
    size_t batch;             /* leads per batch */
    size_t wave;              /* batches per wave */
    size_t first;             /* index of the current wave's first lead */
    mkto_lead *leads;         /* the current wave's leads, converted (owned) */
    size_t nleads;            /* entries in leads */
    gw_job *jobs;             /* the current wave's batches (owned, wave entries) */
    size_t njobs;             /* batches in the current wave */
    json_t *results;          /* one result per lead of the waves done (owned) */
    size_t created, updated, failed, not_sent; /* counts of the results */
    int calls;                /* SOAP calls spent (access log) */
    bool sent_any;            /* some batch was not refused by the outbound budget */
    bool inval_kept;          /* a wave's invalidation was kept for a replay */
    atomic_bool cache_pending; /* the invalidation was not confirmed before the reply */
} sy_state;

/* Frees the current wave: its leads and its jobs' results. */
static void wave_free(sy_state *st)
{
    if (st->jobs) {
        for (size_t i = 0; i < st->njobs; i++)
            gw_job_clear_results(&st->jobs[i]);
        memset(st->jobs, 0, st->wave * sizeof *st->jobs);
    }
    st->njobs = 0;
    for (size_t i = 0; i < st->nleads; i++)
        mkto_lead_clear(&st->leads[i]);
    st->nleads = 0;
}

/* Frees a sy_state and everything it owns (called by the server). */
static void sy_state_free(void *p)
{
    sy_state *st = p;
    if (!st)
        return;
    wave_free(st);
    free(st->jobs);
    free(st->leads);
    json_decref(st->results);
    gw_sync_body_clear(&st->body);
    bool big = st->text_len >= SY_TRIM_BYTES;
    free(st);
    if (big)
        malloc_trim(0);
}

/* Why batch j never got Marketo's answer, for "error" (the caller adds
 * "may have been applied" when j->maybe_applied). */
static const char *not_sent_reason(const gw_job *j)
{
    switch (j->outcome) {
    case GW_OUT_RATE_LIMITED:
        return "no outbound slot before the queue deadline (rate limit)";
    case GW_OUT_QUOTA:
        return "the daily Marketo API quota is spent";
    case GW_OUT_TIMEOUT:
        return "Marketo did not answer before the deadline";
    case GW_OUT_UNREACHABLE:
        /* sent, then the connection died before the answer (Marketo reset
         * or closed it, or died): it was reached */
        return j->maybe_applied ? "the connection to Marketo was lost before its answer"
                                : "Marketo could not be reached";
    case GW_OUT_BAD_RESPONSE:
        return "Marketo's answer could not be read";
    case GW_OUT_SHUTDOWN:
        return "the gateway is shutting down";
    default:
        return "not sent";
    }
}

/* Adds one key to the invalidation list (normalised; skipped when empty or
 * longer than MKTO_KEY_MAX_LEN: no lookup accepts such a key, so no cache
 * entry has it). keys/vals have room for every call invalidate_cache makes. */
static void add_key(gw_cache_key *keys, char **vals, size_t *n, mkto_key_type t,
                    const char *value)
{
    char buf[MKTO_KEY_MAX_LEN + 1];
    if (!value || value[0] == '\0')
        return;
    if (mkto_key_normalize(t, value, buf, sizeof buf) != 0)
        return;
    char *v = strdup(buf);
    if (!v)
        return;
    vals[*n] = v;
    keys[*n].type = t;
    keys[*n].value = v;
    (*n)++;
}

/* How a sync's cache invalidation went. */
typedef enum sy_inval {
    SY_INVAL_CONFIRMED = 0, /* the cache took it (or there is no cache) */
    SY_INVAL_KEPT,          /* not taken: the cache keeps it for a replay */
    SY_INVAL_NOT_DONE,      /* could not even be built (no memory) */
} sy_inval;

/* Invalidates the cache for everything the current wave may have changed: e-mail
 * and id keys of the input, ids Marketo returned, and the values of the
 * key-mapping attributes sent (Cookies, LeadOwnerEmail, SFDC ids), so that
 * no entry, negative ones included, survives the sync. */
static sy_inval invalidate_cache(gw_req *r, sy_state *st)
{
    gw_cache *cache = gw_req_app(r)->cache;
    sy_inval result = SY_INVAL_NOT_DONE;
    if (!cache)
        return SY_INVAL_CONFIRMED;
    size_t nl = st->nleads;
    size_t nmap = 0;
    for (size_t i = 0; i < nl; i++)
        nmap += st->leads[i].nattrs;
    size_t cap = nl * 3 + nmap + 1;
    gw_cache_key *keys = calloc(cap, sizeof *keys);
    char **vals = calloc(cap, sizeof *vals);
    int64_t *ids = calloc(nl * 2 + 1, sizeof *ids);
    size_t nk = 0, ni = 0;
    if (!keys || !vals || !ids) {
        GW_LOG(GW_LOG_ERROR, json_pack("{s:s}", "request_id", gw_req_id(r)),
               "out of memory building the cache invalidation");
        goto out;
    }
    char idbuf[24];
    for (size_t i = 0; i < nl; i++) {
        const mkto_lead *l = &st->leads[i];
        add_key(keys, vals, &nk, MKTO_KEY_EMAIL, l->email);
        if (l->has_id) {
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)l->id);
            add_key(keys, vals, &nk, MKTO_KEY_IDNUM, idbuf);
            ids[ni++] = l->id;
        }
        for (size_t a = 0; a < l->nattrs; a++) {
            for (int t = 0; t < MKTO_KEY__COUNT; t++) {
                const char *an = mkto_key_type_attr((mkto_key_type)t);
                if (an && strcmp(an, l->attrs[a].name) == 0) {
                    add_key(keys, vals, &nk, (mkto_key_type)t, l->attrs[a].value);
                    break;
                }
            }
            /* an attribute named Email changes the e-mail key too */
            if (strcmp(l->attrs[a].name, "Email") == 0)
                add_key(keys, vals, &nk, MKTO_KEY_EMAIL, l->attrs[a].value);
        }
    }
    for (size_t b = 0; b < st->njobs; b++) {
        const gw_job *j = &st->jobs[b];
        if (j->outcome != GW_OUT_OK)
            continue;
        for (size_t k = 0; k < j->sync.nstatuses && k < j->nsync; k++) {
            int64_t lid = j->sync.statuses[k].lead_id;
            if (lid <= 0)
                continue;
            const mkto_lead *l = &j->sync_leads[k];
            if (l->has_id && l->id == lid)
                continue; /* already listed */
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)lid);
            add_key(keys, vals, &nk, MKTO_KEY_IDNUM, idbuf);
            ids[ni++] = lid;
        }
    }
    if (cache->ops->invalidate(cache, keys, nk, ids, ni) == 0) {
        result = SY_INVAL_CONFIRMED;
    } else {
        result = SY_INVAL_KEPT;
        GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:I, s:I}", "request_id", gw_req_id(r),
                                      "keys", (json_int_t)nk, "ids", (json_int_t)ni),
               "cache invalidation after a sync not confirmed; kept for a replay");
    }
out:
    if (vals)
        for (size_t i = 0; i < nk; i++)
            free(vals[i]);
    free(vals);
    free(keys);
    free(ids);
    return result;
}

/* One result object for lead index idx (its input id in_id, or 0) of batch
 * job j, position k. */
static json_t *result_for(size_t idx, int64_t in_id, const gw_job *j, size_t k,
                          size_t *created, size_t *updated, size_t *failed, size_t *not_sent)
{
    json_t *res = json_object();
    if (!res)
        return NULL;
    const char *status;
    char why[256]; /* the result's "error" member: a lead's outcome, not an error of the request */
    why[0] = '\0';
    int64_t id = in_id;

    if (j->outcome == GW_OUT_OK) {
        if (k < j->sync.nstatuses) {
            const mkto_sync_status *s = &j->sync.statuses[k];
            if (s->lead_id > 0)
                id = s->lead_id;
            switch (s->state) {
            case MKTO_SYNC_CREATED:
                status = "CREATED";
                (*created)++;
                break;
            case MKTO_SYNC_UPDATED:
                status = "UPDATED";
                (*updated)++;
                break;
            default:
                status = "FAILED";
                (*failed)++;
                snprintf(why, sizeof why, "%s", s->error ? s->error : "Marketo reported a failure");
                break;
            }
        } else {
            status = "FAILED";
            (*failed)++;
            snprintf(why, sizeof why, "no status returned by Marketo");
        }
    } else if (j->outcome == GW_OUT_FAULT) {
        status = "FAILED";
        (*failed)++;
        snprintf(why, sizeof why, "Marketo fault %d", j->fault.code);
    } else {
        status = "NOT_SENT";
        (*not_sent)++;
        snprintf(why, sizeof why, "%s%s", not_sent_reason(j),
                 j->maybe_applied ? "; the batch may have been applied" : "");
    }
    int rc = json_object_set_new(res, "index", json_integer((json_int_t)idx));
    rc |= json_object_set_new(res, "id", id > 0 ? json_integer((json_int_t)id) : json_null());
    rc |= json_object_set_new(res, "status", json_string(status));
    if (why[0])
        rc |= json_object_set_new(res, "error", json_string(why));
    if (rc != 0) {
        json_decref(res);
        return NULL;
    }
    return res;
}

static void sync_on_resume(gw_req *r);

/* Converts the next wave's leads from the body and submits its batches.
 * Returns 0 (submitted, or answered 429 by the API key's budget on the
 * first wave), or -1 (no memory; nothing submitted). */
static int submit_wave(gw_req *r, sy_state *st)
{
    gw_app *app = gw_req_app(r);
    gw_err err = {0}; /* the body was checked whole: only memory can fail here */
    size_t n = st->body.nleads - st->first;
    if (n > st->wave * st->batch)
        n = st->wave * st->batch;
    if (gw_sync_body_leads(&st->body, st->text, st->first, n, st->leads, &err) != 0)
        return -1;
    st->nleads = n;
    st->njobs = (n + st->batch - 1) / st->batch;
    for (size_t b = 0; b < st->njobs; b++) {
        gw_job *j = &st->jobs[b];
        size_t first = b * st->batch;
        j->kind = GW_CALL_SYNC_MULTIPLE;
        j->sync_leads = &st->leads[first];
        j->nsync = n - first < st->batch ? n - first : st->batch;
        j->dedup = st->body.dedup;
        gw_leads_job_deadlines(r, j);
    }
    gw_leads_submit_all(r, app->upstream, &st->waiter, st->jobs, st->njobs, sync_on_resume);
    return 0;
}

/* Appends the result of lead idx (batch job j, position k) to st->results. */
static int add_result(sy_state *st, size_t idx, const gw_job *j, size_t k)
{
    json_t *res = result_for(idx, st->body.spans[idx].id, j, k, &st->created, &st->updated,
                             &st->failed, &st->not_sent);
    return res != NULL && json_array_append_new(st->results, res) == 0 ? 0 : -1;
}

/* Replies 200 with every result, in input order, and whether the cache
 * invalidation was confirmed (on an HTTP thread, directly or on resume). */
static void sync_reply(gw_req *r)
{
    sy_state *st = gw_req_state(r);
    bool pending = atomic_load(&st->cache_pending);
    json_t *body = json_pack("{s:O, s:I, s:I, s:I, s:I}", "results", st->results,
                             "created", (json_int_t)st->created, "updated",
                             (json_int_t)st->updated, "failed", (json_int_t)st->failed,
                             "not_sent", (json_int_t)st->not_sent);
    if (body != NULL && pending &&
        json_object_set_new(body, "cache_invalidation", json_string("pending")) != 0) {
        json_decref(body);
        body = NULL;
    }
    if (!body) {
        gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
        return;
    }
    GW_LOG(pending ? GW_LOG_WARN : GW_LOG_INFO,
           json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "request_id", gw_req_id(r),
                     "leads", (json_int_t)st->body.nleads, "created", (json_int_t)st->created,
                     "updated", (json_int_t)st->updated, "failed", (json_int_t)st->failed,
                     "not_sent", (json_int_t)st->not_sent, "cache_invalidation",
                     pending ? "pending" : "confirmed"),
           "sync finished");
    gw_req_add_header(r, "X-Cache-Invalidation", pending ? "pending" : "confirmed");
    gw_req_reply_json(r, 200, body);
}

/* The cache's answer to await_invalidations (a cache thread): resumes the
 * request, whose sync_reply then says whether the invalidation landed. */
static void sync_settled(void *arg, bool confirmed)
{
    sy_state *st = arg;
    atomic_store(&st->cache_pending, !confirmed);
    gw_req_resume(st->waiter.req);
}

/* The invalidation was not confirmed: keeps the request suspended until the
 * cache's replay lands, at most redis.invalidation_wait_ms and never past
 * the request's deadline; sync_reply runs then. When the cache cannot wait
 * (or there is no time left) the reply goes at once, marked pending. */
static void await_invalidation(gw_req *r, sy_state *st)
{
    gw_app *app = gw_req_app(r);
    gw_cache *cache = app->cache;
    int64_t now = gw_now_ms();
    int64_t deadline = gw_req_start_ms(r) + app->cfg->request_timeout_ms;
    int64_t wait = app->cfg->redis_invalidation_wait_ms;
    if (now + wait < deadline)
        deadline = now + wait;
    atomic_store(&st->cache_pending, true);
    if (cache->ops->await_invalidations == NULL || deadline <= now) {
        sync_reply(r);
        return;
    }
    st->waiter.req = r;
    gw_req_suspend(r, sync_reply);
    int rc = cache->ops->await_invalidations(cache, deadline, sync_settled, st);
    if (rc == 0)
        return; /* sync_settled resumes it */
    atomic_store(&st->cache_pending, rc != 1);
    gw_req_resume(r); /* nothing to wait for, or cannot wait: sync_reply runs at once */
}

/* Runs on an HTTP thread once every batch of a wave has ended: invalidates
 * what the wave may have changed, records its results, then submits the
 * next wave or replies (after waiting for a kept invalidation, see
 * await_invalidation). */
static void sync_on_resume(gw_req *r)
{
    sy_state *st = gw_req_state(r);
    const gw_job *refused = NULL;
    bool wave_refused = true;

    for (size_t b = 0; b < st->njobs; b++) {
        const gw_job *j = &st->jobs[b];
        st->calls += j->attempts;
        if (j->outcome == GW_OUT_RATE_LIMITED || j->outcome == GW_OUT_QUOTA) {
            if (!refused)
                refused = j;
        } else {
            wave_refused = false;
        }
        if (j->outcome == GW_OUT_OK && j->sync.nstatuses != j->nsync)
            GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:I, s:I}", "request_id", gw_req_id(r),
                                          "records", (json_int_t)j->nsync,
                                          "statuses", (json_int_t)j->sync.nstatuses),
                   "syncMultipleLeads answered %zu statuses for %zu records",
                   j->sync.nstatuses, j->nsync);
    }
    sy_inval inval = invalidate_cache(r, st);
    if (wave_refused && !st->sent_any) {
        /* nothing reached Marketo: nothing the cache holds went stale */
        gw_req_note_upstream(r, st->calls);
        gw_req_reply_job_error(r, refused);
        return;
    }
    if (inval == SY_INVAL_KEPT)
        st->inval_kept = true;
    else if (inval == SY_INVAL_NOT_DONE)
        atomic_store(&st->cache_pending, true); /* no memory: nothing kept to wait for */
    st->sent_any = true;
    for (size_t i = 0; i < st->nleads; i++)
        if (add_result(st, st->first + i, &st->jobs[i / st->batch], i % st->batch) != 0)
            goto oom;
    size_t next = st->first + st->nleads;
    if (next < st->body.nleads && !wave_refused) {
        wave_free(st);
        st->first = next;
        if (submit_wave(r, st) != 0)
            goto oom;
        return;
    }
    /* after a wave the budget refused whole, the rest is not sent either */
    for (size_t i = next; i < st->body.nleads; i++)
        if (add_result(st, i, refused, 0) != 0)
            goto oom;
    gw_req_note_upstream(r, st->calls);
    if (st->inval_kept) {
        await_invalidation(r, st);
        return;
    }
    sync_reply(r);
    return;
oom:
    gw_req_note_upstream(r, st->calls);
    gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
}

void gw_handle_sync(gw_req *r)
{
    gw_app *app = gw_req_app(r);
    const gw_config *cfg = app->cfg;
    gw_err err = {400, "invalid sync body"}; /* in case the scan names nothing */
    size_t len = 0;
    const char *body = gw_req_body(r, &len);

    sy_state *st = calloc(1, sizeof *st);
    if (!st) {
        gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
        return;
    }
    gw_req_set_state(r, st, sy_state_free);
    st->text = body ? body : "";
    st->text_len = len;
    size_t max_leads = cfg->max_sync_leads > 0 ? (size_t)cfg->max_sync_leads : 10000;
    if (gw_sync_body_scan(st->text, len, max_leads, &st->body, &err) != 0) {
        gw_req_reply_err(r, &err);
        return;
    }
    if (!app->upstream_configured || !app->upstream) {
        gw_req_reply_problem(r, 503, "Service Unavailable",
                             "the Marketo endpoint is not configured", NULL);
        return;
    }
    st->batch = cfg->sync_batch_size;
    if (st->batch < 1 || st->batch > app->call_limits.sync_per_call)
        st->batch = app->call_limits.sync_per_call;
    st->wave = cfg->rl_max_concurrent > 0 ? (size_t)cfg->rl_max_concurrent : 1;
    size_t nbatches = (st->body.nleads + st->batch - 1) / st->batch;
    if (st->wave > nbatches)
        st->wave = nbatches;
    st->jobs = calloc(st->wave, sizeof *st->jobs);
    st->leads = calloc(st->wave * st->batch, sizeof *st->leads);
    st->results = json_array();
    if (!st->jobs || !st->leads || !st->results || submit_wave(r, st) != 0)
        gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
}
