/* gateway/store/redis.c - Redis connections: a pool, a backoff, health, scripts.
 *
 * The pool holds idle connected contexts; a thread takes one, runs its
 * command and gives it back, so no context is ever used by two threads.
 * Any I/O or protocol error frees the context, drops every idle one (they
 * talk to the same dead server) by bumping a generation, and starts a
 * backoff: 100 ms doubling to 5 s, each jittered to 50..100 % of its value.
 * During the backoff gw_redis_acquire fails at once; after it, one thread
 * (the probe) connects while the others still fail fast, and a success
 * ends the outage. Only the first failure of a generation grows the
 * backoff, so many requests failing together count as one failure.
 */
#include "gateway/store/redis.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "gateway/err.h"
#include "gateway/log.h"
#include "gateway/metrics.h"

/* Idle connections kept per manager; more are closed when given back. */
#define POOL_MAX 32
/* First and longest backoff after a failure, ms. */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
/* Error replies of scripts are logged at most once per this many ms. */
#define SCRIPT_ERR_LOG_MS 10000

/* Health as logged: not known yet, answering, not answering. */
enum { HEALTH_UNKNOWN = 0, HEALTH_UP = 1, HEALTH_DOWN = 2 };

struct gw_redis {
    _Atomic int refs;              /* references held (backends, creator) */
    gw_redis_addr addr;            /* where and how to connect (password: secret) */
    char *prefix;                  /* key prefix, owned */
    int64_t connect_timeout_ms;    /* TCP connect deadline */
    int64_t command_timeout_ms;    /* one command's deadline */
    pthread_mutex_t mu;            /* guards the fields down to rng */
    gw_redis_conn *idle[POOL_MAX]; /* idle connections of the current generation */
    size_t nidle;                  /* entries used in idle */
    uint64_t gen;                  /* bumped at each failure: older connections are dropped */
    int64_t backoff_ms;            /* current backoff; 0 when healthy */
    int64_t down_until_ms;         /* monotonic ms before which calls fail fast */
    bool probing;                  /* a thread is connecting after a backoff */
    unsigned rng;                  /* rand_r state for the jitter */
    char last_err[200];            /* last connection error text (no secret; a gw_err msg) */
    _Atomic int health;            /* HEALTH_*: what was last logged */
    _Atomic int64_t script_log_ms; /* when a script error was last logged */
};

/* ---- small helpers ---------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static void count(const char *name, const char *help)
{
    gw_counter_add(gw_metrics_counter(name, help, NULL), 1);
}

/* Records a transition of the health flag: gauge, and one log line. */
static void set_health(gw_redis *r, int h, const char *why)
{
    int old = atomic_exchange(&r->health, h);
    if (old == h)
        return;
    gw_gauge_set(gw_metrics_gauge("redis_up", "1 when Redis answers, 0 when it does not", NULL),
                 h == HEALTH_UP ? 1 : 0);
    if (h == HEALTH_UP) {
        GW_LOG(GW_LOG_INFO,
               json_pack("{s:s, s:i, s:i}", "host", r->addr.host, "port", r->addr.port, "db",
                         r->addr.db),
               old == HEALTH_DOWN ? "redis: available again" : "redis: connected");
    } else {
        GW_LOG(GW_LOG_WARN,
               json_pack("{s:s, s:i, s:i, s:s}", "host", r->addr.host, "port", r->addr.port, "db",
                         r->addr.db, "error", why ? why : ""),
               "redis: unavailable; cache bypassed and limiter on its local share until it "
               "answers again");
    }
}

static void conn_free(gw_redis_conn *c)
{
    if (c == NULL)
        return;
    if (c->ctx)
        redisFree(c->ctx);
    free(c);
}

/* Starts or grows the backoff; call with mu held. */
static void start_backoff_locked(gw_redis *r)
{
    r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_FIRST_MS : r->backoff_ms * 2;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
    int64_t half = r->backoff_ms / 2;
    int64_t jitter = half > 0 ? (int64_t)(rand_r(&r->rng) % (unsigned)(half + 1)) : 0;
    r->down_until_ms = mono_ms() + half + jitter;
}

/* Drops every idle connection and starts a new generation; call with mu held. */
static void drop_idle_locked(gw_redis *r)
{
    for (size_t i = 0; i < r->nidle; i++)
        conn_free(r->idle[i]);
    r->nidle = 0;
    r->gen++;
}

/* Runs one command on a fresh context during connect; 0 when the answer is not an error. */
static int setup_command(redisContext *c, int argc, const char **argv, gw_err *err)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    if (rep == NULL) {
        gw_err_set(err, 0, "%s", c->errstr[0] ? c->errstr : "I/O error");
        return -1;
    }
    int rc = 0;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Redis's own text (e.g. WRONGPASS ...) never echoes the password. */
        gw_err_set(err, 0, "%s: %.100s", argv[0], rep->str ? rep->str : "error");
        rc = -1;
    }
    freeReplyObject(rep);
    return rc;
}

