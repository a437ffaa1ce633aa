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

#include <jansson.h>

#include "gateway/leads/lookup_internal.h"

/* Frees an lk_state and everything it owns (called by the server). */
static void lk_state_free(void *p)
{
    lk_state *st = p;
    if (!st)
        return;
    lk_free_jobs(st->jobs, st->njobs);
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

/* Parses names/values into a new state set on r, then serves it. */
static void serve_query(gw_req *r, const char *const *names, const char *const *values, size_t n,
                        bool by_id)
{
    gw_app *app = gw_req_app(r);
    gw_err err = {400, "invalid query"}; /* in case the parser names nothing */
    lk_state *st = calloc(1, sizeof *st);
    if (!st) {
        lk_no_memory(r);
        return;
    }
    gw_req_set_state(r, st, lk_state_free);
    st->by_id = by_id;
    if (gw_query_parse(names, values, n, &app->qlimits, &st->sel, &err) != 0) {
        gw_req_reply_err(r, &err);
        return;
    }
    if (!st->sel.has_selector && !st->sel.cursor) {
        lk_bad_request(r, "a selector is required: one of email, id, cookie, leadOwnerEmail, "
                       "sfdcAccountId, sfdcContactId, sfdcLeadId, sfdcLeadOwnerId, sfdcOpptyId, "
                       "staticList, staticListId, updatedSince");
        return;
    }
    if (st->sel.has_selector && st->sel.kind == MKTO_SEL_KEYS) {
        lk_serve_keys(r, st);
        return;
    }
    if (by_id) {
        lk_bad_request(r, "invalid parameters for a lead by id");
        return;
    }
    lk_serve_page(r, st);
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
        lk_bad_request(r, "lead id must be a positive integer of at most 2147483647");
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
        lk_no_memory(r);
        return;
    }
    for (size_t i = 0; i < qc; i++) {
        if (strcmp(qn[i], "fields") != 0) {
            free(names);
            free(values);
            lk_bad_request(r, "only fields= is accepted on /leads/{id}");
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
