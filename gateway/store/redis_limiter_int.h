/* gateway/store/redis_limiter_int.h - what the fallback limiter
 * (redis_fallback.c) uses of the Redis limiter (redis_limiter.c). Private to
 * gateway/store/: redis_fallback.c calls redis_limiter.c, never the other
 * way round. */
#ifndef GW_STORE_REDIS_LIMITER_INT_H
#define GW_STORE_REDIS_LIMITER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/store/redis.h"

/* Longest suggested wait when only concurrency is full (a release may come sooner). */
#define CONCURRENCY_RETRY_CAP_MS 10
/* Longest wait the local share suggests: Redis may answer again before. */
#define FALLBACK_RETRY_CAP_MS 250
/* Life of a day counter after its midnight, seconds. */
#define DAY_KEY_GRACE_S 60
/* Room for a data generation name (16 hex digits and a NUL, with slack). */
#define GEN_LEN 24

/* The Redis limiter. */
typedef struct redis_limiter {
    gw_limiter base;        /* ops; must stay first */
    gw_redis *r;            /* connection manager (one reference) */
    gw_limit_params p;      /* the budget shared by every replica */
    int64_t lease_ms;       /* life of a slot never released */
    char *k_win;            /* P rl:win */
    char *k_lease;          /* P rl:lease */
    char *k_day;            /* P rl:day: (the date is appended per call) */
    char *k_gen;            /* P rl:gen */
} redis_limiter;

/* What one acquire script answered. */
typedef struct rl_answer {
    gw_limit_result res;    /* OK, WAIT or QUOTA (ERROR: no answer, nothing else set) */
    int64_t retry_ms;       /* WAIT/QUOTA: when to ask again */
    int64_t in_window;      /* the fleet's calls counting in the window, after this answer */
    int64_t in_flight;      /* the fleet's calls in flight, after this answer */
    int64_t day_used;       /* the fleet's calls of the day ending at day_end_s (quota on) */
    int64_t day_end_s;      /* that day's US-Central midnight; 0 without a quota */
    char gen[GEN_LEN];      /* Redis's data generation */
    bool gen_changed;       /* not the generation expected: nothing was taken */
} rl_answer;

/* Whether l is a Redis limiter (gw_limiter_redis_new). */
bool rl_is_redis(const gw_limiter *l);

/* Runs the acquire script for lease id `id`. expect_gen: the data
 * generation the caller last saw ("" or NULL: any). Fills *a; returns
 * a->res (GW_LIMIT_ERROR when Redis gave no usable answer; counted). A
 * generation mismatch is a->gen_changed with a->res WAIT and nothing taken. */
gw_limit_result rl_acquire(redis_limiter *rl, int64_t now_ms, uint64_t id,
                           const char *expect_gen, rl_answer *a);

/* Gives lease id back to Redis. Returns 0, or -1 when Redis did not answer
 * (the lease then expires after lease_ms). */
int rl_release_lease(redis_limiter *rl, uint64_t id);

/* One call a replica tells Redis of (rl_reconcile). */
typedef struct rl_told {
    uint64_t lease;   /* its lease id */
    bool flying;      /* in flight (else released) */
    int64_t left_ms;  /* ms it still counts: of its lease in flight, of the window once released */
} rl_told;

/* Tells Redis what it may have missed (the reconcile script): the calls in
 * told[0..n), and for the day ending at day_end_s, the fleet's count as last
 * seen and delta calls since that Redis does not count. On success fills
 * gen (Redis's data generation) and *day_count (the day's count now) and
 * returns 0; -1 when Redis did not answer (counted). */
int rl_reconcile(redis_limiter *rl, const rl_told *told, size_t n, int64_t day_end_s,
                 int64_t seen, int64_t delta, char gen[GEN_LEN], int64_t *day_count);

/* A random 64-bit id (lease ids, generation names); 0 when none is available. */
uint64_t rl_random_id(void);

/* Frees a Redis limiter. */
void rl_free(redis_limiter *rl);

#endif /* GW_STORE_REDIS_LIMITER_INT_H */
