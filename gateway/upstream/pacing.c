/* gateway/upstream/pacing.c - the token bucket (see pacing.h). */
#include "gateway/upstream/pacing.h"

void gw_pacer_init(gw_pacer *p, int64_t calls_per_window, int64_t window_ms,
                   int64_t max_concurrent, int64_t now_ms)
{
    *p = (gw_pacer){0};
    p->on = calls_per_window > 0;
    if (!p->on)
        return;
    if (window_ms <= 0)
        window_ms = 20000;
    int64_t burst = calls_per_window;
    if (max_concurrent > 0 && max_concurrent < burst)
        burst = max_concurrent;
    p->rate = (double)calls_per_window / (double)window_ms;
    p->burst = (double)(burst < 1 ? 1 : burst);
    p->tokens = p->burst;
    p->last_ms = now_ms;
}

int64_t gw_pacer_wait_ms(gw_pacer *p, int64_t now_ms)
{
    if (!p->on)
        return 0;
    if (now_ms > p->last_ms) {
        p->tokens += (double)(now_ms - p->last_ms) * p->rate;
        if (p->tokens > p->burst)
            p->tokens = p->burst;
        p->last_ms = now_ms;
    }
    double missing = 1.0 - p->tokens;
    if (missing <= 1e-9)
        return 0;
    int64_t ms = (int64_t)(missing / p->rate);
    if ((double)ms * p->rate < missing)
        ms++;
    return ms < 1 ? 1 : ms;
}

void gw_pacer_take(gw_pacer *p)
{
    if (p->on)
        p->tokens -= 1.0;
}
