/* gateway/log_batch.h - batched writing of log lines (used by log.c;
 * started and stopped by main.c).
 *
 * While the batcher runs, a log line is copied into a buffer of the thread
 * that logs it, and one flusher thread writes each thread's lines to stderr
 * in one write(2) per buffer, at least every GW_LOGB_FLUSH_MS milliseconds
 * and at once when a buffer fills up. A request thread never makes a
 * syscall to log and never waits for stderr: when its buffer is full (a
 * stderr that does not drain), the line is dropped and counted. Lines stay
 * whole and in order per thread; lines of different threads may be
 * reordered by up to one flush interval (each carries its timestamp).
 */
#ifndef GW_LOG_BATCH_H
#define GW_LOG_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest a line waits in a buffer, milliseconds. */
#define GW_LOGB_FLUSH_MS 5

/* Starts the flusher thread and installs the fatal-signal flush (SIGSEGV,
 * SIGBUS, SIGILL, SIGFPE, SIGABRT: the buffers are written, then the
 * previous handler runs). Returns 0, or -1 when the thread cannot start
 * (lines are then written directly, as before start). */
int gw_logb_start(void);

/* Writes everything waiting and stops the flusher; lines are written
 * directly again afterwards. Safe to call when not started. */
void gw_logb_stop(void);

/* Takes one whole line (newline included) into the calling thread's
 * buffer. Returns false when the batcher is not running (the caller then
 * writes the line itself); true when the line was taken or dropped. */
bool gw_logb_append(const char *line, size_t n);

/* Lines dropped because their thread's buffer was full, since start-up. */
uint64_t gw_logb_dropped(void);

#endif /* GW_LOG_BATCH_H */
