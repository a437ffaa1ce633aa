/* sim/stats.c - call counters for /_sim/stats (see stats.h). */
#include "sim/stats.h"
#include "sim/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Counters of one operation. */
typedef struct op_stats {
    long calls;        /* requests received */
    long faults;       /* answered with a fault or an injected failure */
    int64_t *times;    /* arrival times (ms since the epoch) */
    size_t ntimes;     /* entries in times */
    size_t cap;        /* allocated entries */
} op_stats;

/* The module's state, under mu. */
static struct {
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t entered;      /* broadcast when in_flight grows */
    op_stats ops[SIM_OP__COUNT]; /* per operation */
    int in_flight;               /* SOAP requests between arrival and answer */
    int peak;                    /* highest in_flight since start/reset */
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .entered = PTHREAD_COND_INITIALIZER};

static const char *const op_names[SIM_OP__COUNT] = {
    "getLead", "getMultipleLeads", "syncLead", "syncMultipleLeads", "unknown"};

const char *sim_op_name(sim_op op)
{
    return ((int)op >= 0 && op < SIM_OP__COUNT) ? op_names[op] : "unknown";
}

int sim_op_parse(const char *name, sim_op *out)
{
    for (int i = 0; name != NULL && i < SIM_OP_UNKNOWN; i++) {
        if (strcmp(name, op_names[i]) == 0) {
            *out = (sim_op)i;
            return 0;
        }
    }
    return -1;
}

void sim_stats_call(sim_op op, int64_t arrival_ms)
{
    if ((int)op < 0 || op >= SIM_OP__COUNT)
        op = SIM_OP_UNKNOWN;
    pthread_mutex_lock(&S.mu);
    op_stats *o = &S.ops[op];
    o->calls++;
    if (o->ntimes == o->cap && o->cap < SIM_STATS_MAX_TIMES) {
        size_t cap = o->cap == 0 ? 256 : o->cap * 2;
        if (cap > SIM_STATS_MAX_TIMES)
            cap = SIM_STATS_MAX_TIMES;
        int64_t *nt = realloc(o->times, cap * sizeof(*nt));
        if (nt != NULL) {
            o->times = nt;
            o->cap = cap;
        }
    }
    if (o->ntimes < o->cap)
        o->times[o->ntimes++] = arrival_ms;
    pthread_mutex_unlock(&S.mu);
}

void sim_stats_fault(sim_op op)
{
    if ((int)op < 0 || op >= SIM_OP__COUNT)
        op = SIM_OP_UNKNOWN;
    pthread_mutex_lock(&S.mu);
    S.ops[op].faults++;
    pthread_mutex_unlock(&S.mu);
}

void sim_stats_enter(void)
{
    pthread_mutex_lock(&S.mu);
    S.in_flight++;
    if (S.in_flight > S.peak)
        S.peak = S.in_flight;
    pthread_cond_broadcast(&S.entered);
    pthread_mutex_unlock(&S.mu);
}

bool sim_stats_wait_in_flight(int n, int64_t max_ms)
{
    /* the condition variable waits on CLOCK_REALTIME (its default) */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(max_ms / 1000);
    until.tv_nsec += (long)(max_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&S.mu);
    int rc = 0;
    while (S.in_flight < n && rc != ETIMEDOUT && !sim_stopping())
        rc = pthread_cond_timedwait(&S.entered, &S.mu, &until);
    bool reached = S.in_flight >= n;
    pthread_mutex_unlock(&S.mu);
    return reached;
}

void sim_stats_wake_all(void)
{
    pthread_mutex_lock(&S.mu);
    pthread_cond_broadcast(&S.entered);
    pthread_mutex_unlock(&S.mu);
}

void sim_stats_leave(void)
{
    pthread_mutex_lock(&S.mu);
    if (S.in_flight > 0)
        S.in_flight--;
    pthread_mutex_unlock(&S.mu);
}

void sim_stats_reset(void)
{
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < SIM_OP__COUNT; i++) {
        S.ops[i].calls = S.ops[i].faults = 0;
        S.ops[i].ntimes = 0;
    }
    S.peak = S.in_flight;
    pthread_mutex_unlock(&S.mu);
}

void sim_stats_cleanup(void)
{
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < SIM_OP__COUNT; i++) {
        free(S.ops[i].times);
        memset(&S.ops[i], 0, sizeof(S.ops[i]));
    }
    pthread_mutex_unlock(&S.mu);
}

json_t *sim_stats_json(size_t nleads)
{
    json_t *root = json_object();
    json_t *ops = json_object();
    int bad = root == NULL || ops == NULL;
    pthread_mutex_lock(&S.mu);
    for (int i = 0; !bad && i < SIM_OP__COUNT; i++) {
        const op_stats *o = &S.ops[i];
        json_t *times = json_array();
        bad |= times == NULL;
        for (size_t k = 0; !bad && k < o->ntimes; k++)
            bad |= json_array_append_new(times, json_integer(o->times[k])) != 0;
        json_t *one = json_pack("{s:I, s:I, s:o}", "calls", (json_int_t)o->calls, "faults",
                                (json_int_t)o->faults, "times_ms", times);
        bad |= one == NULL || json_object_set_new(ops, op_names[i], one) != 0;
    }
    int peak = S.peak, in_flight = S.in_flight;
    pthread_mutex_unlock(&S.mu);
    if (!bad)
        bad |= json_object_set_new(root, "operations", ops) != 0;
    else
        json_decref(ops);
    ops = NULL;
    if (!bad)
        bad |= json_object_set_new(root, "peak_concurrency", json_integer(peak)) != 0 ||
               json_object_set_new(root, "in_flight", json_integer(in_flight)) != 0 ||
               json_object_set_new(root, "leads", json_integer((json_int_t)nleads)) != 0;
    if (bad) {
        json_decref(root);
        return NULL;
    }
    return root;
}
