/* gateway/upstream/internal.h - what the engine's two halves share:
 * engine.c (the queue, the thread, submit and shutdown), call.c (one
 * call's life: built, on the wire, answered, handed to its members) and
 * jobs.c (the waiting list, ending a job). engine.c calls call.c and
 * jobs.c, call.c calls jobs.c, jobs.c calls neither.
 *
 * Private to gateway/upstream/: nothing outside includes it. Everything here
 * runs on the engine thread unless a comment says otherwise.
 */
#ifndef GW_UPSTREAM_INTERNAL_H
#define GW_UPSTREAM_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "gateway/metrics.h"
#include "gateway/store/ratelimit.h"
#include "gateway/upstream/coalesce.h"
#include "gateway/upstream/pacing.h"
#include "gateway/upstream/upstream.h"
#include "marketo/protocol.h"

#define UP_MIN_HOST_CONNS 16        /* curl connections to the endpoint, at least */
#define UP_POOL_MAX 16              /* idle easy handles kept for reuse */
#define UP_MIN_ATTEMPT_MS 100       /* never start an attempt with less time than this left */
#define UP_CONNECT_TIMEOUT_MS 10000 /* TCP+TLS connect budget (capped by the call's) */
#define UP_LIMIT_ERROR_WAIT_MS 50   /* limiter backend error: try again after this */
#define UP_MAX_POLL_MS 1000         /* longest sleep in curl_multi_poll */
#define UP_BODY_INITIAL (16u * 1024u) /* first allocation of a response buffer */
#define UP_BODY_KEEP (256u * 1024u)   /* response buffers up to this size are kept in the pool */

#define NOUTCOMES 8 /* gw_outcome values */
#define NKINDS 2    /* gw_call_kind values */

/* One call on the wire (or idle in the pool): an easy handle and its buffers. */
typedef struct gw_call {
    CURL *easy;                    /* reused handle; its connection lives in the multi's cache */
    gw_job *job;                   /* the job that started the call (NULL when idle); its
                                    * fields receive the parsed answer first */
    gw_batch batch;                /* every job the call serves, job first, and what
                                    * goes on the wire (coalesce.h) */
    int64_t ends_ms;               /* monotonic: the call's own timeout */
    gw_slot slot;                  /* limiter slot held while in flight */
    mkto_request req;              /* the request sent (owned; cleared when the call ends) */
    struct curl_slist *headers;    /* req's headers for curl (owned) */
    char *body;                    /* response body received so far (owned) */
    size_t len;                    /* bytes in body */
    size_t cap;                    /* allocated bytes of body */
    size_t max;                    /* cap on the body: max_response_bytes */
    bool too_large;                /* the write callback refused more than max */
    bool deadline_capped;          /* CURLOPT_TIMEOUT_MS was cut to the job's deadline */
    int64_t started_ms;            /* monotonic start of the call */
    char errbuf[CURL_ERROR_SIZE];  /* curl's error text (debug logs only: may name a host) */
    struct gw_call *next;          /* in-flight list or pool link */
    struct gw_call *prev;          /* in-flight list link */
} gw_call;

struct gw_upstream {
    mkto_protocol *proto;          /* the API spoken (owned) */

    /* copied settings */
    int64_t timeout_ms;            /* one call's deadline */
    int64_t connect_timeout_ms;    /* connect phase budget */
    size_t max_response;           /* response body cap */
    int max_attempts;              /* attempts per job incl. the first */
    bool tls_verify;               /* verify peer and host name */
    int64_t rl_window_s;           /* rolling window length: Retry-After hint for 20023 */
    long max_calls;                /* in-flight calls the engine allows itself */

    gw_limiter *lim;               /* borrowed rate limiter */
    CURLM *multi;                  /* curl multi handle (engine thread, wakeup from any) */

    pthread_mutex_t mu;            /* guards the fields down to `exited` */
    gw_job *inbox_head;            /* submitted, not yet seen by the engine */
    gw_job *inbox_tail;            /* last of the inbox */
    bool stopping;                 /* shutdown requested */
    int64_t drain_deadline_ms;     /* when stopping: end of the drain */
    bool exited;                   /* engine no longer takes jobs: submit ends them itself */

    pthread_mutex_t shut_mu;       /* serialises shutdown's join */
    pthread_t thread;              /* the engine thread */
    bool started;                  /* thread created */
    bool joined;                   /* thread joined (or never started and shut down) */

