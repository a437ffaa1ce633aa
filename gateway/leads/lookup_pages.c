/* gateway/leads/lookup_pages.c - list and updated-at pages of GET /leads:
 * one Marketo call per page, its stream position inside a cursor; updated-at
 * ranges walked as consecutive windows of at most 30 days (see lookup.c). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gateway/leads/cursor.h"
#include "gateway/leads/leadjson.h"
#include "gateway/leads/lookup_internal.h"
#include "gateway/log.h"

/* Runs when every job of a page round has ended. */
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
    lk_free_jobs(st->jobs, st->njobs);
    st->njobs = 0;
    st->jobs = calloc(1, sizeof *st->jobs);
    if (!st->jobs) {
        lk_no_memory(r);
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
            lk_bad_request(r, "date out of range");
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
        lk_no_memory(r);
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
    lk_count_calls(st);
    gw_job *j = &st->jobs[0];
    if (st->sel.kind == MKTO_SEL_UPDATED_AT)
        lk_no_match_is_empty(j); /* an empty window; a missing list stays 404 */
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
            lk_no_memory(r);
            return;
        }
    }
    int remaining = j->leads.remaining_count;
    const char *nsp = j->leads.new_stream_position ? j->leads.new_stream_position : "";
    if (remaining > 0 && nsp[0] != '\0') {
        char *sp = strdup(nsp);
        if (!sp) {
            lk_no_memory(r);
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
void lk_serve_page(gw_req *r, lk_state *st)
{
    gw_app *app = gw_req_app(r);

    if (st->sel.cursor) {
        gw_cursor c = {0};
        gw_cursor_status cs = gw_cursor_decode(&app->cursor_key, st->sel.cursor,
                                               (int64_t)time(NULL), &c);
        if (cs == GW_CURSOR_EXPIRED) {
            lk_bad_request(r, "cursor expired");
            return;
        }
        if (cs != GW_CURSOR_OK || !c.binding) {
            gw_cursor_clear(&c);
            lk_bad_request(r, "invalid cursor");
            return;
        }
        gw_selector bound = {0};
        gw_err err = {0}; /* any error in a bound selector is "invalid cursor" */
        if (gw_query_parse_string(c.binding, &app->qlimits, &bound, &err) != 0 ||
            bound.kind == MKTO_SEL_KEYS || bound.cursor) {
            gw_selector_clear(&bound);
            gw_cursor_clear(&c);
            lk_bad_request(r, "invalid cursor");
            return;
        }
        if (!selector_agrees(&st->sel, &bound)) {
            gw_selector_clear(&bound);
            gw_cursor_clear(&c);
            lk_bad_request(r, "cursor does not match the query");
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
            lk_no_memory(r);
            return;
        }
    }
    if (st->sel.limit <= 0)
        st->sel.limit = app->qlimits.default_page_size > 0 ? app->qlimits.default_page_size : 100;
    if (st->sel.limit > app->call_limits.batch_size)
        st->sel.limit = app->call_limits.batch_size;
    st->page = json_array();
    if (!st->page) {
        lk_no_memory(r);
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
