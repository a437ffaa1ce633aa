/* gateway/leads/lookup.c - GET /leads and GET /leads/{id}.
 *
 * Two paths share one per-request state (lk_state):
 *
 * Key lookups (email=, id=, cookie=, ... and /leads/{id}) are cached per key
 * type, normalised key value and field set. Keys found in the cache are
 * answered from it; the rest go to Marketo as getMultipleLeads calls of at
 * most 100 keys each, all submitted at once. The leads that come back are
 * matched to the keys they belong to (Id, Email, or the key type's mapping
 * attribute), stored per key (a key with no lead gets the negative entry
 * "[]") with the epoch read before the calls, and returned in request key
 * order, each lead once. Each job carries that epoch, and the engine lets it
 * share another request's call only when the call was sent after the epoch
 * was read or by a request that read the same epoch (single flight never
 * hands a lookup that started after a sync an answer from before it).
 * `Cache-Control: no-cache` skips the cache both ways (no read, no write)
 * and answers X-Cache: BYPASS. A key whose call answers more than one page
 * (an owner key matching thousands of leads) is followed through its
 * streamPosition within the request, up to its deadline; key lookups never
 * return a cursor.
 *
 * List and updated-at pages (staticList=, staticListId=, updatedSince=) are
 * not cached (X-Cache: BYPASS) and page with a cursor around Marketo's
 * streamPosition. Updated-at ranges are walked as consecutive windows of at
 * most 30 days behind one cursor; a page that ends a window early is filled
 * from the next window within the same request. "remaining" is Marketo's
 * remainingCount for the window being read: a lower bound when further
 * windows follow. An open range (no updatedUntil) is closed at the time of
 * the first page and the closing time is carried in the cursor's binding.
 */
#include "gateway/http/server.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "gateway/store/cache.h"
#include "gateway/leads/cursor.h"
#include "gateway/leads/leadjson.h"
#include "gateway/leads/leads_common.h"
#include "gateway/log.h"
#include "gateway/leads/query.h"
#include "marketo/codes.h"
#include "marketo/leadkey.h"
#include "gateway/upstream/upstream.h"
#include "soap/soap.h"

/* Seconds in one updated-at window (Marketo allows at most 30 days). */
#define LK_WINDOW_S ((int64_t)SOAP_MAX_WINDOW_DAYS * 86400)
/* Follow-up pages one key chunk may fetch within a request. */
#define LK_MAX_KEY_PAGES 50
/* Further windows one updated-at page may walk within a request (each one
 * is a Marketo call, also charged to the API key's budget): 8 windows walk
 * 240 days of an empty range; the page then ends with a cursor. */
#define LK_MAX_WINDOW_STEPS 8

/* One getMultipleLeads call of a key lookup: a slice of the missing keys. */
typedef struct lk_chunk {
    size_t first;          /* index of its first key in lk_state.miss */
    size_t n;              /* keys in the slice (1..100) */
    const char **keys;     /* the slice's key values (borrowed from lk_state.keys) */
    char *stream_pos;      /* streamPosition of a follow-up page, or NULL (owned) */
    int pages;             /* pages fetched so far */
    bool unmatched;        /* a lead of this call matched none of its keys */
    bool done;             /* no more pages to fetch */
} lk_chunk;

/* Everything one GET /leads or GET /leads/{id} needs until it replies. */
typedef struct lk_state {
    gw_leads_waiter waiter;  /* pending count + request, for the done callbacks */
    gw_selector sel;         /* the selector being served */
    bool by_id;              /* GET /leads/{id}: reply one object or 404 */
    int calls;               /* SOAP calls spent so far (job attempts summed) */

    /* ---- key path ---- */
    char *const *keys;       /* sel.keys: normalised, unique, in request order (borrowed) */
    size_t nkeys;            /* entries in keys */
    json_t **got;            /* per key: JSON array of its leads, or NULL (owned refs) */
    bool *from_cache;        /* per key: got[i] came from the cache */
    bool bypass;             /* no-cache, or the cache backend failed */
    uint64_t epoch;          /* cache epoch read before the calls */
    size_t *miss;            /* indices (into keys) of keys sent to Marketo */
    size_t nmiss;            /* entries in miss */
    lk_chunk *chunks;        /* one per call slice */
    size_t nchunks;          /* entries in chunks */
    json_t *unmatched;       /* leads that matched no key (returned, not cached) */
    const char **attrs;      /* includeAttributes for key calls, or NULL (strings borrowed) */
    size_t nattrs;           /* entries in attrs */
    bool strip_map_attr;     /* drop the mapping attribute from replies */

    /* ---- list / updated-at path ---- */
    char *binding;           /* canonical query the cursor is bound to (owned) */
    int64_t until;           /* updated-at: effective end of the range (epoch s) */
    int64_t wo;              /* updated-at: oldest bound of the current window */
    char *stream_pos;        /* stream position for the next call, "" none (owned) */
    json_t *page;            /* leads collected for this page (owned) */
    int window_steps;        /* windows walked in this request */
    char ts_oldest[SOAP_TIMESTAMP_LEN]; /* W3C bound of the current call */
    char ts_latest[SOAP_TIMESTAMP_LEN]; /* W3C bound of the current call */

    gw_job *jobs;            /* jobs of the current round (owned) */
    size_t njobs;            /* entries in jobs */
} lk_state;

