/* tests/common/spawn.c - see spawn.h. */
#include "tests/common/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How often the waits look again, ms. */
#define POLL_MS 10

/* Monotonic ms. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* In a new child: SIGKILL when the thread that forked it ends. parent is
 * the test's pid, read before the fork. Async-signal-safe. */
static void die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)  /* it ended before prctl */
        _exit(127);
}

/* The test's environment with extra (NAME=value, NULL-terminated, may be
 * NULL) added over it: a malloc'd NULL-terminated array of borrowed
 * strings (caller frees the array only), or NULL when out of memory. Built
 * before the fork: the child of a threaded test may not allocate. */
static char **merged_env(const char *const *extra)
{
    size_t n = 0, k = 0, m = 0;
    while (environ[n] != NULL)
        n++;
    while (extra != NULL && extra[k] != NULL)
        k++;
    char **env = calloc(n + k + 1, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t name = strcspn(environ[i], "=") + 1;  /* "NAME=" */
        bool replaced = false;
        for (size_t j = 0; j < k && !replaced; j++)
            replaced = strncmp(extra[j], environ[i], name) == 0;
        if (!replaced)
            env[m++] = environ[i];
    }
    for (size_t j = 0; j < k; j++)
        env[m++] = (char *)extra[j];
    return env;
}

/* The child of spawn_start: wires stdin to /dev/null, stdout and stderr as
 * asked, leaves no other descriptor open across exec, and execs. On
 * failure writes errno to status_fd (close-on-exec: the parent reads end
 * of file when exec worked). Never returns. */
static void exec_child(const char *const *argv, char **env, const spawn_opts *opts,
                       int devnull, int out_pipe, int status_fd)
{
    int out = opts->out == SPAWN_PIPE ? out_pipe : opts->out == SPAWN_NULL ? devnull : 1;
    int err = opts->err == SPAWN_NULL ? devnull : 2;
    if (dup2(devnull, 0) >= 0 && dup2(out, 1) >= 0 && dup2(err, 2) >= 0) {
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
            for (int fd = 3; fd < 1024; fd++)
                fcntl(fd, F_SETFD, FD_CLOEXEC);
        execve(argv[0], (char *const *)argv, env);
    }
    int e = errno;
    ssize_t w = write(status_fd, &e, sizeof(e));
    (void)w;
    _exit(127);
}

int spawn_start(spawn_proc *p, const char *const *argv, const spawn_opts *opts)
{
    static const spawn_opts defaults;
    int result = -1, devnull = -1, out[2] = {-1, -1}, status[2] = {-1, -1};
    char **env = NULL;
    p->pid = 0;
    p->out_fd = -1;
    if (opts == NULL)
        opts = &defaults;
    if (argv == NULL || argv[0] == NULL || opts->err == SPAWN_PIPE)
        return -1;
    env = merged_env(opts->env);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (env == NULL || devnull < 0 || pipe2(status, O_CLOEXEC) != 0 ||
        (opts->out == SPAWN_PIPE && pipe2(out, O_CLOEXEC) != 0))
        goto out;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        goto out;
    if (pid == 0) {
        die_with_parent(parent);
        exec_child(argv, env, opts, devnull, out[1], status[1]);
    }
    close(status[1]);
    status[1] = -1;
    int e = 0;
    ssize_t k;
    while ((k = read(status[0], &e, sizeof(e))) < 0 && errno == EINTR)
        ;
    if (k != 0) {  /* exec failed: the child exits by itself */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        goto out;
    }
    p->pid = pid;
    p->out_fd = out[0];
    out[0] = -1;
    result = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (status[i] >= 0)
            close(status[i]);
    }
    if (devnull >= 0)
        close(devnull);
    free(env);
    return result;
}

int spawn_fork(spawn_proc *p, int (*fn)(void *arg), void *arg)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    p->pid = 0;
    p->out_fd = -1;
    if (pid < 0)
        return -1;
    if (pid == 0) {
        die_with_parent(parent);
        _exit(fn(arg) & 0xff);
    }
    p->pid = pid;
    return 0;
}

ssize_t spawn_read_line(spawn_proc *p, char *buf, size_t size, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    size_t got = 0;
    if (size == 0)
        return -1;
    buf[0] = '\0';
    while (p->pid > 0 && p->out_fd >= 0 && got < size - 1) {
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        int64_t left = deadline - mono_ms();
        int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        char c;
        ssize_t k = r > 0 ? read(p->out_fd, &c, 1) : r;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (c == '\n')
            return (ssize_t)got;
        buf[got++] = c;
        buf[got] = '\0';
    }
    return -1;
}

/* Reaps the child once it has ended (flags WNOHANG: without waiting).
 * Returns true with *status set (its exit status, 0 to 255, or -1: killed
 * by a signal, or none of ours) and p cleared; false while it runs. */
static bool reaped(spawn_proc *p, int flags, int *status)
{
    int st = 0;
    pid_t w = -1;
    *status = -1;
    if (p->pid <= 0)
        return true;
    while ((w = waitpid(p->pid, &st, flags)) < 0 && errno == EINTR)
        ;
    if (w == 0)
        return false;
    if (w > 0 && WIFEXITED(st))
        *status = WEXITSTATUS(st);
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->pid = 0;
    p->out_fd = -1;
    return true;
}

/* Whether a TCP connection to 127.0.0.1:port is accepted now. */
static bool accepts(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

int spawn_wait_port(spawn_proc *p, int port, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int status;
    while (!reaped(p, WNOHANG, &status)) {
        if (accepts(port))
            return 0;
        if (mono_ms() >= deadline)
            return -1;
        sleep_ms(POLL_MS);
    }
    return -1;
}

int spawn_wait(spawn_proc *p, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int status;
    while (!reaped(p, WNOHANG, &status)) {
        if (mono_ms() >= deadline) {
            kill(p->pid, SIGKILL);
            reaped(p, 0, &status);
            return -1;
        }
        sleep_ms(POLL_MS);
    }
    return status;
}

int spawn_stop(spawn_proc *p, int timeout_ms)
{
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        kill(p->pid, SIGCONT);
    }
    return spawn_wait(p, timeout_ms);
}
