/* gateway/log_batch.c - batched writing of log lines (see log_batch.h).
 *
 * Each thread that logs gets a tbuf on its first line: a mutex and a
 * buffer of GW_LOGB_CAP bytes, linked into one list. The owner appends
 * under the tbuf's mutex (the flusher is the only other taker, every few
 * milliseconds, so it is almost never contended). The flusher swaps the
 * buffer with its spare under that mutex and writes the spare outside it,
 * so a slow stderr blocks only the flusher. A thread's tbuf is marked dead
 * by a thread-specific destructor when the thread ends; the flusher writes
 * what it holds and frees it.
 */
#include "gateway/log_batch.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GW_LOGB_CAP (256u * 1024u) /* bytes one thread may have waiting */
#define GW_LOGB_SOON (16u * 1024u) /* a buffer this full wakes the flusher at once */

/* One thread's waiting lines. */
typedef struct tbuf {
    pthread_mutex_t mu;  /* guards buf and len */
    char *buf;           /* whole lines waiting (GW_LOGB_CAP bytes) */
    size_t len;          /* bytes waiting */
    atomic_bool dead;    /* its thread has ended: write what is left, then free */
    struct tbuf *next;   /* next in B.head's list (guarded by B.list_mu) */
} tbuf;

/* The batcher's state. */
static struct {
    pthread_mutex_t list_mu;  /* guards head */
    tbuf *head;               /* every thread's buffer */
    pthread_mutex_t wake_mu;  /* guards wake_flag, stop */
    pthread_cond_t wake;      /* signalled for an early flush or a stop */
    bool wake_flag;           /* a flush is wanted now */
    bool stop;                /* gw_logb_stop called */
    atomic_bool running;      /* appends go to buffers */
    pthread_t thread;         /* the flusher */
    char *spare;              /* the flusher's swap buffer (GW_LOGB_CAP bytes) */
    atomic_uint_least64_t dropped; /* lines dropped on a full buffer */
    pthread_key_t key;        /* thread-specific: the thread's tbuf, for the destructor */
    bool key_made;            /* key created */
} B = {.list_mu = PTHREAD_MUTEX_INITIALIZER, .wake_mu = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER};

/* The calling thread's buffer, or NULL before its first line. */
static __thread tbuf *mine;

/* Fatal signals whose delivery flushes the buffers first. */
static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
#define NFATAL (sizeof fatal_signals / sizeof fatal_signals[0])
static struct sigaction old_actions[NFATAL]; /* restored before re-raising */

/* Writes n bytes of p to stderr, retrying short writes; gives up on error. */
static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Thread-specific destructor: the thread is ending. */
static void thread_ended(void *arg)
{
    tbuf *t = arg;
    mine = NULL;
    atomic_store(&t->dead, true);
}

/* Asks the flusher for a flush now. */
static void wake_flusher(void)
{
    pthread_mutex_lock(&B.wake_mu);
    B.wake_flag = true;
    pthread_cond_signal(&B.wake);
    pthread_mutex_unlock(&B.wake_mu);
}

/* The calling thread's buffer, made on first use; NULL on no memory. */
static tbuf *my_tbuf(void)
{
    if (mine != NULL)
        return mine;
    tbuf *t = calloc(1, sizeof *t);
    char *buf = malloc(GW_LOGB_CAP);
    if (t == NULL || buf == NULL || pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        free(buf);
        return NULL;
    }
    t->buf = buf;
    pthread_mutex_lock(&B.list_mu);
    t->next = B.head;
    B.head = t;
    pthread_mutex_unlock(&B.list_mu);
    pthread_setspecific(B.key, t);
    mine = t;
    return t;
}

bool gw_logb_append(const char *line, size_t n)
{
    if (!atomic_load_explicit(&B.running, memory_order_acquire))
        return false;
    tbuf *t = my_tbuf();
    if (t == NULL)
        return false;
    if (n > GW_LOGB_CAP) {
        atomic_fetch_add(&B.dropped, 1);
        return true;
    }
    pthread_mutex_lock(&t->mu);
    bool fits = t->len + n <= GW_LOGB_CAP;
    if (fits) {
        memcpy(t->buf + t->len, line, n);
        t->len += n;
    }
    size_t len = t->len;
    pthread_mutex_unlock(&t->mu);
    if (!fits)
        atomic_fetch_add(&B.dropped, 1);
    else if (len >= GW_LOGB_SOON && len - n < GW_LOGB_SOON)
        wake_flusher();
    return true;
}

uint64_t gw_logb_dropped(void) { return atomic_load(&B.dropped); }

/* Writes every buffer's lines; frees the buffers of ended threads. Runs on
 * the flusher (or on the stopping thread once the flusher is gone). */
static void flush_all(void)
{
    pthread_mutex_lock(&B.list_mu);
    tbuf **link = &B.head;
    while (*link != NULL) {
        tbuf *t = *link;
        bool dead = atomic_load(&t->dead);
        pthread_mutex_lock(&t->mu);
        char *full = t->buf;
        size_t n = t->len;
        t->buf = B.spare;
        t->len = 0;
        pthread_mutex_unlock(&t->mu);
        B.spare = full;
        write_all(full, n);
        if (dead) {
            *link = t->next;
            pthread_mutex_destroy(&t->mu);
            free(t->buf);
            free(t);
        } else {
            link = &t->next;
        }
    }
    pthread_mutex_unlock(&B.list_mu);
}

/* The flusher thread: a flush every GW_LOGB_FLUSH_MS, or sooner when woken. */
static void *flusher_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&B.wake_mu);
        if (!B.wake_flag && !B.stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += GW_LOGB_FLUSH_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&B.wake, &B.wake_mu, &ts);
        }
        B.wake_flag = false;
        bool stopping = B.stop;
        pthread_mutex_unlock(&B.wake_mu);
        flush_all();
        if (stopping)
            return NULL;
    }
}

/* Fatal-signal handler: writes what every buffer holds (without locks: the
 * process is going down, a torn line is better than none), then lets the
 * previous handler (the default, or a sanitizer's) take the signal. */
static void on_fatal(int sig)
{
    for (tbuf *t = B.head; t != NULL; t = t->next)
        if (t->buf != NULL && t->len <= GW_LOGB_CAP)
            write_all(t->buf, t->len);
    for (size_t i = 0; i < NFATAL; i++)
        if (fatal_signals[i] == sig)
            sigaction(sig, &old_actions[i], NULL);
    raise(sig);
}

int gw_logb_start(void)
{
    if (atomic_load(&B.running))
        return 0;
    if (!B.key_made) {
        if (pthread_key_create(&B.key, thread_ended) != 0)
            return -1;
        B.key_made = true;
    }
    if (B.spare == NULL && (B.spare = malloc(GW_LOGB_CAP)) == NULL)
        return -1;
    B.stop = false;
    B.wake_flag = false;
    atomic_store_explicit(&B.running, true, memory_order_release);
    if (pthread_create(&B.thread, NULL, flusher_main, NULL) != 0) {
        atomic_store(&B.running, false);
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &sa, &old_actions[i]);
    return 0;
}

void gw_logb_stop(void)
{
    if (!atomic_load(&B.running))
        return;
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &old_actions[i], NULL);
    atomic_store_explicit(&B.running, false, memory_order_release);
    pthread_mutex_lock(&B.wake_mu);
    B.stop = true;
    pthread_cond_signal(&B.wake);
    pthread_mutex_unlock(&B.wake_mu);
    pthread_join(B.thread, NULL);
    /* a line appended between the flusher's last pass and running = false */
    flush_all();
}
