/* gateway/main.c - marketo-gateway: settings, the shared state, the daemon,
 * and an orderly shutdown.
 *
 * Start-up: settings (config/cli.h), libxml2, the log level, then gw_app
 * (API keys, cursor key, limiter and cache from gw_backends_create: in
 * process, or Redis when redis.url is set; upstream engine), then the HTTP
 * daemon. SIGTERM, SIGINT and SIGHUP are blocked in every thread before the
 * first one is created and taken synchronously with sigwait() here, so no
 * signal handler runs anywhere. SIGHUP (what process managers send to
 * "reload") is logged and ignored: settings are read at start only and the
 * logs go to stderr, so there is nothing to reopen; it never stops the
 * gateway.
 *
 * Shutdown on the first SIGTERM/SIGINT: readyz turns 503 at once (draining),
 * the listening socket closes, requests in progress get up to
 * gateway.drain_timeout_ms to finish (a second signal cuts the wait short),
 * then the upstream engine ends what is left (SHUTDOWN/TIMEOUT answers) and
 * syncs waiting for the cache get their answer, the daemon stops and
 * everything is freed. Exit 0; non-zero only when start-up
 * fails.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "config/cli.h"
#include "config/config.h"
#include "gateway/app.h"
#include "gateway/err.h"
#include "gateway/log.h"
#include "gateway/log_batch.h"
#include "gateway/metrics.h"
#include "gateway/http/metrics_http.h"
#include "gateway/store/backends.h"
#include "gateway/http/server.h"
#include "soap/soap.h"

#define SETTLE_MS 1000  /* at most this much of the drain budget is kept for the engine's last replies */
#define MMAP_THRESHOLD (128 * 1024) /* glibc's default, made fixed: see pin_malloc_thresholds */

/* Makes every allocation of MMAP_THRESHOLD bytes or more (request bodies,
 * SOAP responses, big JSON replies) a mapping of its own, unmapped when it
 * is freed. glibc starts with this threshold but raises it, up to 32 MiB,
 * to the size of each such block freed, and raises the trim threshold
 * with it: after the first 8 MiB request body was freed, later ones came
 * from the heap arenas, which give memory back only from their top, so a
 * burst of large bodies left hundreds of MB resident after every
 * connection had closed (150 bodies of 8 MiB: 392 MB kept). Setting the
 * threshold turns the dynamic adjustment off. Its result is not checked:
 * sanitizer builds replace glibc's allocator and refuse it, harmlessly. */
static void pin_malloc_thresholds(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
}

/* Frees what main built into app (copes with a half-built one). */
static void app_free(gw_app *app)
{
    if (app->upstream != NULL)
        gw_upstream_free(app->upstream);
    if (app->cache != NULL)
        app->cache->ops->destroy(app->cache);
    if (app->limiter != NULL)
        app->limiter->ops->destroy(app->limiter);
    gw_keylimit_free(app->keylimit);
    app->keylimit = NULL;
    for (size_t i = 0; i < app->napi_keys; i++) {
        OPENSSL_cleanse(app->api_keys[i], strlen(app->api_keys[i]));
        free(app->api_keys[i]);
    }
    free(app->api_keys);
    OPENSSL_cleanse(&app->cursor_key, sizeof app->cursor_key);
    app->upstream = NULL;
    app->cache = NULL;
    app->limiter = NULL;
    app->api_keys = NULL;
    app->napi_keys = 0;
}

