/* gateway/leads/lookup_internal.h - what the three files of GET /leads
 * share: the per-request state (lk_state) and a few tiny helpers.
 *
 * lookup.c (parse, dispatch, the two handlers) calls lookup_keys.c (key
 * lookups) and lookup_pages.c (list and updated-at pages); those two call
 * neither each other nor lookup.c. Private to gateway/leads/.
 */
#ifndef GW_LEADS_LOOKUP_INTERNAL_H
#define GW_LEADS_LOOKUP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/http/server.h"
#include "gateway/leads/leads_common.h"
#include "gateway/leads/query.h"
#include "gateway/upstream/upstream.h"
#include "marketo/codes.h"
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
static inline void lk_free_jobs(gw_job *jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++)
        gw_job_clear_results(&jobs[i]);
    free(jobs);
}

/* Replies 400 with a problem whose detail is msg. */
static inline void lk_bad_request(gw_req *r, const char *msg)
{
    gw_req_reply_problem(r, 400, "Bad Request", msg, NULL);
}

/* Replies 500 for an allocation failure. */
static inline void lk_no_memory(gw_req *r)
{
    gw_req_reply_problem(r, 500, "Internal Server Error", "out of memory", NULL);
}

/* Sums the attempts of the current jobs into st->calls. */
static inline void lk_count_calls(lk_state *st)
{
    for (size_t i = 0; i < st->njobs; i++)
        st->calls += st->jobs[i].attempts;
}

/* Marketo's "lead not found" fault (mkto_code_is_lead_not_found) answers a
 * selector that matched nothing: for a lookup that is an empty result, not
 * an error. Turns such a job into an OK one with no leads. */
static inline void lk_no_match_is_empty(gw_job *j)
{
    if (j->outcome != GW_OUT_FAULT || !mkto_code_is_lead_not_found(j->fault.code))
        return;
    mkto_fault_clear(&j->fault);
    mkto_leads_clear(&j->leads);
    j->outcome = GW_OUT_OK;
}

/* Serves a key selector already parsed into st->sel (lookup_keys.c). */
void lk_serve_keys(gw_req *r, lk_state *st);
/* Serves a list or updated-at page; st->sel holds the request as parsed
 * (lookup_pages.c). */
void lk_serve_page(gw_req *r, lk_state *st);

#endif /* GW_LEADS_LOOKUP_INTERNAL_H */
