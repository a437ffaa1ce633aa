/* gateway/leads/leads_common.h - small helpers shared by the lead routes only
 * (gateway/leads/lookup.c and gateway/leads/sync.c; nobody else includes this).
 *
 * Every lead route follows the same shape: fill jobs, set an atomic count of
 * jobs still pending, suspend, submit; each job's done callback (engine
 * thread) decrements the count and the last one resumes the request.
 */
#ifndef GW_LEADS_COMMON_H
#define GW_LEADS_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/http/server.h"
#include "gateway/upstream/upstream.h"

/* What a job's done_arg points at: the request and its pending count. */
typedef struct gw_leads_waiter {
    gw_req *req;           /* the suspended request */
    atomic_size_t pending; /* jobs submitted and not yet done */
} gw_leads_waiter;

/* Done callback of every lead-route job: runs on the engine thread, touches
 * only the counter, and resumes the request when the last job ends. */
static inline void gw_leads_job_done(gw_job *job, void *arg)
{
    gw_leads_waiter *w = arg;
    (void)job;
    if (atomic_fetch_sub(&w->pending, 1) == 1)
        gw_req_resume(w->req);
}

/* Suspends r with on_resume, then submits jobs[0..n) (n >= 1), each wired
 * to w. The count is set before the first submit, and the request is marked
 * suspended before any job can end, so a fast job cannot resume it early.
 * The first submit of a request is charged to its API key's budget
 * (auth.key_calls_per_minute): when that is spent, the request has been
 * answered 429 instead, nothing is submitted, and the caller must simply
 * return (it need not tell the cases apart). */
static inline void gw_leads_submit_all(gw_req *r, gw_upstream *u, gw_leads_waiter *w,
                                       gw_job *jobs, size_t n, gw_handler_fn on_resume)
{
    if (!gw_req_admit_upstream(r))
        return;
    w->req = r;
    atomic_store(&w->pending, n);
    for (size_t i = 0; i < n; i++) {
        jobs[i].done = gw_leads_job_done;
        jobs[i].done_arg = w;
    }
    gw_req_suspend(r, on_resume);
    for (size_t i = 0; i < n; i++)
        gw_upstream_submit(u, &jobs[i]);
}

/* The queue deadline and overall deadline of a job started now for r. */
static inline void gw_leads_job_deadlines(gw_req *r, gw_job *job)
{
    const gw_config *cfg = gw_req_app(r)->cfg;
    int64_t now = gw_now_ms();
    int64_t deadline = gw_req_start_ms(r) + cfg->request_timeout_ms;
    int64_t queue = now + cfg->rl_queue_timeout_ms;
    job->deadline_ms = deadline;
    job->queue_deadline_ms = queue < deadline ? queue : deadline;
}

#endif /* GW_LEADS_COMMON_H */
