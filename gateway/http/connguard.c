/* gateway/http/connguard.c - deadlines for slow clients, and room for new
 * connections (see connguard.h for what is guaranteed).
 *
 * A connection's state and deadline are one atomic word. The connection's
 * libmicrohttpd thread moves it IDLE/HEADERS -> BODY or BUSY (headers in),
 * BODY -> BUSY (body in), BUSY -> IDLE (request done); the guard's thread
 * moves IDLE -> HEADERS when a kept-alive connection receives the first
 * bytes of its next request (the kernel's byte count, TCP_INFO), and
 * HEADERS/BODY -> CLOSED past the deadline or at the limit. CLOSED is
 * final: whoever loses the compare-and-swap to it learns the connection is
 * being closed. The guard touches a socket only under its mutex, and
 * libmicrohttpd tells the guard a connection is closing
 * (gw_guard_close, under the same mutex) before it closes the socket, so the
 * guard never writes to a descriptor that was closed or reused.
 */
#include "gateway/http/connguard.h"

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's has not) */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/rand.h>

#include "gateway/metrics.h"

#define GUARD_ID_MAX 128      /* longest request id kept for a 408 (the server keeps 128) */
#define TICK_MIN_MS 20        /* deadlines are checked at least this far apart... */
#define TICK_MAX_MS 250       /* ...and at most this far: a tenth of the shorter deadline between */
#define RESERVE_MAX 64        /* connection slots kept free for new connections, at most */
#define PROBLEM_URN "urn:marketo-gateway:problem:" /* reply.c's problem type prefix */

/* Where a connection is, as the guard sees it (the low bits of its word). */
enum {
    ST_IDLE = 0,     /* between requests on a kept-alive connection: the idle timeout's */
    ST_HEADERS = 1,  /* a request's header block is arriving: header deadline */
    ST_BODY = 2,     /* its body is arriving: body deadline */
    ST_BUSY = 3,     /* handled, suspended or being answered: not the guard's */
    ST_CLOSED = 4,   /* closed by the guard; final */
};
#define ST_BITS 3
#define ST_MASK ((uint64_t)7)

struct gw_guard_conn {
    gw_guard_conn *prev;          /* previous in the guard's list (under its mutex) */
    gw_guard_conn *next;          /* next in the guard's list (under its mutex) */
    const gw_guard *g;            /* the owner (its settings) */
    int fd;                       /* libmicrohttpd's socket; valid until gw_guard_close */
    _Atomic uint64_t word;        /* state | deadline (monotonic ms) << ST_BITS */
    _Atomic int64_t since_ms;     /* when the state began: who is oldest at the limit */
    _Atomic uint64_t mark;        /* bytes received when the last request ended (0: none yet) */
    atomic_uint closed_status;    /* 408 or 503 once the guard closed it, else 0 */
    char id[GUARD_ID_MAX + 1];    /* request id of the body being read, for its 408 */
};

struct gw_guard {
    gw_guard_opts o;              /* settings */
    size_t evict_at;              /* open connections from which a new one evicts a slow one */
    int64_t tick_ms;              /* how often deadlines are checked */
    pthread_mutex_t mu;           /* guards conns, nconns, stopping and every socket write */
    pthread_cond_t cv;            /* wakes the thread to stop (CLOCK_MONOTONIC) */
    bool stopping;                /* gw_guard_stop was called */
    pthread_t thread;             /* the watcher */
    gw_guard_conn *conns;         /* open connections, newest first */
    size_t nconns;                /* entries in conns */
    gw_counter *closed_headers;   /* http_connections_closed_total{reason="header_timeout"} */
    gw_counter *closed_body;      /* http_connections_closed_total{reason="body_timeout"} */
    gw_counter *evicted;          /* http_connections_closed_total{reason="evicted"} */
};

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t pack(unsigned st, int64_t deadline)
{
    return ((uint64_t)(deadline > 0 ? deadline : 0) << ST_BITS) | st;
}

static unsigned st_of(uint64_t w) { return (unsigned)(w & ST_MASK); }

static int64_t deadline_of(uint64_t w) { return (int64_t)(w >> ST_BITS); }

/* The payload bytes the kernel has received on fd so far (TCP_INFO's
 * tcpi_bytes_received). False when it cannot tell (not TCP, or a kernel
 * before 4.1): a kept-alive connection then never starts a header deadline
 * of its own and is left to the idle timeout. */
