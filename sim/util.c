/* sim/util.c - helpers declared in util.h that are not inline. */
#include "sim/util.h"

#include <errno.h>
#include <stdatomic.h>

/* Set once the process is stopping: sleeps and holds end at once. */
static atomic_bool stopping;

void sim_stop_waiting(void) { atomic_store(&stopping, true); }

bool sim_stopping(void) { return atomic_load(&stopping); }

void sim_sleep_ms(int64_t ms)
{
    /* in slices, so that SIGTERM ends a long injected latency at once */
    while (ms > 0 && !sim_stopping()) {
        int64_t step = ms < 50 ? ms : 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        ms -= step;
    }
}