/* Releases one job array: results first, then the array. */
static void free_jobs(gw_job *jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++)
        gw_job_clear_results(&jobs[i]);
    free(jobs);
}

/* Frees an lk_state and everything it owns (called by the server). */
static void lk_state_free(void *p)
{
    lk_state *st = p;
    if (!st)
        return;
    free_jobs(st->jobs, st->njobs);
    gw_selector_clear(&st->sel);
    if (st->got)
        for (size_t i = 0; i < st->nkeys; i++)
            json_decref(st->got[i]);
    free(st->got);
    free(st->from_cache);
    free(st->miss);
    for (size_t i = 0; i < st->nchunks; i++) {
        free(st->chunks[i].keys);
        free(st->chunks[i].stream_pos);
    }
    free(st->chunks);
    json_decref(st->unmatched);
    free(st->attrs);
    free(st->binding);
    free(st->stream_pos);
    json_decref(st->page);
    free(st);
}

/* Replies 400 with a problem whose detail is msg. */
static void bad_request(gw_req *r, const char *msg)
{
    gw_req_reply_problem(r, 400, "Bad Request", msg, NULL);
}

/* Replies 500 for an allocation failure. */
static void no_memory(gw_req *r)
{
    gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
}

/* Sums the attempts of the current jobs into st->calls. */
static void count_calls(lk_state *st)
{
    for (size_t i = 0; i < st->njobs; i++)
        st->calls += st->jobs[i].attempts;
}

/* Whether the request asks to bypass the cache (Cache-Control: no-cache). */
static bool wants_no_cache(gw_req *r)
{
    const char *cc = gw_req_header(r, "Cache-Control");
    if (!cc)
        return false;
    return strcasestr(cc, "no-cache") != NULL || strcasestr(cc, "no-store") != NULL;
}

/* Appends the lead objects of page to the reply array out, skipping ids
 * already in seen (growing seen). Returns 0 or -1 on no memory. */
static int append_unique(json_t *out, json_t *leads, int64_t **seen, size_t *nseen,
                         size_t *capseen)
{
    size_t i;
    json_t *lead;
    json_array_foreach(leads, i, lead) {
        json_t *jid = json_object_get(lead, "id");
        if (json_is_integer(jid)) {
            int64_t id = json_integer_value(jid);
            bool dup = false;
            for (size_t k = 0; k < *nseen; k++) {
                if ((*seen)[k] == id) {
                    dup = true;
                    break;
                }
            }
            if (dup)
                continue;
            if (*nseen == *capseen) {
                size_t nc = *capseen ? *capseen * 2 : 64;
                int64_t *ns = realloc(*seen, nc * sizeof *ns);
                if (!ns)
                    return -1;
                *seen = ns;
                *capseen = nc;
            }
            (*seen)[(*nseen)++] = id;
        }
        if (json_array_append(out, lead) != 0)
            return -1;
    }
    return 0;
}

/* ======================================================================
 * Key lookups
 * ====================================================================== */

/* The JSON object of lead l as the client asked for it (the mapping
 * attribute removed when only added for matching). NULL on no memory. */
static json_t *lead_json(const lk_state *st, const mkto_lead *l)
{
    json_t *o = gw_lead_to_json(l);
    if (o && st->strip_map_attr) {
        json_t *attrs = json_object_get(o, "attributes");
        const char *an = mkto_key_type_attr(st->sel.key_type);
        if (json_is_object(attrs) && an)
            json_object_del(attrs, an);
    }
    return o;
}

/* Files the leads of chunk c's finished job under the keys they match.
 * Returns 0 or -1 on no memory. */
static int file_chunk_leads(lk_state *st, lk_chunk *c, const mkto_leads *res)
{
    for (size_t i = 0; i < res->nleads; i++) {
        const mkto_lead *l = &res->leads[i];
        json_t *o = lead_json(st, l);
        if (!o)
            return -1;
        bool matched = false;
        for (size_t k = 0; k < c->n; k++) {
            if (!mkto_lead_matches_key(l, st->sel.key_type, c->keys[k]))
                continue;
            size_t ki = st->miss[c->first + k];
            if (json_array_append(st->got[ki], o) != 0) {
                json_decref(o);
                return -1;
            }
            matched = true;
        }
        if (!matched && c->n == 1) {
            /* One key asked: whatever came back is its answer. */
            if (json_array_append(st->got[st->miss[c->first]], o) != 0) {
                json_decref(o);
                return -1;
            }
            matched = true;
        }
        if (!matched) {
            c->unmatched = true;
            if (json_array_append(st->unmatched, o) != 0) {
                json_decref(o);
                return -1;
            }
        }
        json_decref(o);
    }
    return 0;
}

