/* sim/faults.h - fault injection rules of marketo-sim (POST /_sim/faults).
 *
 * One rule per operation plus a "*" rule used for operations without their
 * own. A rule lets its first `skip` matching calls through, then affects the
 * next `count` calls (all when count is null): each affected call gets
 * latency_ms plus a uniform jitter, and then, drawn in this order from the
 * rule's own seeded generator, is dropped (drop_rate), fails (error_rate:
 * a SOAP fault fault_code, or an HTML 503 page when http_503), or has its
 * answer cut in half (truncate_rate). An affected call of a rule with
 * hold_in_flight N first waits until N SOAP calls are in flight at the sim
 * (itself included), at most hold_max_ms, then gets its latency; the hold
 * draws nothing from the generator. Two more knobs shape what happens after
 * that, again without a draw: drop_after_op makes a dropped call run its
 * operation first (a sync is applied, a lookup reads the store) and only
 * then close the connection; latency_after_ms sleeps after the operation
 * ran (or the injected failure was chosen) and before the answer (or the
 * drop) goes out, so a lookup can read the store and answer late.
 * Thread-safe (one mutex).
 */
#ifndef SIM_FAULTS_H
#define SIM_FAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sim/stats.h"

/* What to do with one call. */
typedef enum sim_action {
    SIM_ACT_NONE = 0,   /* answer normally */
    SIM_ACT_FAULT,      /* answer with SOAP fault fault_code */
    SIM_ACT_HTTP_503,   /* answer with an HTML 503 page */
    SIM_ACT_DROP,       /* close the connection without an answer */
    SIM_ACT_TRUNCATE,   /* send the normal answer cut in half */
} sim_action;

/* The rule's verdict on one call. */
typedef struct sim_decision {
    sim_action action;   /* what to do */
    int fault_code;      /* for SIM_ACT_FAULT */
    int64_t latency_ms;  /* extra delay before answering */
    int hold_in_flight;  /* > 0: first wait until this many calls are in flight */
    int64_t hold_max_ms; /* ... for at most this long */
    bool drop_after_op;  /* SIM_ACT_DROP: run the operation, then drop */
    int64_t latency_after_ms; /* delay after the operation ran, before answering */
} sim_decision;

/* Applies the rule for op to one call and advances its counters. */
void sim_faults_decide(sim_op op, sim_decision *out);
/* Installs (replaces) a rule from the JSON body of POST /_sim/faults, or
 * clears all with {"operation": "*", "clear": true}. Returns 0, or -1 with a
 * message in err. */
int sim_faults_set_json(const json_t *rule, char *err, size_t errlen);
/* Removes every rule. */
void sim_faults_clear(void);

#endif /* SIM_FAULTS_H */