/* Opens, authenticates and selects: a ready connection, or NULL with err. */
static redisContext *connect_one(gw_redis *r, gw_err *err)
{
    redisContext *c = redisConnectWithTimeout(r->addr.host, r->addr.port,
                                              ms_to_tv(r->connect_timeout_ms));
    if (c == NULL) {
        gw_err_set(err, 0, "out of memory");
        return NULL;
    }
    if (c->err) {
        gw_err_set(err, 0, "%s", c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, ms_to_tv(r->command_timeout_ms)) != REDIS_OK) {
        gw_err_set(err, 0, "cannot set the command timeout");
        goto fail;
    }
    if (r->addr.password[0]) {
        const char *argv[3] = {"AUTH", r->addr.username, r->addr.password};
        int rc = r->addr.username[0] ? setup_command(c, 3, argv, err)
                                     : setup_command(c, 2, (const char *[]){"AUTH", r->addr.password},
                                                     err);
        if (rc < 0)
            goto fail;
    }
    if (r->addr.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->addr.db);
        if (setup_command(c, 2, (const char *[]){"SELECT", db}, err) < 0)
            goto fail;
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* ---- the manager ------------------------------------------------------------ */

int gw_redis_parse_url(const char *url, const char *password, gw_redis_addr *out)
{
    if (url == NULL || url[0] == '\0' || out == NULL)
        return -1;
    gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.redis_url = (char *)url;
    cfg.redis_password = (char *)password;
    return gw_config_redis_addr(&cfg, out) == 0 ? 0 : -1;
}

gw_redis *gw_redis_new(const gw_redis_opts *o)
{
    if (o == NULL || o->addr.host[0] == '\0' || o->addr.port < 1 || o->addr.port > 65535 ||
        o->connect_timeout_ms < 1 || o->command_timeout_ms < 1)
        return NULL;
    gw_redis *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->prefix = strdup(o->key_prefix ? o->key_prefix : "");
    if (r->prefix == NULL || pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r->prefix);
        free(r);
        return NULL;
    }
    atomic_init(&r->refs, 1);
    atomic_init(&r->health, HEALTH_UNKNOWN);
    atomic_init(&r->script_log_ms, 0);
    r->addr = o->addr;
    r->connect_timeout_ms = o->connect_timeout_ms;
    r->command_timeout_ms = o->command_timeout_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->rng = (unsigned)(ts.tv_nsec ^ (uintptr_t)r);
    /* Exported from the start: 0 until the first command gets an answer. */
    gw_gauge *up = gw_metrics_gauge("redis_up", "1 when Redis answers, 0 when it does not", NULL);
    if (atomic_load(&r->health) != HEALTH_UP)
        gw_gauge_set(up, 0);
    return r;
}

gw_redis *gw_redis_ref(gw_redis *r)
{
    if (r)
        atomic_fetch_add(&r->refs, 1);
    return r;
}

void gw_redis_unref(gw_redis *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->nidle; i++)
        conn_free(r->idle[i]);
    pthread_mutex_destroy(&r->mu);
    explicit_bzero(r->addr.password, sizeof r->addr.password);
    free(r->prefix);
    free(r);
}

const char *gw_redis_prefix(const gw_redis *r)
{
    return r->prefix;
}

bool gw_redis_is_up(const gw_redis *r)
{
    return atomic_load(&((gw_redis *)r)->health) == HEALTH_UP;
}

void gw_redis_reset_backoff(gw_redis *r)
{
    pthread_mutex_lock(&r->mu);
    r->down_until_ms = 0;
    pthread_mutex_unlock(&r->mu);
}

gw_redis_conn *gw_redis_acquire(gw_redis *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->down_until_ms != 0 && mono_ms() < r->down_until_ms) {
        pthread_mutex_unlock(&r->mu);
        return NULL;
    }
    if (r->nidle > 0) {
        gw_redis_conn *c = r->idle[--r->nidle];
        pthread_mutex_unlock(&r->mu);
        c->reused = true;
        return c;
    }
    if (r->backoff_ms > 0) {
        /* Recovering: one probe at a time, the others keep failing fast. */
        if (r->probing) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        r->probing = true;
    }
    uint64_t gen = r->gen;
    pthread_mutex_unlock(&r->mu);

    gw_err err = {0};
    gw_redis_conn *c = calloc(1, sizeof *c);
    redisContext *ctx = c ? connect_one(r, &err) : NULL;

    pthread_mutex_lock(&r->mu);
    r->probing = false;
    if (ctx == NULL) {
        free(c);
        drop_idle_locked(r);
        start_backoff_locked(r);
        snprintf(r->last_err, sizeof r->last_err, "%s", c ? err.msg : "out of memory");
        pthread_mutex_unlock(&r->mu);
        count("redis_errors_total", "Redis I/O, protocol and connection errors");
        set_health(r, HEALTH_DOWN, err.msg);
        return NULL;
    }
    c->ctx = ctx;
    c->gen = gen;
    r->backoff_ms = 0;
    r->down_until_ms = 0;
    pthread_mutex_unlock(&r->mu);
    set_health(r, HEALTH_UP, NULL);
    return c;
}