/* Collects the ids of the lead objects of arr into a malloc'd array
 * (*ids NULL when none). Returns 0 or -1 on no memory. */
static int ids_of(json_t *arr, int64_t **ids, size_t *nids)
{
    *ids = NULL;
    *nids = 0;
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    int64_t *v = malloc(n * sizeof *v);
    if (!v)
        return -1;
    size_t i, m = 0;
    json_t *lead;
    json_array_foreach(arr, i, lead) {
        json_t *jid = json_object_get(lead, "id");
        if (json_is_integer(jid))
            v[m++] = json_integer_value(jid);
    }
    *ids = v;
    *nids = m;
    return 0;
}

/* Writes every fetched key's leads to the cache (a key with none: "[]"),
 * under the epoch read before the calls. Keys of a call that returned
 * leads it could not match are left out when they got nothing (their
 * answer may be among the unmatched). Cache errors are logged, not fatal. */
static void cache_results(gw_req *r, lk_state *st)
{
    gw_cache *cache = gw_req_app(r)->cache;
    if (st->bypass || !cache || st->nmiss == 0)
        return;
    gw_cache_put *items = calloc(st->nmiss, sizeof *items);
    char **texts = calloc(st->nmiss, sizeof *texts);
    int64_t **idv = calloc(st->nmiss, sizeof *idv);
    size_t n = 0;
    if (!items || !texts || !idv)
        goto out;
    for (size_t c = 0; c < st->nchunks; c++) {
        const lk_chunk *ch = &st->chunks[c];
        for (size_t k = 0; k < ch->n; k++) {
            size_t ki = st->miss[ch->first + k];
            json_t *arr = st->got[ki];
            if (ch->unmatched && json_array_size(arr) == 0)
                continue;
            texts[n] = json_dumps(arr, JSON_COMPACT);
            if (!texts[n])
                goto out;
            if (ids_of(arr, &idv[n], &items[n].nids) != 0) {
                free(texts[n]);
                texts[n] = NULL;
                goto out;
            }
            items[n].value = st->keys[ki];
            items[n].json = texts[n];
            items[n].ids = idv[n];
            n++;
        }
    }
    if (n > 0) {
        int rc = cache->ops->put_many(cache, st->sel.key_type, st->sel.fieldset ? st->sel.fieldset : "",
                                      items, n, st->epoch);
        if (rc < 0)
            GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "request_id", gw_req_id(r)),
                   "cache write failed for %zu keys", n);
        else if (rc == 1)
            GW_LOG(GW_LOG_DEBUG, json_pack("{s:s}", "request_id", gw_req_id(r)),
                   "cache write skipped: invalidated while in flight");
    }
out:
    if (texts)
        for (size_t i = 0; i < st->nmiss; i++)
            free(texts[i]);
    if (idv)
        for (size_t i = 0; i < st->nmiss; i++)
            free(idv[i]);
    free(texts);
    free(idv);
    free(items);
}

/* Builds and sends the reply of a key lookup from st->got (and the
 * unmatched leads), in request key order, each lead once. */
static void reply_keys(gw_req *r, lk_state *st, const char *cache_result)
{
    json_t *leads = json_array();
    int64_t *seen = NULL;
    size_t nseen = 0, capseen = 0;
    if (!leads)
        goto oom;
    for (size_t i = 0; i < st->nkeys; i++) {
        if (st->got[i] && append_unique(leads, st->got[i], &seen, &nseen, &capseen) != 0)
            goto oom;
    }
    if (st->unmatched && append_unique(leads, st->unmatched, &seen, &nseen, &capseen) != 0)
        goto oom;
    free(seen);
    seen = NULL;
    gw_req_note_cache(r, cache_result);
    gw_req_note_upstream(r, st->calls);
    if (st->by_id) {
        json_t *first = json_array_get(leads, 0);
        if (!first) {
            json_decref(leads);
            gw_req_reply_problem(r, 404, "Not Found", "lead not found", NULL);
            return;
        }
        json_incref(first);
        json_decref(leads);
        gw_req_reply_json(r, 200, first);
        return;
    }
    json_t *body = json_pack("{s:o, s:i, s:n}", "leads", leads, "remaining", 0, "next_cursor");
    leads = NULL;
    if (!body)
        goto oom;
    gw_req_reply_json(r, 200, body);
    return;
oom:
    free(seen);
    json_decref(leads);
    no_memory(r);
}

/* Replies a one-key lookup whose key was a cache hit straight from the
 * cached text: the page is `{"leads":` + text + `,"remaining":0,
 * "next_cursor":null}`, byte for byte what reply_keys dumps after parsing
 * the text (the cache holds jansson's compact dump of the key's array, and
 * one key's array never lists a lead twice), without the parse and the
 * dump. Returns false, having replied nothing, when text does not look like
 * a JSON array (the caller then parses it as before). */
