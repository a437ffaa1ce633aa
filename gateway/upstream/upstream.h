/* gateway/upstream/upstream.h - the upstream engine: every SOAP call to Marketo.
 *
 * One thread owns a curl multi handle (keep-alive connections reused, TLS
 * verified) and a queue of jobs. HTTP handlers never block on Marketo: they
 * fill a gw_job, submit it, suspend their connection, and resume it from the
 * job's done callback. The engine takes an outbound slot from the rate
 * limiter before each SOAP call, gives up on jobs whose queue deadline
 * passes (RATE_LIMITED -> 429), retries retryable faults and transport
 * errors with jittered backoff inside the job's deadline (20016 re-signed at
 * once; 20023/20024 and 5xx after waiting, honouring Retry-After), and ends
 * every job exactly once, shutdown included.
 *
 * The waiting queue is a list the engine walks in order, so that jobs still
 * waiting for a slot can be inspected and merged. A job is one logical
 * request part and a call is what goes on the wire; one call may serve
 * several jobs (coalescing):
 * - single flight: a key job (GET_MULTIPLE, LeadKeySelector, first page)
 *   whose keys are all in a getMultipleLeads call already in flight for the
 *   same key type, field set and batch size rides on that call and gets its
 *   results, without a slot of its own, provided the call cannot be older
 *   than the job's cache epoch (read-your-writes: a lookup that starts after
 *   a sync answered must not get an answer Marketo gave before the sync,
 *   nor cache it under its newer epoch). The job may ride when it reached
 *   the engine before the call was sent (its epoch was read before the
 *   send), or when its epoch (job->epoch, nonzero) is the epoch a member of
 *   the call read before the send (no invalidation can lie between the
 *   send and the job's read: the answer is as fresh as the job's epoch).
 *   A job without an epoch (cache bypassed) rides only in the first case;
 * - batching: when a key job gets a slot, the waiting key jobs of the same
 *   key type, field set and batch size join its call, up to 100 distinct
 *   keys. Only shapes whose leads can be matched back to keys are batched
 *   (IDNUM, EMAIL; other key types when their mapping attribute is returned:
 *   all fields, or the attribute among includeAttributes); otherwise only
 *   jobs with the very same key set share a call. A job that gets a slot at
 *   once goes alone unless gateway.coalesce_window_ms > 0 makes it
 *   wait that long for company.
 * Each member gets its own outcome and its own done call. On OK a member
 * whose keys are the call's whole key set gets a full copy of the answer
 * (paging fields included); any other member gets deep copies of the leads
 * that match its keys (mkto_lead_matches_key; a lead matching several members
 * goes to each; a lead matching no member is dropped) with remaining_count 0.
 * If a merged answer has more pages (remainingCount > 0), members with a
 * partial key set are not served from it: each is queued again to run alone
 * (never merged again), which costs it one more call, outside
 * retry_max_attempts but inside its deadline. On failure every member gets a
 * copy of the fault / detail / retry_after_s, and is retried or ended by the
 * usual rules against its own attempts and deadline (retried members wait
 * the same backoff, so they merge again). job->attempts counts every call
 * the job was a member of (rider or batched): what that request spent.
 * Follow-up pages (stream_position set) never merge.
 *
 * Pacing: a token bucket sits in front of the limiter, for key lookups only
 * (the calls merging helps): each key-lookup call, first attempt or retry,
 * takes one token; riders on a call in flight take none. Syncs and list
 * pages cannot merge: they skip the bucket, go straight to the limiter and
 * may overtake paced lookups. Refill rate =
 * ratelimit.calls_per_window / (window_seconds * 1000) tokens per ms, burst =
 * min(calls_per_window, max_concurrent) (10 with the defaults 100 / 20 s /
 * 10: 5 calls/s after a burst of 10). The bucket starts full, so an idle
 * engine adds no latency; without a token the first waiting key job and every
 * key job behind it wait (and merge) until the next token, and the engine sleeps
 * at most until then. The limiter's rules still apply on top: pacing is only
 * stricter. calls_per_window <= 0 turns pacing off. With the Redis limiter
 * each replica paces at the whole fleet's rate (it does not know how many
 * replicas there are), so N busy replicas may ask for up to N times the
 * fleet rate; the shared Redis window still grants exactly calls_per_window
 * per window across the fleet, and the surplus waits in each replica's list
 * (merging further) as it does without pacing. upstream_pacing_waits_total
 * counts calls whose starter had to wait for a token.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "gateway/err.h"
#include "gateway/store/ratelimit.h"
#include "marketo/model.h"

typedef enum gw_call_kind {
    GW_CALL_GET_MULTIPLE = 0, /* getMultipleLeads with job->get */
    GW_CALL_SYNC_MULTIPLE,    /* syncMultipleLeads with job->sync_leads */
} gw_call_kind;