/* Builds the shared state from cfg. Returns 0, or -1 with err filled. */
static int app_build(gw_app *app, const gw_config *cfg, gw_err *err)
{
    app->cfg = cfg;
    app->upstream_configured = cfg->soap_endpoint != NULL && cfg->soap_endpoint[0] != '\0';
    atomic_store(&app->draining, false);

    if (gw_config_split_list(cfg->api_keys, &app->api_keys, &app->napi_keys) < 0) {
        gw_err_set(err, 0, "out of memory reading auth.api_keys");
        return -1;
    }
    if (app->napi_keys == 0 && !cfg->auth_disabled) {
        gw_err_set(err, 0, "auth.api_keys is empty: set keys, or auth.disabled = true");
        return -1;
    }
    if (cfg->auth_key_calls_per_minute > 0 && app->napi_keys > 0) {
        app->keylimit = gw_keylimit_new(app->napi_keys, cfg->auth_key_calls_per_minute);
        if (app->keylimit == NULL) {
            gw_err_set(err, 0, "out of memory for auth.key_calls_per_minute");
            return -1;
        }
    }
    if (cfg->cursor_secret == NULL || cfg->cursor_secret[0] == '\0')
        GW_LOG(GW_LOG_WARN, NULL,
               "cursor.secret is empty: cursors will not survive a restart or work across replicas");
    if (gw_cursor_key_init(&app->cursor_key, cfg->cursor_secret) < 0) {
        gw_err_set(err, 0, "cursor key: no randomness available");
        return -1;
    }
    app->qlimits.max_keys = cfg->max_keys > 0 ? (size_t)cfg->max_keys : 1000;
    app->qlimits.max_page_size = (int)cfg->max_page_size;
    app->qlimits.default_page_size = (int)cfg->default_page_size;

    /* In-process cache and limiter, or (redis.url set) the Redis cache and
     * the Redis limiter with an in-process share as its fallback. */
    if (gw_backends_create(cfg, &app->cache, &app->limiter, err) < 0)
        return -1;
    if (cfg->redis_url != NULL && cfg->redis_url[0] != '\0')
        GW_LOG(GW_LOG_INFO, json_pack("{s:s}", "backend", "redis"),
               "cache and rate limiter shared through Redis");
    if (app->upstream_configured) {
        app->upstream = gw_upstream_new(cfg, app->limiter, err);
        if (app->upstream == NULL)
            return -1;
        app->call_limits = gw_upstream_limits(app->upstream);
        if (gw_upstream_start(app->upstream) < 0) {
            gw_err_set(err, 0, "upstream engine: cannot start its thread");
            return -1;
        }
    }
    return 0;
}

/* Milliseconds left until deadline (monotonic), at least 0. */
static int64_t ms_left(int64_t deadline)
{
    int64_t d = deadline - gw_now_ms();
    return d > 0 ? d : 0;
}

/* SIGHUP: nothing to reload; say so and go on. */
static void log_sighup(void)
{
    GW_LOG(GW_LOG_INFO, json_pack("{s:i}", "signal", SIGHUP),
           "SIGHUP ignored: settings are read at start only (restart to change them)");
}

/* Waits until the server has no request in progress or deadline passes;
 * returns early (false) when SIGTERM or SIGINT arrives again (SIGHUP is
 * logged and ignored). */
static bool wait_idle(gw_server *srv, int64_t deadline, const sigset_t *set)
{
    while (gw_server_active(srv) > 0 && ms_left(deadline) > 0) {
        int64_t step = ms_left(deadline);
        if (step > 50)
            step = 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGHUP) {
            log_sighup();
            continue;
        }
        if (sig > 0) {
            GW_LOG(GW_LOG_WARN, json_pack("{s:i}", "signal", sig), "second signal: not waiting any longer");
            return false;
        }
    }
    return true;
}

/* The host part to print for host:port (IPv6 literals in brackets). */
static void format_listen(const gw_config *cfg, unsigned port, char *out, size_t outlen)
{
    char host[256];
    uint16_t p;
    if (gw_config_split_listen(cfg->listen, host, sizeof host, &p) < 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (strchr(host, ':') != NULL)
        snprintf(out, outlen, "[%s]:%u", host, port);
    else
        snprintf(out, outlen, "%s:%u", host, port);
}

/* Starts the HTTP server (and /metrics on a port of its own when
 * gateway.metrics_listen is set), then prints the "listening" lines a
 * starter waits for. Returns 0, or -1 with err filled. */
static int start_listening(gw_app *app, const gw_config *cfg, gw_server **srv,
                           gw_metrics_http **mhttp, gw_err *err)
{
    char where[300];
    *srv = gw_server_start(app, err);
    if (*srv == NULL)
        return -1;
    /* the metrics listener and its line come before the API port's
     * "listening" line */
    if (cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0') {
        *mhttp = gw_metrics_http_start(app, err);
        if (*mhttp == NULL)
            return -1;
        gw_config mcfg = {.listen = cfg->metrics_listen};
        format_listen(&mcfg, gw_metrics_http_port(*mhttp), where, sizeof where);
        GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:s}", "port", (int)gw_metrics_http_port(*mhttp),
                                      "listen", where), "metrics listening");
        printf("marketo-gateway metrics on %s\n", where);
    }
    unsigned port = gw_server_port(*srv);
    format_listen(cfg, port, where, sizeof where);
    GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:s}", "port", (int)port, "listen", where), "listening");
    printf("marketo-gateway listening on %s\n", where);
    fflush(stdout);
    return 0;
}