static bool reply_single_hit(gw_req *r, const char *text)
{
    static const char pre[] = "{\"leads\":";
    static const char post[] = ",\"remaining\":0,\"next_cursor\":null}";
    char stackbuf[4096];
    size_t n = strlen(text);
    if (n < 2 || text[0] != '[' || text[n - 1] != ']')
        return false;
    size_t len = sizeof pre - 1 + n + sizeof post - 1;
    char *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf)
        return false;
    memcpy(buf, pre, sizeof pre - 1);
    memcpy(buf + sizeof pre - 1, text, n);
    memcpy(buf + sizeof pre - 1 + n, post, sizeof post - 1);
    gw_req_note_cache(r, "HIT");
    gw_req_reply_raw(r, 200, "application/json", buf, len);
    if (buf != stackbuf)
        free(buf);
    return true;
}

/* The X-Cache value of a key lookup once its misses are fetched. */
static const char *key_cache_result(const lk_state *st)
{
    if (st->bypass)
        return "BYPASS";
    return st->nmiss < st->nkeys ? "PARTIAL" : "MISS";
}

/* Fills job j for chunk c (first page or a follow-up page). */
static void fill_key_job(gw_req *r, lk_state *st, gw_job *j, lk_chunk *c)
{
    memset(j, 0, sizeof *j);
    j->kind = GW_CALL_GET_MULTIPLE;
    j->get.kind = MKTO_SEL_KEYS;
    j->get.key_type = st->sel.key_type;
    j->get.keys = c->keys;
    j->get.nkeys = c->n;
    j->get.stream_position = c->stream_pos;
    j->get.batch_size = gw_req_app(r)->call_limits.batch_size;
    j->get.attrs = st->attrs;
    j->get.nattrs = st->nattrs;
    /* the epoch the answer will be stored under: the engine lets the job
     * share only a call whose answer is at least that fresh */
    j->epoch = st->bypass ? 0 : st->epoch;
    gw_leads_job_deadlines(r, j);
}

static void key_on_resume(gw_req *r);

/* Submits one job per chunk that still has pages to fetch and suspends.
 * Returns the number of jobs submitted (0: nothing left), -1 on no memory. */
static int submit_key_round(gw_req *r, lk_state *st)
{
    size_t want = 0;
    for (size_t c = 0; c < st->nchunks; c++)
        if (!st->chunks[c].done)
            want++;
    if (want == 0)
        return 0;
    free_jobs(st->jobs, st->njobs);
    st->njobs = 0;
    st->jobs = calloc(want, sizeof *st->jobs);
    if (!st->jobs)
        return -1;
    /* job k serves the k-th unfinished chunk; key_on_resume walks them in
     * the same order */
    size_t k = 0;
    for (size_t c = 0; c < st->nchunks; c++) {
        if (st->chunks[c].done)
            continue;
        fill_key_job(r, st, &st->jobs[k], &st->chunks[c]);
        st->chunks[c].pages++;
        k++;
    }
    st->njobs = want;
    gw_leads_submit_all(r, gw_req_app(r)->upstream, &st->waiter, st->jobs, st->njobs,
                        key_on_resume);
    return (int)want;
}

/* Marketo's "lead not found" fault (mkto_code_is_lead_not_found) answers a
 * selector that matched nothing: for a lookup that is an empty result, not
 * an error. Turns such a job into an OK one with no leads. */
static void no_match_is_empty(gw_job *j)
{
    if (j->outcome != GW_OUT_FAULT || !mkto_code_is_lead_not_found(j->fault.code))
        return;
    mkto_fault_clear(&j->fault);
    mkto_leads_clear(&j->leads);
    j->outcome = GW_OUT_OK;
}

/* Runs on an HTTP thread when every job of a key round has ended: files
 * the leads, fetches follow-up pages if any, then caches and replies. */