typedef enum gw_outcome {
    GW_OUT_OK = 0,        /* result in job->leads or job->sync */
    GW_OUT_FAULT,         /* Marketo answered with a fault (after retries): job->fault */
    GW_OUT_RATE_LIMITED,  /* no outbound slot before the queue deadline: job->retry_after_s */
    GW_OUT_QUOTA,         /* the daily quota is spent: job->retry_after_s until reset */
    GW_OUT_TIMEOUT,       /* the job's deadline passed during a call */
    GW_OUT_UNREACHABLE,   /* connect or transport failure (after retries) */
    GW_OUT_BAD_RESPONSE,  /* body unparsable, not SOAP (an HTML 503 page), or too large */
    GW_OUT_SHUTDOWN,      /* the engine stopped before the job could run or end (its
                           * call cut at the drain deadline) */
} gw_outcome;

/* How attempts end (gateway/upstream/engine.c has the full table):
 * - faults: 20016 retried at once with a fresh signature; 20023, 20024,
 *   20011, 10001 retried after a jittered backoff (>= 1 s for 20023); any
 *   other code ends FAULT at once. 20015 (daily quota) ends FAULT with
 *   retry_after_s set to the next US-Central midnight; 20023/20024 leave a
 *   retry_after_s too.
 * - a non-SOAP 5xx/429 (an HTML error page) is retried (Retry-After
 *   honoured) and ends BAD_RESPONSE "HTTP 503"; a non-SOAP 2xx/4xx ends
 *   BAD_RESPONSE at once, as does a body over max_response_bytes and a
 *   request the envelope builder refuses (detail "request: ...").
 * - connect failures are retried for every kind and end UNREACHABLE; other
 *   transport errors and per-call timeouts are retried for GET_MULTIPLE
 *   only: a SYNC job whose request may have reached Marketo (a connection
 *   lost after the request was written, a timeout waiting for the answer)
 *   is never resent and gets maybe_applied instead. libcurl's own re-send
 *   on a reused connection that died is ruled out for SYNC: each sync call
 *   takes a fresh connection and closes it afterwards. Reaching deadline_ms
 *   ends TIMEOUT.
 * Attempts are bounded by marketo.retry_max_attempts and by deadline_ms; when
 * either runs out the job ends with its last attempt's outcome. */
typedef struct gw_job gw_job;

/* Called exactly once per job, on the engine thread, after the outcome and
 * results are set. Must be quick and must not free the job synchronously
 * unless the submitter owns it in a way that allows it (typically: it
 * decrements a pending count and calls MHD_resume_connection). */
typedef void (*gw_job_done_fn)(gw_job *job, void *arg);

struct gw_job {
    /* ---- set by the submitter; borrowed (not copied) until done runs ---- */
    gw_call_kind kind;            /* which operation */
    mkto_query get;        /* GET_MULTIPLE: parameters (pointers borrowed) */
    const mkto_lead *sync_leads;  /* SYNC_MULTIPLE: records (1..300) */
    size_t nsync;                 /* SYNC_MULTIPLE: entries in sync_leads */
    bool dedup;                   /* SYNC_MULTIPLE: dedupEnabled */
    int64_t queue_deadline_ms;    /* monotonic ms: no slot by then -> RATE_LIMITED */
    int64_t deadline_ms;          /* monotonic ms: the whole job, retries included */
    gw_job_done_fn done;          /* completion callback */
    void *done_arg;               /* its argument */
    uint64_t epoch;               /* GET_MULTIPLE key job: the cache epoch the submitter
                                   * read before submitting, under which it stores the
                                   * answer; 0: none (single flight, above) */

