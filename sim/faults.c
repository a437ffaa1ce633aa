/* sim/faults.c - fault injection rules (see faults.h). */
#include "sim/faults.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "sim/util.h"

/* hold_max_ms when a rule names hold_in_flight without it. */
#define SIM_HOLD_MAX_DEFAULT_MS 10000

/* One installed rule and its progress. */
typedef struct rule {
    bool active;          /* installed */
    int64_t latency_ms;   /* fixed delay for affected calls */
    int64_t jitter_ms;    /* plus uniform 0..jitter_ms */
    double error_rate;    /* share of affected calls that fail */
    int fault_code;       /* fault sent when they fail */
    bool http_503;        /* fail with an HTML 503 instead of a fault */
    double drop_rate;     /* share of affected calls dropped */
    double truncate_rate; /* share of affected calls truncated */
    long skip;            /* matching calls let through first */
    long count;           /* affected calls after skip; -1: unlimited */
    int hold_in_flight;   /* > 0: hold until this many calls are in flight */
    int64_t hold_max_ms;  /* longest hold */
    bool drop_after_op;   /* a dropped call runs its operation before the drop */
    int64_t latency_after_ms; /* delay after the operation, before the answer */
    uint64_t rng;         /* generator state, from seed */
    long seen;            /* matching calls so far */
    long affected;        /* affected calls so far */
} rule;

/* Index SIM_OP_UNKNOWN holds the "*" rule. */
static struct {
    pthread_mutex_t mu;         /* guards rules */
    rule rules[SIM_OP__COUNT];  /* per operation; [SIM_OP_UNKNOWN] = "*" */
} F = {.mu = PTHREAD_MUTEX_INITIALIZER};

void sim_faults_decide(sim_op op, sim_decision *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&F.mu);
    rule *r = ((int)op >= 0 && op < SIM_OP_UNKNOWN && F.rules[op].active)
                  ? &F.rules[op] : &F.rules[SIM_OP_UNKNOWN];
    if (!r->active)
        goto out;
    long n = r->seen++;
    if (n < r->skip || (r->count >= 0 && r->affected >= r->count))
        goto out;
    r->affected++;
    /* Always draw the same number of values per call: reproducible. */
    double jitter = sim_rand_unit(&r->rng);
    double d = sim_rand_unit(&r->rng);
    double e = sim_rand_unit(&r->rng);
    double t = sim_rand_unit(&r->rng);
    out->latency_ms = r->latency_ms + (int64_t)floor(jitter * (double)(r->jitter_ms + 1));
    if (d < r->drop_rate)
        out->action = SIM_ACT_DROP;
    else if (e < r->error_rate)
        out->action = r->http_503 ? SIM_ACT_HTTP_503 : SIM_ACT_FAULT;
    else if (t < r->truncate_rate)
        out->action = SIM_ACT_TRUNCATE;
    out->fault_code = r->fault_code;
    out->hold_in_flight = r->hold_in_flight;
    out->hold_max_ms = r->hold_max_ms;
    out->drop_after_op = r->drop_after_op;
    out->latency_after_ms = r->latency_after_ms;
out:
    pthread_mutex_unlock(&F.mu);
}

void sim_faults_clear(void)
{
    pthread_mutex_lock(&F.mu);
    memset(F.rules, 0, sizeof(F.rules));
    pthread_mutex_unlock(&F.mu);
}

/* Reads a number member (integer or real) into *out when present.
 * Returns 0, or -1 when present but not a number or outside [lo, hi]. */
static int get_num(const json_t *o, const char *name, double lo, double hi, double *out)
{
    const json_t *v = json_object_get(o, name);
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return -1;
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return -1;
    *out = x;
    return 0;
}

int sim_faults_set_json(const json_t *j, char *err, size_t errlen)
{
    if (!json_is_object(j)) {
        snprintf(err, errlen, "body must be a JSON object");
        return -1;
    }
    const char *opname = json_string_value(json_object_get(j, "operation"));
    sim_op op;
    if (opname == NULL) {
        snprintf(err, errlen, "\"operation\" is required");
        return -1;
    }
    if (strcmp(opname, "*") == 0) {
        op = SIM_OP_UNKNOWN;
    } else if (sim_op_parse(opname, &op) != 0) {
        snprintf(err, errlen, "unknown operation");
        return -1;
    }
    const json_t *clear = json_object_get(j, "clear");
    if (clear != NULL && json_is_true(clear)) {
        pthread_mutex_lock(&F.mu);
        if (op == SIM_OP_UNKNOWN)
            memset(F.rules, 0, sizeof(F.rules));
        else
            memset(&F.rules[op], 0, sizeof(F.rules[op]));
        pthread_mutex_unlock(&F.mu);
        return 0;
    }
    rule r = {.active = true, .fault_code = 20011, .count = -1, .rng = 1};
    double lat = 0, jit = 0, er = -1, code = 20011, dr = 0, tr = 0, skip = 0, count = -1,
           seed = 1, hold = 0, hold_max = SIM_HOLD_MAX_DEFAULT_MS, lat_after = 0;
    const json_t *h503 = json_object_get(j, "http_503");
    const json_t *dao = json_object_get(j, "drop_after_op");
    const json_t *cnt = json_object_get(j, "count");
    if (get_num(j, "latency_ms", 0, 600000, &lat) || get_num(j, "jitter_ms", 0, 600000, &jit) ||
        get_num(j, "error_rate", 0, 1, &er) || get_num(j, "fault_code", 1, 99999, &code) ||
        get_num(j, "drop_rate", 0, 1, &dr) || get_num(j, "truncate_rate", 0, 1, &tr) ||
        get_num(j, "skip", 0, 1e12, &skip) || get_num(j, "seed", 0, 9007199254740992.0, &seed) ||
        get_num(j, "hold_in_flight", 0, 100000, &hold) ||
        get_num(j, "hold_max_ms", 0, 600000, &hold_max) ||
        get_num(j, "latency_after_ms", 0, 600000, &lat_after) ||
        (cnt != NULL && !json_is_null(cnt) && get_num(j, "count", 0, 1e12, &count)) ||
        (h503 != NULL && !json_is_boolean(h503)) || (dao != NULL && !json_is_boolean(dao))) {
        snprintf(err, errlen, "a member has a bad type or is out of range");
        return -1;
    }
    r.http_503 = h503 != NULL && json_is_true(h503);
    /* A rule naming a fault or a 503 without a rate means "always". */
    if (er < 0)
        er = (json_object_get(j, "fault_code") != NULL || r.http_503) ? 1.0 : 0.0;
    r.latency_ms = (int64_t)lat;
    r.jitter_ms = (int64_t)jit;
    r.error_rate = er;
    r.fault_code = (int)code;
    r.drop_rate = dr;
    r.truncate_rate = tr;
    r.skip = (long)skip;
    r.count = (long)count;
    r.rng = (uint64_t)seed;
    r.hold_in_flight = (int)hold;
    r.hold_max_ms = (int64_t)hold_max;
    r.drop_after_op = dao != NULL && json_is_true(dao);
    r.latency_after_ms = (int64_t)lat_after;
    pthread_mutex_lock(&F.mu);
    F.rules[op] = r;
    pthread_mutex_unlock(&F.mu);
    return 0;
}