static void key_on_resume(gw_req *r)
{
    lk_state *st = gw_req_state(r);
    count_calls(st);
    const gw_job *failed = NULL;
    size_t nfailed = 0;
    for (size_t i = 0; i < st->njobs; i++) {
        no_match_is_empty(&st->jobs[i]);
        if (st->jobs[i].outcome != GW_OUT_OK) {
            if (!failed)
                failed = &st->jobs[i];
            nfailed++;
        }
    }
    if (failed) {
        if (nfailed > 1)
            GW_LOG(GW_LOG_WARN, json_pack("{s:s, s:I}", "request_id", gw_req_id(r),
                                          "failed_calls", (json_int_t)nfailed),
                   "%zu of %zu lookup calls failed; answering with the first failure",
                   nfailed, st->njobs);
        gw_req_note_cache(r, key_cache_result(st));
        gw_req_note_upstream(r, st->calls);
        gw_req_reply_job_error(r, failed);
        return;
    }
    size_t k = 0;
    for (size_t c = 0; c < st->nchunks; c++) {
        lk_chunk *ch = &st->chunks[c];
        if (ch->done)
            continue;
        gw_job *j = &st->jobs[k++];
        if (file_chunk_leads(st, ch, &j->leads) != 0) {
            no_memory(r);
            return;
        }
        free(ch->stream_pos);
        ch->stream_pos = NULL;
        const char *nsp = j->leads.new_stream_position;
        if (j->leads.remaining_count > 0 && nsp && nsp[0] != '\0' &&
            ch->pages < LK_MAX_KEY_PAGES) {
            ch->stream_pos = strdup(nsp);
            if (!ch->stream_pos) {
                no_memory(r);
                return;
            }
        } else {
            if (j->leads.remaining_count > 0)
                GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "request_id", gw_req_id(r)),
                       "key lookup truncated: %d leads left unread", j->leads.remaining_count);
            ch->done = true;
        }
    }
    free_jobs(st->jobs, st->njobs);
    st->jobs = NULL;
    st->njobs = 0;
    int64_t deadline = gw_req_start_ms(r) + gw_req_app(r)->cfg->request_timeout_ms;
    if (gw_now_ms() >= deadline) {
        for (size_t c = 0; c < st->nchunks; c++)
            st->chunks[c].done = true;
    }
    int rc = submit_key_round(r, st);
    if (rc < 0) {
        no_memory(r);
        return;
    }
    if (rc > 0)
        return; /* suspended again */
    cache_results(r, st);
    reply_keys(r, st, key_cache_result(st));
}

/* Serves a key selector already parsed into st->sel. */
static void serve_keys(gw_req *r, lk_state *st)
{
    gw_app *app = gw_req_app(r);
    gw_selector *sel = &st->sel;

    if (sel->cursor) {
        bad_request(r, "key lookups take no cursor");
        return;
    }
    /* gw_query_parse already normalised (mkto_key_normalize) and
     * de-duplicated the keys, keeping request order */
    st->keys = sel->keys;
    st->nkeys = sel->nkeys;
    if (st->nkeys == 0) {
        bad_request(r, "no key given");
        return;
    }
    st->got = calloc(st->nkeys, sizeof *st->got);
    st->from_cache = calloc(st->nkeys, sizeof *st->from_cache);
    st->miss = calloc(st->nkeys, sizeof *st->miss);
    if (!st->got || !st->from_cache || !st->miss)
        goto oom;

    /* ---- cache ---- */
    const char *fieldset = sel->fieldset ? sel->fieldset : "";
    st->bypass = wants_no_cache(r) || !app->cache;
    if (!st->bypass) {
        char **out = calloc(st->nkeys, sizeof *out);
        if (!out)
            goto oom;
        int rc = app->cache->ops->get_many(app->cache, sel->key_type, fieldset,
                                           (const char *const *)st->keys, st->nkeys, out,
                                           &st->epoch);
        if (rc != 0) {
            /* the Redis layer logs the outage once at warn (and its end);
             * a warn line per request would flood the log while it lasts,
             * and the access log already says X-Cache BYPASS */
            st->bypass = true;
            GW_LOG(GW_LOG_DEBUG, json_pack("{s:s}", "request_id", gw_req_id(r)),
                   "cache unavailable: bypassing it");
        }
        if (rc == 0 && st->nkeys == 1 && out[0] && !st->by_id && reply_single_hit(r, out[0])) {
            free(out[0]);
            free(out);
            return;
        }
        for (size_t i = 0; i < st->nkeys; i++) {
            if (!out[i])
                continue;
            if (rc == 0) {
                json_t *arr = json_loads(out[i], 0, NULL);
                if (json_is_array(arr)) {
                    st->got[i] = arr;
                    st->from_cache[i] = true;
                } else {
                    json_decref(arr);
                }
            }
            free(out[i]);
        }
        free(out);
    }
    for (size_t i = 0; i < st->nkeys; i++) {
        if (!st->from_cache[i]) {
            st->miss[st->nmiss++] = i;
            st->got[i] = json_array();
            if (!st->got[i])
                goto oom;
        }
    }
    if (st->nmiss == 0) {
        reply_keys(r, st, "HIT");
        return;
    }
    if (!app->upstream_configured || !app->upstream) {
        gw_req_note_cache(r, key_cache_result(st));
        gw_req_reply_problem(r, 503, "Service Unavailable", "the Marketo endpoint is not configured",
                             NULL);
        return;
    }

    /* ---- includeAttributes ---- */
    const char *map_attr = mkto_key_type_attr(sel->key_type);
    if (sel->fields && sel->nfields > 0) {
        st->attrs = calloc(sel->nfields + 1, sizeof *st->attrs);
        if (!st->attrs)
            goto oom;
        bool have_map = false;
        for (size_t i = 0; i < sel->nfields; i++) {
            st->attrs[st->nattrs++] = sel->fields[i];
            if (map_attr && strcmp(sel->fields[i], map_attr) == 0)
                have_map = true;
        }
        if (map_attr && !have_map) {
            st->attrs[st->nattrs++] = map_attr;
            st->strip_map_attr = true;
        }
    }

    /* ---- calls: slices of at most the protocol's keys per call (SOAP: 100) ---- */
    const size_t per_call = app->call_limits.keys_per_call;
    st->unmatched = json_array();
    st->nchunks = (st->nmiss + per_call - 1) / per_call;
    st->chunks = calloc(st->nchunks, sizeof *st->chunks);
    if (!st->unmatched || !st->chunks)
        goto oom;
    for (size_t c = 0; c < st->nchunks; c++) {
        lk_chunk *ch = &st->chunks[c];
        ch->first = c * per_call;
        ch->n = st->nmiss - ch->first;
        if (ch->n > per_call)
            ch->n = per_call;
        ch->keys = calloc(ch->n, sizeof *ch->keys);
        if (!ch->keys)
            goto oom;
        for (size_t k = 0; k < ch->n; k++)
            ch->keys[k] = st->keys[st->miss[ch->first + k]];
    }
    if (submit_key_round(r, st) < 0)
        goto oom;
    return;
oom:
    no_memory(r);
}