    /* ---- filled by the engine before done ---- */
    gw_outcome outcome;           /* how it ended */
    mkto_leads leads;      /* GET_MULTIPLE and OK: parsed page (owned by the job) */
    mkto_sync_result sync;        /* SYNC_MULTIPLE and OK: statuses (owned by the job) */
    mkto_fault fault;             /* FAULT: Marketo's fault (owned by the job) */
    int64_t retry_after_s;        /* RATE_LIMITED, QUOTA, rate faults: seconds to suggest */
    int attempts;                 /* SOAP calls made for this job */
    bool maybe_applied;           /* SYNC: a call may have reached Marketo with no answer */
    char detail[160];             /* transport/parse error text (no secrets, no keys) */

    /* ---- engine-private ---- */
    gw_job *q_next;               /* queue link */
    gw_job *q_prev;               /* queue link */
    int64_t not_before_ms;        /* backoff: do not start before this monotonic time */
    int64_t enqueued_ms;          /* monotonic time of submit (metrics) */
    gw_outcome last_outcome;      /* outcome of the last failed attempt (ends the job when
                                   * retries or time run out) */
    bool solo;                    /* never merged with other jobs (a merged answer paged) */
    bool coalesced;               /* counted in upstream_coalesced_jobs_total already */
    uint64_t attach_gen;          /* call generation last checked for single flight */
    uint64_t taken_seq;           /* order in which the engine took it from the inbox */
    bool paced;                   /* held back by pacing since its last start (metrics) */
};

typedef struct gw_upstream gw_upstream;

/* Creates the engine (not started). lim is borrowed and must outlive it.
 * Returns NULL with err filled. */
gw_upstream *gw_upstream_new(const gw_config *cfg, gw_limiter *lim, gw_err *err);

/* Starts the engine thread. Returns 0 or -1. */
int gw_upstream_start(gw_upstream *u);

/* Queues a job (any thread). The job must stay valid until its done callback
 * has run; done runs exactly once, even when the engine is stopping. Submit
 * resets the engine-filled fields (it does not free them: clear results of a
 * reused job first). Jobs submitted while the engine drains still run until
 * the drain deadline; once the engine thread has exited (or after a shutdown
 * of an engine never started), done runs at once on the caller's thread with
 * GW_OUT_SHUTDOWN. */
void gw_upstream_submit(gw_upstream *u, gw_job *job);

/* Stops the engine: queued jobs keep getting slots and in-flight calls keep
 * running until drain_deadline_ms (monotonic); then jobs still waiting end
 * SHUTDOWN and calls still in flight are aborted and end SHUTDOWN too (a
 * sync job with maybe_applied): the gateway cut them, so they answer 503
 * "shutting down", not 504. Returns early once nothing is left. Joins the thread.
 * Idempotent; a second call may only bring the deadline forward. Called from
 * a done callback (the engine thread) it only flags the stop and returns. */
void gw_upstream_shutdown(gw_upstream *u, int64_t drain_deadline_ms);

/* Frees the engine (shuts it down first if needed). */
void gw_upstream_free(gw_upstream *u);

/* Releases what the engine put into a job (results, fault); the submitter
 * calls it when done with the results. */
void gw_job_clear_results(gw_job *job);

/* Lower-case name of an outcome ("ok", "fault", "rate_limited", ...) for logs
 * and metric labels; "unknown" for an out-of-range value. Static storage. */
const char *gw_outcome_name(gw_outcome o);

/* What one call of the engine's protocol may carry: lookups and syncs split
 * their work by it. */
typedef struct gw_call_limits {
    size_t keys_per_call;  /* keys in one key lookup (SOAP 100) */
    size_t sync_per_call;  /* records in one sync (SOAP 300) */
    int batch_size;        /* leads in one page (SOAP 1000) */
} gw_call_limits;
gw_call_limits gw_upstream_limits(const gw_upstream *u);

/* Monotonic clock in ms, the time base of every deadline above. */
int64_t gw_now_ms(void);

/* Jobs waiting for a slot and calls in flight (for /metrics). */
size_t gw_upstream_queued(gw_upstream *u);
size_t gw_upstream_in_flight(gw_upstream *u);

#endif /* GW_UPSTREAM_H */
