/* gateway/upstream/jobs.c - jobs on their own: the waiting list, ending a
 * job (exactly once: its outcome, metric, log line and done callback), the
 * clock and the outcome names. engine.c and call.c both use these; neither
 * is used here, so the engine's files call each other in one direction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/log.h"
#include "gateway/upstream/internal.h"

static const char *const outcome_names[NOUTCOMES] = {
    "ok", "fault", "rate_limited", "quota", "timeout", "unreachable", "bad_response", "shutdown",
};

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

/* Appends job to a list given by its head and tail. */
void up_list_append(gw_job **head, gw_job **tail, gw_job *job)
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
void up_waiting_unlink(gw_upstream *u, gw_job *job)
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
void up_waiting_reinsert(gw_upstream *u, gw_job *job)
{
    gw_job *at = u->wait_head;
    while (at && at->enqueued_ms <= job->enqueued_ms)
        at = at->q_next;
    if (!at) {
        up_list_append(&u->wait_head, &u->wait_tail, job);
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
void up_end_job(gw_upstream *u, gw_job *job, gw_outcome outcome)
{
    job->outcome = outcome;
    metric_add(u->m_jobs[kind_index(job)][outcome]);
    /* back-pressure outcomes are expected under load: info, not warn */
    bool pressure = outcome == GW_OUT_RATE_LIMITED || outcome == GW_OUT_QUOTA ||
                    outcome == GW_OUT_SHUTDOWN;
    if (outcome != GW_OUT_OK)
        GW_LOG(pressure ? GW_LOG_INFO : GW_LOG_WARN,
               json_pack("{s:s, s:s, s:i, s:s}", "operation", op_name(u, kind_index(job)),
                         "outcome", gw_outcome_name(outcome), "attempts", job->attempts,
                         "detail", job->detail),
               "upstream job failed");
    job->done(job, job->done_arg);
}

/* Ends a job that never made it onto the engine (SHUTDOWN), on the caller's thread. */
void up_end_job_unqueued(gw_upstream *u, gw_job *job)
{
    snprintf(job->detail, sizeof job->detail, "engine stopped");
    up_end_job(u, job, GW_OUT_SHUTDOWN);
}