/* ======================================================================
 * List and updated-at pages
 * ====================================================================== */

static void page_on_resume(gw_req *r);

/* End of the updated-at window starting at wo. */
static int64_t window_end(const lk_state *st, int64_t wo)
{
    int64_t end = wo + LK_WINDOW_S - 1;
    return end < st->until ? end : st->until;
}

/* Submits the page call for the current position (st->wo, st->stream_pos)
 * asking for want leads, and suspends. Returns 0 or -1 (reply sent). */
static int submit_page(gw_req *r, lk_state *st, int want)
{
    free_jobs(st->jobs, st->njobs);
    st->njobs = 0;
    st->jobs = calloc(1, sizeof *st->jobs);
    if (!st->jobs) {
        no_memory(r);
        return -1;
    }
    gw_job *j = &st->jobs[0];
    const gw_selector *sel = &st->sel;
    j->kind = GW_CALL_GET_MULTIPLE;
    j->get.kind = sel->kind;
    if (sel->kind == MKTO_SEL_STATIC_LIST) {
        j->get.list_name = sel->list_name;
        j->get.list_id = sel->list_id;
    } else {
        if (soap_timestamp_format((time_t)st->wo, 0, st->ts_oldest) != SOAP_OK ||
            soap_timestamp_format((time_t)window_end(st, st->wo), 0, st->ts_latest) != SOAP_OK) {
            bad_request(r, "date out of range");
            return -1;
        }
        j->get.oldest_updated_at = st->ts_oldest;
        j->get.latest_updated_at = st->ts_latest;
    }
    j->get.stream_position = (st->stream_pos && st->stream_pos[0]) ? st->stream_pos : NULL;
    j->get.batch_size = want;
    j->get.attrs = (const char *const *)sel->fields;
    j->get.nattrs = sel->fields ? sel->nfields : 0;
    gw_leads_job_deadlines(r, j);
    st->njobs = 1;
    gw_leads_submit_all(r, gw_req_app(r)->upstream, &st->waiter, st->jobs, 1, page_on_resume);
    return 0;
}

/* Replies the collected page; a cursor to (wo, sp) when more is left. */
static void reply_page(gw_req *r, lk_state *st, bool more, int64_t wo, const char *sp,
                       int remaining)
{
    gw_app *app = gw_req_app(r);
    json_t *cur = json_null();
    char *tok = NULL;
    if (more) {
        gw_cursor c = {
            .binding = st->binding,
            .stream_position = (char *)(sp ? sp : ""),
            .window_oldest = st->sel.kind == MKTO_SEL_UPDATED_AT ? wo : 0,
            .expires_at = (int64_t)time(NULL) + app->cfg->cursor_ttl_seconds,
        };
        tok = gw_cursor_encode(&app->cursor_key, &c);
        if (!tok) {
            gw_req_reply_problem(r, 500, "Internal Server Error", "could not build the cursor",
                                 NULL);
            return;
        }
        cur = json_string(tok);
        free(tok);
    }
    json_t *leads = st->page;
    st->page = NULL;
    json_t *body = json_pack("{s:o, s:i, s:o}", "leads", leads ? leads : json_array(),
                             "remaining", remaining < 0 ? 0 : remaining, "next_cursor", cur);
    gw_req_note_cache(r, "BYPASS");
    gw_req_note_upstream(r, st->calls);
    if (!body) {
        no_memory(r);
        return;
    }
    gw_req_reply_json(r, 200, body);
}

/* Runs on an HTTP thread when a page call has ended: collects its leads,
 * then replies or, when a window ended early, reads on into the next. */
