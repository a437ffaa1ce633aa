/* sim/stats.h - per-operation call counters of marketo-sim, served by
 * GET /_sim/stats. Thread-safe (one mutex). */
#ifndef SIM_STATS_H
#define SIM_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/* The operations the sim tells apart. */
typedef enum sim_op {
    SIM_OP_GET_LEAD = 0,   /* getLead */
    SIM_OP_GET_MULTIPLE,   /* getMultipleLeads */
    SIM_OP_SYNC_LEAD,      /* syncLead */
    SIM_OP_SYNC_MULTIPLE,  /* syncMultipleLeads */
    SIM_OP_UNKNOWN,        /* unparsable, unsupported or no operation */
    SIM_OP__COUNT
} sim_op;

/* Most arrival times kept per operation in times_ms. */
#define SIM_STATS_MAX_TIMES 100000

/* "getLead", ..., "unknown"; static storage. */
const char *sim_op_name(sim_op op);
/* Operation called name (the four real ones, not "unknown"); 0 or -1. */
int sim_op_parse(const char *name, sim_op *out);

/* Counts one received call of op that arrived at arrival_ms. */
void sim_stats_call(sim_op op, int64_t arrival_ms);
/* Counts one call of op answered with a fault (or an injected failure). */
void sim_stats_fault(sim_op op);
/* A SOAP request arrived / was answered: in_flight and peak_concurrency. */
void sim_stats_enter(void);
void sim_stats_leave(void);
/* Waits (holding no lock of the caller) until at least n SOAP requests are
 * in flight, at most max_ms. Returns true when they were, false on time out. */
bool sim_stats_wait_in_flight(int n, int64_t max_ms);
/* Wakes every sim_stats_wait_in_flight (they end when sim_stopping()). */
void sim_stats_wake_all(void);
/* Clears counters, times and the peak (the peak restarts at in_flight). */
void sim_stats_reset(void);
/* Frees the time arrays. */
void sim_stats_cleanup(void);
/* The /_sim/stats document ({"operations": ..., "peak_concurrency",
 * "in_flight", "leads"}); new reference, NULL on OOM. */
json_t *sim_stats_json(size_t nleads);

#endif /* SIM_STATS_H */
