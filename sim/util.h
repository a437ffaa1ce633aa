/* sim/util.h - small helpers shared by marketo-sim's modules: clocks and a
 * seeded pseudo-random generator (splitmix64), so that generated data and
 * fault injection are reproducible from a seed. */
#ifndef SIM_UTIL_H
#define SIM_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Wall clock in milliseconds since the epoch. */
static inline int64_t sim_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Next value of a splitmix64 generator whose state is *s. */
static inline uint64_t sim_rand_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) from the generator *s. */
static inline double sim_rand_unit(uint64_t *s)
{
    return (double)(sim_rand_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Sleeps ms milliseconds, resuming after signals; no-op for ms <= 0.
 * Returns early once sim_stop_waiting() was called. */
void sim_sleep_ms(int64_t ms);

/* The process is stopping: every sim_sleep_ms (injected latency) and
 * fault-rule hold ends at once, so SIGTERM never waits for them. */
void sim_stop_waiting(void);

/* Whether sim_stop_waiting() was called. */
bool sim_stopping(void);

#endif /* SIM_UTIL_H */