static void page_on_resume(gw_req *r)
{
    lk_state *st = gw_req_state(r);
    const gw_config *cfg = gw_req_app(r)->cfg;
    count_calls(st);
    gw_job *j = &st->jobs[0];
    if (st->sel.kind == MKTO_SEL_UPDATED_AT)
        no_match_is_empty(j); /* an empty window; a missing list stays 404 */
    if (j->outcome != GW_OUT_OK) {
        if (json_array_size(st->page) > 0) {
            /* Earlier windows filled part of this page: hand it out with a
             * cursor at the call that failed, so the client can retry it. */
            GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "request_id", gw_req_id(r)),
                   "page call failed after a partial page; returning what was read");
            char *sp = st->stream_pos;
            st->stream_pos = NULL;
            reply_page(r, st, true, st->wo, sp, 0);
            free(sp);
            return;
        }
        gw_req_note_cache(r, "BYPASS");
        gw_req_note_upstream(r, st->calls);
        gw_req_reply_job_error(r, j);
        return;
    }
    for (size_t i = 0; i < j->leads.nleads; i++) {
        json_t *o = gw_lead_to_json(&j->leads.leads[i]);
        if (!o || json_array_append_new(st->page, o) != 0) {
            no_memory(r);
            return;
        }
    }
    int remaining = j->leads.remaining_count;
    const char *nsp = j->leads.new_stream_position ? j->leads.new_stream_position : "";
    if (remaining > 0 && nsp[0] != '\0') {
        char *sp = strdup(nsp);
        if (!sp) {
            no_memory(r);
            return;
        }
        reply_page(r, st, true, st->wo, sp, remaining);
        free(sp);
        return;
    }
    /* This window (or the list) is exhausted. */
    if (st->sel.kind == MKTO_SEL_UPDATED_AT && window_end(st, st->wo) < st->until) {
        int64_t next = window_end(st, st->wo) + 1;
        int have = (int)json_array_size(st->page);
        int64_t deadline = gw_req_start_ms(r) + cfg->request_timeout_ms;
        int64_t margin = cfg->timeout_ms < cfg->request_timeout_ms / 2 ? cfg->timeout_ms
                                                                       : cfg->request_timeout_ms / 2;
        st->wo = next;
        free(st->stream_pos);
        st->stream_pos = NULL;
        if (have < st->sel.limit && st->window_steps < LK_MAX_WINDOW_STEPS &&
            gw_now_ms() + margin < deadline && gw_req_charge_upstream(r)) {
            st->window_steps++;
            submit_page(r, st, st->sel.limit - have);
            return;
        }
        reply_page(r, st, true, next, "", 0);
        return;
    }
    reply_page(r, st, false, 0, NULL, remaining);
}

/* Whether the explicit parameters of req agree with the cursor's selector
 * cur ("the other parameters must match or be absent"). */
static bool selector_agrees(const gw_selector *req, const gw_selector *cur)
{
    if (req->has_selector) {
        if (req->kind != cur->kind)
            return false;
        if (req->kind == MKTO_SEL_STATIC_LIST) {
            if (req->list_id != cur->list_id)
                return false;
            if ((req->list_name == NULL) != (cur->list_name == NULL))
                return false;
            if (req->list_name && strcmp(req->list_name, cur->list_name) != 0)
                return false;
        } else if (req->kind == MKTO_SEL_UPDATED_AT) {
            if (req->updated_since != cur->updated_since)
                return false;
            if (req->updated_until != 0 && req->updated_until != cur->updated_until)
                return false;
        } else {
            return false;
        }
    }
    if (req->fields && req->nfields > 0) {
        const char *a = req->fieldset ? req->fieldset : "";
        const char *b = cur->fieldset ? cur->fieldset : "";
        if (strcmp(a, b) != 0)
            return false;
    }
    if (req->has_limit && req->limit != cur->limit)
        return false;
    return true;
}