    /* engine-thread state */
    gw_job *wait_head;             /* waiting jobs, FIFO by submit time */
    gw_job *wait_tail;             /* last waiting job */
    gw_call *active;               /* calls in flight */
    long nactive;                  /* entries in active */
    gw_call *pool;                 /* idle calls */
    int npool;                     /* entries in pool */
    int64_t last_hint_ms;          /* the limiter's last WAIT hint */
    int64_t limiter_retry_at_ms;   /* monotonic: do not ask the limiter again before this
                                    * (0: ask now; reset when one of our slots comes back) */
    uint64_t rng;                  /* xorshift state for backoff jitter */

    atomic_size_t queued;          /* jobs in inbox + waiting list */
    atomic_size_t in_flight;       /* calls in flight */

    /* metrics (series live in the global registry) */
    gw_counter *m_calls[NKINDS][NOUTCOMES];  /* calls by operation and outcome */
    gw_counter *m_jobs[NKINDS][NOUTCOMES];   /* finished jobs by operation and outcome */
    gw_counter *m_retries[NKINDS];           /* retried attempts by operation */
    gw_histogram *m_duration[NKINDS];        /* call duration, seconds */
    gw_histogram *m_queue_wait;              /* submit to first call start, seconds */
    gw_counter *m_coalesced;                 /* jobs served by a call they did not start */
    gw_histogram *m_keys_per_call;           /* distinct keys per getMultipleLeads key call */
    gw_counter *m_pacing_waits;              /* calls started after waiting for a pacing token */

    int64_t gather_ms;             /* gateway.coalesce_window_ms */
    uint64_t call_gen;             /* bumped at each call start (single-flight rescans) */
    uint64_t take_seq;             /* jobs taken from the inbox so far (engine thread) */

    gw_pacer pacer;                /* token bucket in front of the limiter (pacing.h) */
};

/* ---- small helpers -------------------------------------------------------- */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Wall clock in ms since the epoch: the limiter's time base. */
static inline int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int kind_index(const gw_job *job)
{
    return job->kind == GW_CALL_SYNC_MULTIPLE ? 1 : 0;
}

/* The protocol's name of a job kind's operation ("getMultipleLeads"). */
static inline const char *op_name(const gw_upstream *u, int k)
{
    return u->proto->op_names[k == 1 ? MKTO_OP_SYNC_LEADS : MKTO_OP_GET_LEADS];
}

/* Whether job may share a call of this engine's protocol. */
static inline bool is_key_job(const gw_upstream *u, const gw_job *job)
{
    return gw_is_key_job(job, u->proto->max_keys_per_call);
}

static inline void metric_add(gw_counter *c)
{
    if (c)
        gw_counter_add(c, 1);
}

static inline void observe(gw_histogram *h, double v)
{
    if (h)
        gw_histogram_observe(h, v);
}

/* ---- jobs.c --------------------------------------------------------------- */

/* Appends job to a list given by its head and tail. */
void up_list_append(gw_job **head, gw_job **tail, gw_job *job);
/* Removes a job from the waiting list. */
void up_waiting_unlink(gw_upstream *u, gw_job *job);
/* Puts a job back into the waiting list in submit order (retries, unmerged
 * members), so that it keeps its place ahead of later jobs. */
void up_waiting_reinsert(gw_upstream *u, gw_job *job);
/* Ends a job: sets its outcome and runs its callback. The job is in no list
 * and no engine lock is held; the job must not be touched afterwards. */
void up_end_job(gw_upstream *u, gw_job *job, gw_outcome outcome);
/* Ends a job that never made it onto the engine (SHUTDOWN), on the caller's
 * thread. */
void up_end_job_unqueued(gw_upstream *u, gw_job *job);

/* ---- call.c --------------------------------------------------------------- */

/* Starts one call for a job that holds a limiter slot and is already out of
 * the waiting list, folding compatible waiting key jobs into it; on failure
 * the slot is given back and the members end. Returns the number of waiting
 * jobs it took. */
size_t up_start_call(gw_upstream *u, gw_job *job, const gw_slot *slot, int64_t now);
/* Single flight: lets a waiting key job ride on a call in flight that can
 * carry it. Returns true when the job joined. */
bool up_try_attach(gw_upstream *u, gw_job *job, int64_t now);
/* Collects finished transfers and ends or requeues their jobs. Returns how
 * many finished. */
int up_reap(gw_upstream *u);
/* Cuts every call in flight (drain deadline): members end SHUTDOWN, a sync
 * with maybe_applied. */
void up_abort_calls(gw_upstream *u);
/* Frees an idle call (the pool, at free). */
void up_call_destroy(gw_call *c);

#endif /* GW_UPSTREAM_INTERNAL_H */
