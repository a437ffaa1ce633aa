/* gateway/leads/lookup_keys.c - key lookups of GET /leads and GET
 * /leads/{id}: the cache per key, the misses to Marketo in calls of at most
 * the protocol's keys per call, the answers filed under their keys, cached,
 * and returned in request order (see lookup.c for the whole story). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "gateway/leads/leadjson.h"
#include "gateway/leads/lookup_internal.h"
#include "gateway/log.h"
#include "gateway/store/cache.h"
#include "marketo/leadkey.h"

/* Runs when every job of a key round has ended. */
static void key_on_resume(gw_req *r);

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
    lk_no_memory(r);
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
    lk_free_jobs(st->jobs, st->njobs);
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

/* Runs on an HTTP thread when every job of a key round has ended: files
 * the leads, fetches follow-up pages if any, then caches and replies. */
static void key_on_resume(gw_req *r)
{
    lk_state *st = gw_req_state(r);
    lk_count_calls(st);
    const gw_job *failed = NULL;
    size_t nfailed = 0;
    for (size_t i = 0; i < st->njobs; i++) {
        lk_no_match_is_empty(&st->jobs[i]);
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
            lk_no_memory(r);
            return;
        }
        free(ch->stream_pos);
        ch->stream_pos = NULL;
        const char *nsp = j->leads.new_stream_position;
        if (j->leads.remaining_count > 0 && nsp && nsp[0] != '\0' &&
            ch->pages < LK_MAX_KEY_PAGES) {
            ch->stream_pos = strdup(nsp);
            if (!ch->stream_pos) {
                lk_no_memory(r);
                return;
            }
        } else {
            if (j->leads.remaining_count > 0)
                GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "request_id", gw_req_id(r)),
                       "key lookup truncated: %d leads left unread", j->leads.remaining_count);
            ch->done = true;
        }
    }
    lk_free_jobs(st->jobs, st->njobs);
    st->jobs = NULL;
    st->njobs = 0;
    int64_t deadline = gw_req_start_ms(r) + gw_req_app(r)->cfg->request_timeout_ms;
    if (gw_now_ms() >= deadline) {
        for (size_t c = 0; c < st->nchunks; c++)
            st->chunks[c].done = true;
    }
    int rc = submit_key_round(r, st);
    if (rc < 0) {
        lk_no_memory(r);
        return;
    }
    if (rc > 0)
        return; /* suspended again */
    cache_results(r, st);
    reply_keys(r, st, key_cache_result(st));
}

/* Reads the cache for every key into st->got (from_cache set), or sets
 * st->bypass (no-cache asked, no cache, or the cache down). Returns 1 when
 * it has answered the request itself (a single key's hit, sent as stored),
 * 0 to go on, -1 out of memory. */
static int read_cache(gw_req *r, lk_state *st)
{
    gw_app *app = gw_req_app(r);
    const gw_selector *sel = &st->sel;
    const char *fieldset = sel->fieldset ? sel->fieldset : "";
    st->bypass = wants_no_cache(r) || !app->cache;
    if (st->bypass)
        return 0;
    char **out = calloc(st->nkeys, sizeof *out);
    if (!out)
        return -1;
    int rc = app->cache->ops->get_many(app->cache, sel->key_type, fieldset,
                                       (const char *const *)st->keys, st->nkeys, out, &st->epoch);
    if (rc != 0) {
        /* the Redis layer logs the outage once at warn (and its end); a
         * warn line per request would flood the log while it lasts, and
         * the access log already says X-Cache BYPASS */
        st->bypass = true;
        GW_LOG(GW_LOG_DEBUG, json_pack("{s:s}", "request_id", gw_req_id(r)),
               "cache unavailable: bypassing it");
    }
    if (rc == 0 && st->nkeys == 1 && out[0] && !st->by_id && reply_single_hit(r, out[0])) {
        free(out[0]);
        free(out);
        return 1;
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
    return 0;
}

/* The fields the key calls ask for: those of the request, plus the key
 * type's mapping attribute when missing (needed to match leads to keys;
 * stripped from the reply). None: all fields. Returns 0 or -1. */
static int plan_fields(lk_state *st)
{
    const gw_selector *sel = &st->sel;
    const char *map_attr = mkto_key_type_attr(sel->key_type);
    if (!sel->fields || sel->nfields == 0)
        return 0;
    st->attrs = calloc(sel->nfields + 1, sizeof *st->attrs);
    if (!st->attrs)
        return -1;
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
    return 0;
}

/* Slices the missing keys into calls of at most per_call keys (the
 * protocol's limit, 100 for SOAP). Returns 0 or -1. */
static int plan_chunks(lk_state *st, size_t per_call)
{
    st->unmatched = json_array();
    st->nchunks = (st->nmiss + per_call - 1) / per_call;
    st->chunks = calloc(st->nchunks, sizeof *st->chunks);
    if (!st->unmatched || !st->chunks)
        return -1;
    for (size_t c = 0; c < st->nchunks; c++) {
        lk_chunk *ch = &st->chunks[c];
        ch->first = c * per_call;
        ch->n = st->nmiss - ch->first;
        if (ch->n > per_call)
            ch->n = per_call;
        ch->keys = calloc(ch->n, sizeof *ch->keys);
        if (!ch->keys)
            return -1;
        for (size_t k = 0; k < ch->n; k++)
            ch->keys[k] = st->keys[st->miss[ch->first + k]];
    }
    return 0;
}

void lk_serve_keys(gw_req *r, lk_state *st)
{
    gw_app *app = gw_req_app(r);
    if (st->sel.cursor) {
        lk_bad_request(r, "key lookups take no cursor");
        return;
    }
    /* gw_query_parse already normalised (mkto_key_normalize) and
     * de-duplicated the keys, keeping request order */
    st->keys = st->sel.keys;
    st->nkeys = st->sel.nkeys;
    if (st->nkeys == 0) {
        lk_bad_request(r, "no key given");
        return;
    }
    st->got = calloc(st->nkeys, sizeof *st->got);
    st->from_cache = calloc(st->nkeys, sizeof *st->from_cache);
    st->miss = calloc(st->nkeys, sizeof *st->miss);
    if (!st->got || !st->from_cache || !st->miss)
        goto oom;
    int rc = read_cache(r, st);
    if (rc != 0) {
        if (rc < 0)
            goto oom;
        return;
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
    if (plan_fields(st) != 0 || plan_chunks(st, app->call_limits.keys_per_call) != 0 ||
        submit_key_round(r, st) < 0)
        goto oom;
    return;
oom:
    lk_no_memory(r);
}