/* Serves a list or updated-at page; st->sel holds the request as parsed. */
static void serve_page(gw_req *r, lk_state *st)
{
    gw_app *app = gw_req_app(r);

    if (st->sel.cursor) {
        gw_cursor c = {0};
        gw_cursor_status cs = gw_cursor_decode(&app->cursor_key, st->sel.cursor,
                                               (int64_t)time(NULL), &c);
        if (cs == GW_CURSOR_EXPIRED) {
            bad_request(r, "cursor expired");
            return;
        }
        if (cs != GW_CURSOR_OK || !c.binding) {
            gw_cursor_clear(&c);
            bad_request(r, "invalid cursor");
            return;
        }
        gw_selector bound = {0};
        gw_err err = {0}; /* any error in a bound selector is "invalid cursor" */
        if (gw_query_parse_string(c.binding, &app->qlimits, &bound, &err) != 0 ||
            bound.kind == MKTO_SEL_KEYS || bound.cursor) {
            gw_selector_clear(&bound);
            gw_cursor_clear(&c);
            bad_request(r, "invalid cursor");
            return;
        }
        if (!selector_agrees(&st->sel, &bound)) {
            gw_selector_clear(&bound);
            gw_cursor_clear(&c);
            bad_request(r, "cursor does not match the query");
            return;
        }
        gw_selector_clear(&st->sel);
        st->sel = bound;
        st->binding = c.binding;
        c.binding = NULL;
        st->stream_pos = c.stream_position;
        c.stream_position = NULL;
        st->until = st->sel.updated_until;
        st->wo = c.window_oldest;
        if (st->sel.kind == MKTO_SEL_UPDATED_AT && st->wo < st->sel.updated_since)
            st->wo = st->sel.updated_since;
        gw_cursor_clear(&c);
    } else {
        if (st->sel.kind == MKTO_SEL_UPDATED_AT) {
            if (st->sel.updated_until == 0)
                st->sel.updated_until = (int64_t)time(NULL);
            st->until = st->sel.updated_until;
            st->wo = st->sel.updated_since;
        }
        st->binding = gw_selector_binding(&st->sel);
        if (!st->binding) {
            no_memory(r);
            return;
        }
    }
    if (st->sel.limit <= 0)
        st->sel.limit = app->qlimits.default_page_size > 0 ? app->qlimits.default_page_size : 100;
    if (st->sel.limit > app->call_limits.batch_size)
        st->sel.limit = app->call_limits.batch_size;
    st->page = json_array();
    if (!st->page) {
        no_memory(r);
        return;
    }
    if (st->sel.kind == MKTO_SEL_UPDATED_AT && st->wo > st->until) {
        /* an empty range (since after until, or after now) */
        reply_page(r, st, false, 0, NULL, 0);
        return;
    }
    if (!app->upstream_configured || !app->upstream) {
        gw_req_note_cache(r, "BYPASS");
        gw_req_reply_problem(r, 503, "Service Unavailable", "the Marketo endpoint is not configured",
                             NULL);
        return;
    }
    submit_page(r, st, st->sel.limit);
}

/* ======================================================================
 * Routes
 * ====================================================================== */

/* Parses names/values into a new state set on r, then serves it. */
static void serve_query(gw_req *r, const char *const *names, const char *const *values, size_t n,
                        bool by_id)
{
    gw_app *app = gw_req_app(r);
    gw_err err = {400, "invalid query"}; /* in case the parser names nothing */
    lk_state *st = calloc(1, sizeof *st);
    if (!st) {
        no_memory(r);
        return;
    }
    gw_req_set_state(r, st, lk_state_free);
    st->by_id = by_id;
    if (gw_query_parse(names, values, n, &app->qlimits, &st->sel, &err) != 0) {
        gw_req_reply_err(r, &err);
        return;
    }
    if (!st->sel.has_selector && !st->sel.cursor) {
        bad_request(r, "a selector is required: one of email, id, cookie, leadOwnerEmail, "
                       "sfdcAccountId, sfdcContactId, sfdcLeadId, sfdcLeadOwnerId, sfdcOpptyId, "
                       "staticList, staticListId, updatedSince");
        return;
    }
    if (st->sel.has_selector && st->sel.kind == MKTO_SEL_KEYS) {
        serve_keys(r, st);
        return;
    }
    if (by_id) {
        bad_request(r, "invalid parameters for a lead by id");
        return;
    }
    serve_page(r, st);
}

void gw_handle_leads(gw_req *r)
{
    const char *const *names = NULL;
    const char *const *values = NULL;
    size_t n = gw_req_query(r, &names, &values);
    serve_query(r, names, values, n, false);
}

void gw_handle_lead_by_id(gw_req *r)
{
    const char *p = gw_req_path_param(r);
    size_t len = p ? strlen(p) : 0;
    bool ok = len > 0 && len <= 10;
    for (size_t i = 0; ok && i < len; i++)
        ok = isdigit((unsigned char)p[i]) != 0;
    long long v = 0;
    if (ok) {
        errno = 0;
        char *end = NULL;
        v = strtoll(p, &end, 10);
        ok = errno == 0 && end && *end == '\0' && v >= 1 && v <= 2147483647LL;
    }
    if (!ok) {
        bad_request(r, "lead id must be a positive integer of at most 2147483647");
        return;
    }
    char idbuf[16];
    snprintf(idbuf, sizeof idbuf, "%lld", v);

    /* The lead's query string may only narrow fields; it is parsed together
     * with id=<n>, so any other selector is refused by the parser. */
    const char *const *qn = NULL;
    const char *const *qv = NULL;
    size_t qc = gw_req_query(r, &qn, &qv);
    const char **names = calloc(qc + 1, sizeof *names);
    const char **values = calloc(qc + 1, sizeof *values);
    if (!names || !values) {
        free(names);
        free(values);
        no_memory(r);
        return;
    }
    for (size_t i = 0; i < qc; i++) {
        if (strcmp(qn[i], "fields") != 0) {
            free(names);
            free(values);
            bad_request(r, "only fields= is accepted on /leads/{id}");
            return;
        }
        names[i] = qn[i];
        values[i] = qv[i];
    }
    names[qc] = "id";
    values[qc] = idbuf;
    serve_query(r, names, values, qc + 1, true);
    free(names);
    free(values);
}