static bool bytes_received(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return false;
    if ((size_t)len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return false;
    *out = ti.tcpi_bytes_received;
    return true;
}

/* Moves c to st with deadline from any state but CLOSED. Returns false
 * when the guard has closed it. */
static bool move(gw_guard_conn *c, unsigned st, int64_t deadline)
{
    uint64_t w = atomic_load(&c->word);
    do {
        if (st_of(w) == ST_CLOSED)
            return false;
    } while (!atomic_compare_exchange_weak(&c->word, &w, pack(st, deadline)));
    atomic_store_explicit(&c->since_ms, now_ms(), memory_order_relaxed);
    return true;
}

/* 32 hex digits for a reply that belongs to no request yet. */
static void random_id(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    static atomic_uint_fast64_t seq;
    unsigned char b[16];
    if (RAND_bytes(b, (int)sizeof b) != 1) {
        uint64_t v = (uint64_t)now_ms() ^ ((uint64_t)atomic_fetch_add(&seq, 1) << 40);
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)(v >> (8 * (i % 8)));
    }
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
}

/* Writes the guard's problem reply on c's socket, without waiting: 408
 * when a deadline passed in state prev, 503 when c was evicted at the
 * limit. Under g->mu. */
static void send_problem(const gw_guard *g, gw_guard_conn *c, unsigned prev, unsigned status)
{
    char id[GUARD_ID_MAX + 1], detail[200], body[600], msg[1200];
    const char *title, *slug, *extra = "";
    if (prev == ST_BODY && c->id[0] != '\0')
        snprintf(id, sizeof id, "%s", c->id);
    else
        random_id(id);
    if (status == 408) {
        title = "Request Timeout";
        slug = "request-timeout";
        if (prev == ST_BODY)
            snprintf(detail, sizeof detail,
                     "the request body was not complete within %lld ms of its headers "
                     "(gateway.body_timeout_ms)",
                     (long long)g->o.body_timeout_ms);
        else
            snprintf(detail, sizeof detail,
                     "the request headers were not complete within %lld ms "
                     "(gateway.header_timeout_ms)",
                     (long long)g->o.header_timeout_ms);
    } else {
        title = "Service Unavailable";
        slug = "connection-limit";
        snprintf(detail, sizeof detail,
                 "the connection limit was reached and this was the oldest connection still "
                 "sending its request; retry");
        extra = "Retry-After: 1\r\n";
    }
    int blen = snprintf(body, sizeof body,
                        "{\"type\":\"" PROBLEM_URN "%s\",\"title\":\"%s\",\"status\":%u,"
                        "\"detail\":\"%s\",\"request_id\":\"%s\"}",
                        slug, title, status, detail, id);
    if (blen < 0 || (size_t)blen >= sizeof body)
        return;
    int mlen = snprintf(msg, sizeof msg,
                        "HTTP/1.1 %u %s\r\nContent-Type: application/problem+json\r\n"
                        "X-Request-ID: %s\r\n%sConnection: close\r\nContent-Length: %d\r\n\r\n%s",
                        status, title, id, extra, blen, body);
    if (mlen < 0 || (size_t)mlen >= sizeof msg)
        return;
    (void)send(c->fd, msg, (size_t)mlen, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Closes c, which the caller has just moved from prev to CLOSED: the reply
 * when the client has sent something of a request, then the socket shut
 * down both ways (libmicrohttpd reads the end of the stream and closes the
 * connection). Under g->mu. */
static void shut(gw_guard *g, gw_guard_conn *c, unsigned prev, unsigned status)
{
    uint64_t got = 0;
    bool known = bytes_received(c->fd, &got);
    bool spoke = prev == ST_BODY || (known ? got > atomic_load(&c->mark) : prev == ST_HEADERS);
    atomic_store(&c->closed_status, status);
    if (spoke)
        send_problem(g, c, prev, status);
    shutdown(c->fd, SHUT_RDWR);
    if (status == 503)
        gw_counter_add(g->evicted, 1);
    else
        gw_counter_add(prev == ST_BODY ? g->closed_body : g->closed_headers, 1);
}

/* One pass over the open connections (under g->mu): a kept-alive one that
 * has received bytes since its last request starts its header deadline;
 * one past its deadline is closed. */
static void scan(gw_guard *g, int64_t now)
{
    for (gw_guard_conn *c = g->conns; c != NULL; c = c->next) {
        uint64_t w = atomic_load(&c->word);
        unsigned st = st_of(w);
        if (st == ST_IDLE) {
            uint64_t got;
            if (bytes_received(c->fd, &got) && got > atomic_load(&c->mark) &&
                atomic_compare_exchange_strong(&c->word, &w,
                                               pack(ST_HEADERS, now + g->o.header_timeout_ms)))
                atomic_store_explicit(&c->since_ms, now, memory_order_relaxed);
        } else if ((st == ST_HEADERS || st == ST_BODY) && now >= deadline_of(w)) {
            if (atomic_compare_exchange_strong(&c->word, &w, pack(ST_CLOSED, 0)))
                shut(g, c, st, 408);
        }
    }
}

/* Makes room for a new connection (under g->mu): closes the oldest
 * connection idle between requests or still sending its headers; when
 * there is none, the oldest still sending its body. */
static void evict_one(gw_guard *g)
{
    for (int pass = 0; pass < 2; pass++) {
        gw_guard_conn *victim = NULL;
        uint64_t vw = 0;
        int64_t vsince = INT64_MAX;
        for (gw_guard_conn *c = g->conns; c != NULL; c = c->next) {
            uint64_t w = atomic_load(&c->word);
            unsigned st = st_of(w);
            bool candidate = pass == 0 ? (st == ST_IDLE || st == ST_HEADERS) : st == ST_BODY;
            int64_t since = atomic_load_explicit(&c->since_ms, memory_order_relaxed);
            if (candidate && since < vsince) {
                victim = c;
                vw = w;
                vsince = since;
            }
        }
        if (victim != NULL && atomic_compare_exchange_strong(&victim->word, &vw, pack(ST_CLOSED, 0))) {
            shut(g, victim, st_of(vw), 503);
            return;
        }
    }
}

/* The guard's thread: a scan every tick until gw_guard_stop. */
static void *watch(void *arg)
{
    gw_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + g->tick_ms * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (!g->stopping)
            scan(g, now_ms());
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

gw_guard *gw_guard_start(const gw_guard_opts *o)
{
    gw_guard *g = calloc(1, sizeof *g);
    pthread_condattr_t ca;
    if (g == NULL)
        return NULL;
    g->o = *o;
    size_t reserve = o->connection_limit / 16;
    if (reserve > RESERVE_MAX)
        reserve = RESERVE_MAX;
    if (reserve == 0 && o->connection_limit > 1)
        reserve = 1;
    g->evict_at = o->connection_limit - reserve;
    int64_t shorter = o->header_timeout_ms < o->body_timeout_ms ? o->header_timeout_ms
                                                                : o->body_timeout_ms;
    g->tick_ms = shorter / 10;
    if (g->tick_ms < TICK_MIN_MS)
        g->tick_ms = TICK_MIN_MS;
    if (g->tick_ms > TICK_MAX_MS)
        g->tick_ms = TICK_MAX_MS;
    const char *name = "http_connections_closed_total";
    const char *help = "Connections closed by the slow-client guard (deadlines, room at the limit)";
    g->closed_headers = gw_metrics_counter(name, help, "reason=\"header_timeout\"");
    g->closed_body = gw_metrics_counter(name, help, "reason=\"body_timeout\"");
    g->evicted = gw_metrics_counter(name, help, "reason=\"evicted\"");
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        free(g);
        return NULL;
    }
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&g->cv, &ca) != 0) {
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g->thread, NULL, watch, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void gw_guard_stop(gw_guard *g)
{
    if (g == NULL)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    while (g->conns != NULL) {
        gw_guard_conn *next = g->conns->next;
        free(g->conns);
        g->conns = next;
    }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

gw_guard_conn *gw_guard_open(gw_guard *g, int fd)
{
    if (g == NULL)
        return NULL;
    gw_guard_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    int64_t now = now_ms();
    c->g = g;
    c->fd = fd;
    atomic_init(&c->word, pack(ST_HEADERS, now + g->o.header_timeout_ms));
    atomic_init(&c->since_ms, now);
    atomic_init(&c->mark, 0);
    atomic_init(&c->closed_status, 0);
    pthread_mutex_lock(&g->mu);
    if (g->nconns + 1 > g->evict_at)
        evict_one(g);
    c->next = g->conns;
    if (g->conns != NULL)
        g->conns->prev = c;
    g->conns = c;
    g->nconns++;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void gw_guard_close(gw_guard *g, gw_guard_conn *c)
{
    if (g == NULL || c == NULL)
        return;
    pthread_mutex_lock(&g->mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        g->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    g->nconns--;
    pthread_mutex_unlock(&g->mu);
    free(c);
}

bool gw_guard_headers_done(gw_guard_conn *c, bool body, const char *request_id)
{
    if (c == NULL)
        return true;
    if (st_of(atomic_load(&c->word)) == ST_CLOSED)
        return false;
    if (body)
        snprintf(c->id, sizeof c->id, "%s", request_id != NULL ? request_id : "");
    return move(c, body ? ST_BODY : ST_BUSY, body ? now_ms() + c->g->o.body_timeout_ms : 0);
}

bool gw_guard_body_done(gw_guard_conn *c)
{
    return c == NULL || move(c, ST_BUSY, 0);
}

void gw_guard_request_done(gw_guard_conn *c)
{
    uint64_t got = 0;
    if (c == NULL)
        return;
    if (bytes_received(c->fd, &got))
        atomic_store(&c->mark, got);
    (void)move(c, ST_IDLE, 0);
}

unsigned gw_guard_closed_status(const gw_guard_conn *c)
{
    return c != NULL ? atomic_load(&c->closed_status) : 0;
}