/* SIGTERM/SIGINT (sig) arrived: drains within gateway.drain_timeout_ms.
 * /readyz turns 503 at once, new requests are answered at once, requests
 * in flight finish on their own until the last `settle` ms of the budget;
 * then the engine ends what is left (SHUTDOWN: 503 answers) and those
 * replies get the rest of the budget to go out. */
static void drain(gw_app *app, const gw_config *cfg, gw_server *srv, const sigset_t *set, int sig)
{
    /* At once: /readyz sees the signal as pending until sigwait took it. */
    atomic_store(&app->draining, true);
    int64_t deadline = gw_now_ms() + (cfg->drain_timeout_ms > 0 ? cfg->drain_timeout_ms : 0);
    GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:I, s:I}", "signal", sig,
                                  "in_progress", (json_int_t)gw_server_active(srv),
                                  "drain_timeout_ms", (json_int_t)cfg->drain_timeout_ms),
           "draining");
    gw_server_quiesce(srv);
    int64_t settle = cfg->drain_timeout_ms / 5 < SETTLE_MS ? cfg->drain_timeout_ms / 5 : SETTLE_MS;
    bool patient = wait_idle(srv, deadline - settle, set);
    if (app->upstream != NULL)
        gw_upstream_shutdown(app->upstream, gw_now_ms());
    /* Syncs still waiting for Redis to take their invalidation answer now
     * (X-Cache-Invalidation: pending): none may outlive the server. */
    if (app->cache != NULL && app->cache->ops->stop_waits != NULL)
        app->cache->ops->stop_waits(app->cache);
    if (patient)
        wait_idle(srv, deadline, set);
    size_t left = gw_server_active(srv);
    GW_LOG(left > 0 ? GW_LOG_WARN : GW_LOG_INFO,
           json_pack("{s:I}", "abandoned", (json_int_t)left), "stopped");
}

int main(int argc, char **argv)
{
    gw_config cfg;
    gw_app app;
    gw_server *srv = NULL;
    gw_metrics_http *mhttp = NULL;
    gw_err err = {0};
    int exit_code = 0;
    sigset_t set;

    pin_malloc_thresholds();
    memset(&cfg, 0, sizeof cfg);
    memset(&app, 0, sizeof app);
    if (!gw_cli_load(argc, argv, &cfg, &exit_code))
        return exit_code;

    /* Before any thread exists: every thread inherits this mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        fprintf(stderr, "marketo-gateway: cannot block signals\n");
        gw_config_free(&cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    int level = GW_LOG_INFO;
    if (cfg.log_level != NULL && gw_log_level_parse(cfg.log_level, &level) < 0)
        level = GW_LOG_INFO;
    gw_log_min_level = level;

    soap_init();
    if (app_build(&app, &cfg, &err) < 0) {
        GW_LOG(GW_LOG_ERROR, NULL, "start-up failed: %s", err.msg);
        exit_code = 1;
        goto out;
    }
    if (app.napi_keys == 0)
        GW_LOG(GW_LOG_WARN, NULL, "authentication is disabled (auth.disabled = true): "
                                  "every client can call every route");
    if (!app.upstream_configured)
        GW_LOG(GW_LOG_WARN, NULL, "marketo.soap_endpoint is not set: /readyz answers 503 and "
                                  "the /leads routes 503");

    gw_gauge_set(gw_metrics_gauge("process_start_time_seconds",
                                  "Start time of the process since the Unix epoch in seconds", NULL),
                 (int64_t)time(NULL));

    if (start_listening(&app, &cfg, &srv, &mhttp, &err) < 0) {
        GW_LOG(GW_LOG_ERROR, NULL, "start-up failed: %s", err.msg);
        exit_code = 1;
        goto out;
    }
    /* From here on lines are batched per thread (the start-up lines above
     * are already on stderr when the listening line is read). */
    if (gw_logb_start() != 0)
        GW_LOG(GW_LOG_WARN, NULL, "log batching could not start: every line is written on its own");

    int sig = 0;
    while (sigwait(&set, &sig) != 0 || sig == SIGHUP)
        if (sig == SIGHUP) {
            log_sighup();
            sig = 0;
        }
    drain(&app, &cfg, srv, &set, sig);
    exit_code = 0;

out:
    gw_metrics_http_stop(mhttp);
    gw_server_stop(srv);
    app_free(&app);
    soap_cleanup();
    gw_metrics_reset();
    gw_config_free(&cfg);
    gw_logb_stop(); /* last: every thread that logs has ended */
    return exit_code;
}
