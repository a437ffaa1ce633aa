/* sim/limits.h - Marketo's call limits as marketo-sim enforces them: a
 * rolling window of accepted calls (20023), calls in flight (20024) and a
 * daily quota that resets at midnight US Central time (20015).
 *
 * Thread-safe; each function takes the module's own mutex briefly. Only
 * ACCEPTED calls enter the window and the quota; refused ones do not.
 */
#ifndef SIM_LIMITS_H
#define SIM_LIMITS_H

#include <stdint.h>

/* Limit settings; 0 turns a limit off. */
typedef struct sim_limit_cfg {
    int calls_per_window;  /* calls per rolling window (Marketo: 100) */
    int window_seconds;    /* window length (Marketo: 20) */
    int max_concurrent;    /* accepted calls in flight (Marketo: 10) */
    long daily_quota;      /* accepted calls per US Central day (Marketo: 10000) */
} sim_limit_cfg;

/* Sets up the module with cfg. Returns 0 or -1. */
int sim_limits_init(const sim_limit_cfg *cfg);
/* Frees the module's memory. */
void sim_limits_cleanup(void);
/* Replaces the settings (counters kept). Returns 0 or -1 (bad values). */
int sim_limits_set(const sim_limit_cfg *cfg);
/* Current settings. */
void sim_limits_get(sim_limit_cfg *out);
/* Forgets the window, the quota count and the in-flight count of accepted
 * calls that already ended (for /_sim/reset). */
void sim_limits_reset(void);

/* Decides on a call that arrived at now_ms: returns 0 and takes a
 * concurrency slot (release with sim_limits_release()) when accepted, or the
 * fault code 20024, 20023 or 20015 (checked in that order) when refused. */
int sim_limits_acquire(int64_t now_ms);
/* Gives back the slot of an accepted call once its answer is written. */
void sim_limits_release(void);

/* Start of the US Central day holding t (seconds since the epoch), as
 * seconds since the epoch: CST (UTC-6), or CDT (UTC-5) from the second
 * Sunday of March to the first Sunday of November. Exposed for tests. */
int64_t sim_central_midnight(int64_t t);

#endif /* SIM_LIMITS_H */