void gw_redis_release(gw_redis *r, gw_redis_conn *c, bool failed)
{
    if (c == NULL)
        return;
    char err[128];
    snprintf(err, sizeof err, "%s", c->ctx && c->ctx->errstr[0] ? c->ctx->errstr : "protocol error");
    pthread_mutex_lock(&r->mu);
    bool current = c->gen == r->gen;
    if (failed) {
        conn_free(c);
        if (current) {
            drop_idle_locked(r);
            start_backoff_locked(r);
            snprintf(r->last_err, sizeof r->last_err, "%s", err);
        }
        pthread_mutex_unlock(&r->mu);
        count("redis_errors_total", "Redis I/O, protocol and connection errors");
        if (current)
            set_health(r, HEALTH_DOWN, err);
        return;
    }
    if (!current || r->nidle == POOL_MAX) {
        conn_free(c);
    } else {
        r->idle[r->nidle++] = c;
    }
    if (current) {
        r->backoff_ms = 0;
        r->down_until_ms = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (current)
        set_health(r, HEALTH_UP, NULL);
}

/* Whether a command failed because the server had closed this pooled
 * connection before we used it (a restart): end of file, or a reset or a
 * broken pipe at once; a timeout is not that. */
static bool stale_connection(const gw_redis_conn *c)
{
    if (!c->reused || c->ctx == NULL)
        return false;
    if (c->ctx->err == REDIS_ERR_EOF)
        return true;
    if (c->ctx->err != REDIS_ERR_IO)
        return false;
    char buf[128];
    return strcmp(c->ctx->errstr, strerror_r(ECONNRESET, buf, sizeof buf)) == 0 ||
           strcmp(c->ctx->errstr, strerror_r(EPIPE, buf, sizeof buf)) == 0;
}

/* Frees a stale pooled connection and the other idle ones (they talked to
 * the same server), without starting a backoff. */
static void discard_stale(gw_redis *r, gw_redis_conn *c)
{
    pthread_mutex_lock(&r->mu);
    conn_free(c);
    drop_idle_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* Lower-case hex SHA-1 of a script (EVALSHA's name for it). */
static int script_sha(const char *script, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(script, strlen(script), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
    return 0;
}

/* Logs an error reply of a script, at most once per SCRIPT_ERR_LOG_MS. */
static void log_script_error(gw_redis *r, const char *msg)
{
    int64_t now = mono_ms();
    int64_t last = atomic_load(&r->script_log_ms);
    if (last != 0 && now - last < SCRIPT_ERR_LOG_MS)
        return;
    if (!atomic_compare_exchange_strong(&r->script_log_ms, &last, now))
        return;
    GW_LOG(GW_LOG_WARN, json_pack("{s:s}", "error", msg ? msg : ""), "redis: script failed");
}

redisReply *gw_redis_script(gw_redis *r, const char *script, const char *const *keys,
                            size_t nkeys, const char *const *args, const size_t *arglens,
                            size_t nargs)
{
    char sha[41], nk[24];
    if (script_sha(script, sha) < 0)
        return NULL;
    snprintf(nk, sizeof nk, "%zu", nkeys);
    size_t argc = 3 + nkeys + nargs;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    redisReply *rep = NULL;
    gw_redis_conn *c = NULL;
    if (argv == NULL || lens == NULL)
        goto out;
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = nk;
    for (size_t i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < nkeys; i++) {
        argv[3 + i] = keys[i];
        lens[3 + i] = strlen(keys[i]);
    }
    for (size_t i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = args[i];
        lens[3 + nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    c = gw_redis_acquire(r);
    if (c == NULL)
        goto out;
    rep = redisCommandArgv(c->ctx, (int)argc, argv, lens);
    if (rep == NULL && stale_connection(c)) {
        discard_stale(r, c);
        if ((c = gw_redis_acquire(r)) == NULL)
            goto out;
        rep = redisCommandArgv(c->ctx, (int)argc, argv, lens);
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && rep->str && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(rep);
        argv[0] = "EVAL";
        argv[1] = script;
        lens[0] = 4;
        lens[1] = strlen(script);
        rep = redisCommandArgv(c->ctx, (int)argc, argv, lens);
    }
    gw_redis_release(r, c, rep == NULL);
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        count("redis_errors_total", "Redis I/O, protocol and connection errors");
        log_script_error(r, rep->str);
    }
out:
    free(argv);
    free(lens);
    return rep;
}
