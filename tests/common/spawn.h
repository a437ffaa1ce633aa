/* tests/common/spawn.h - child processes for the C tests: the servers they
 * talk to (marketo-sim, redis-server), a program run for its exit status,
 * or a function run in a forked copy of the test.
 *
 * A child is started with spawn_start (a program) or spawn_fork (a
 * function) and always ends with spawn_wait or spawn_stop, which reap it:
 * those two are the only way to collect its exit status, and no zombie is
 * left. The descriptors the helper opens are close-on-exec, and a program
 * started by spawn_start inherits no descriptor but 0, 1 and 2 from the
 * test. A child gets SIGKILL when the thread that started it ends (the test
 * crashed): start children from the test's main thread.
 *
 * Timeouts are in milliseconds from the call (monotonic clock). Not thread
 * safe: one spawn_proc is used by one thread at a time.
 */
#ifndef TESTS_COMMON_SPAWN_H
#define TESTS_COMMON_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

/* Where a child's stdout or stderr goes. */
typedef enum spawn_stream {
    SPAWN_INHERIT = 0,   /* the test's own (the default) */
    SPAWN_NULL,          /* /dev/null */
    SPAWN_PIPE,          /* a pipe read with spawn_read_line (stdout only) */
} spawn_stream;

/* How to start a program. All zero (or a NULL pointer) is: the test's
 * environment, stdout and stderr. stdin is /dev/null in every case. */
typedef struct spawn_opts {
    const char *const *env;  /* "NAME=value" entries added to the test's
                                environment (replacing the same NAME),
                                NULL-terminated; NULL: none. Copied. */
    spawn_stream out;        /* the child's stdout */
    spawn_stream err;        /* the child's stderr (SPAWN_PIPE is refused) */
} spawn_opts;

/* One child. The caller owns the struct (it may live on the stack; all
 * zero is "no child"); the helper owns out_fd and closes it on reaping. */
typedef struct spawn_proc {
    pid_t pid;    /* the child; 0 when none runs (never started, or reaped) */
    int out_fd;   /* read end of its stdout pipe (SPAWN_PIPE), else -1; used
                     only while pid > 0 */
} spawn_proc;

/* Starts argv[0] (a path: no PATH search) with argv (NULL-terminated, not
 * kept after the call). Fills *p. Returns 0 once the program is executing,
 * or -1 (bad arguments, no memory, pipe or fork failed, exec failed: then
 * nothing runs and p->pid is 0). */
int spawn_start(spawn_proc *p, const char *const *argv, const spawn_opts *opts);

/* Runs fn(arg) in a forked copy of the test (same memory, same descriptors,
 * same stdout and stderr); the child exits with fn's return value (0 to
 * 255) without running atexit handlers. Returns 0, or -1 when fork failed. */
int spawn_fork(spawn_proc *p, int (*fn)(void *arg), void *arg);

/* Reads the next line of a SPAWN_PIPE stdout into buf (size > 1 bytes),
 * without its '\n', NUL-terminated. Returns its length, or -1 when no whole
 * line came within timeout_ms (end of file, timeout, line longer than
 * size - 1, no pipe); buf then holds what came. The pipe stays open until
 * the child is reaped: one that writes much more than it is read blocks. */
ssize_t spawn_read_line(spawn_proc *p, char *buf, size_t size, int timeout_ms);

/* Waits until a TCP connection to 127.0.0.1:port is accepted. Returns 0, or
 * -1 after timeout_ms or as soon as the child has exited (it is then reaped,
 * its status lost). Accepting says only that something listens on the port:
 * callers that picked the port themselves should also ask the server. */
int spawn_wait_port(spawn_proc *p, int port, int timeout_ms);

/* Waits up to timeout_ms for the child to exit by itself, then sends
 * SIGKILL (timeout_ms 0: at once, unless it has already exited); reaps it
 * and closes out_fd. Returns its exit status (0 to 255) when it exited
 * within the time, or -1 (killed by a signal, ours or another, such as a
 * sanitizer's abort; no child). A sanitizer report without abort shows as a
 * non-zero status: callers assert 0. */
int spawn_wait(spawn_proc *p, int timeout_ms);

/* Asks the child to end (SIGTERM, and SIGCONT in case it is stopped), then
 * spawn_wait(p, timeout_ms): same return values, so a clean shutdown is 0. */
int spawn_stop(spawn_proc *p, int timeout_ms);

#endif /* TESTS_COMMON_SPAWN_H */
