/* gateway/http/daemon.c - the daemon's life: gw_server_start (settings,
 * listen address, connection guard, libmicrohttpd with server.c's request
 * callbacks), the drain (gw_server_quiesce, gw_server_active) and
 * gw_server_stop. Names server.c's callbacks, calls none of them; calls
 * access.c to free the metric series.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "gateway/http/server_internal.h"
#include "gateway/log.h"

/* libmicrohttpd's per-connection memory pool: it holds the request line
 * (the whole query string, whose arguments the gateway splits in memory of
 * its own: gw_srv_on_uri_log), the headers, and libmicrohttpd's bookkeeping.
 * libmicrohttpd 0.9.75 zeroes the whole pool when a keep-alive connection
 * starts its next request, so every connection that has served one request
 * keeps its whole pool resident: RSS grows by this much per open
 * connection. 32 KiB holds a lookup of gateway.max_keys (1000) typical
 * e-mails (~25 bytes each, comma-separated or as repeated email=: ~26 or
 * ~32 KB of query string) with the headers; a request line or header block
 * larger than the pool gets libmicrohttpd's own 414 (URI too long) or 431,
 * at once (an HTML body: libmicrohttpd 0.9.75 has no hook for it). With 5,000 idle keep-alive
 * connections: ~175 MB (128 KiB: 641 MB; 8 KiB: ~55 MB but only ~250
 * e-mails a lookup). Not a setting (config/ has no key for it). */
#define GW_CONN_MEMORY_LIMIT (32u << 10)

/* libmicrohttpd's connection notifications: the guard follows every
 * connection from its accept (header deadline, room at the limit) to its
 * close, which libmicrohttpd announces before it closes the socket. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    gw_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci != NULL ? gw_guard_open(s->guard, ci->connect_fd) : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gw_guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* libmicrohttpd's error log, into ours. */
__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    if (GW_LOG_WARN < gw_log_min_level)
        return;
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    gw_log_emit(GW_LOG_WARN, json_pack("{s:s}", "component", "libmicrohttpd"), "%s", buf);
}

/* Fills ss from host and port (numeric addresses, or a name resolved once).
 * Returns the address length, or 0 with err filled. */
static socklen_t listen_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                             gw_err *err)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        return sizeof *in4;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        return sizeof *in6;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof *ss) {
        gw_err_set(err, 0, "gateway.listen: cannot resolve the host (%s)", gai_strerror(rc));
        if (res != NULL)
            freeaddrinfo(res);
        return 0;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    socklen_t len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        in4->sin_port = htons(port);
    else
        in6->sin6_port = htons(port);
    return len;
}

/* Copies what requests read from the settings into s: body caps, API-key
 * digests, CORS origins, and the server's gauges. Returns 0, or -1 with
 * err filled. */
static int server_settings(gw_server *s, gw_app *app, gw_err *err)
{
    const gw_config *cfg = app->cfg;
    s->app = app;
    s->max_body = cfg->max_body_bytes > 0 ? (size_t)cfg->max_body_bytes : (8u << 20);
    s->body_budget = cfg->max_body_total_bytes > 0 ? (size_t)cfg->max_body_total_bytes : (32u << 20);
    if (s->body_budget < s->max_body)
        s->body_budget = s->max_body;
    s->auth_off = cfg->auth_disabled && app->napi_keys == 0;
    s->nkeys = app->napi_keys;
    if (s->nkeys > 0) {
        s->key_digests = malloc(s->nkeys * SHA256_DIGEST_LENGTH);
        if (s->key_digests == NULL)
            return GW_ERR_FAIL(err, 0, "out of memory");
        for (size_t i = 0; i < s->nkeys; i++)
            SHA256((const unsigned char *)app->api_keys[i], strlen(app->api_keys[i]),
                   s->key_digests + i * SHA256_DIGEST_LENGTH);
    }
    if (gw_config_split_list(cfg->cors_allowed_origins, &s->origins, &s->norigins) < 0)
        return GW_ERR_FAIL(err, 0, "out of memory");
    for (size_t i = 0; i < s->norigins; i++)
        if (strcmp(s->origins[i], "*") == 0)
            s->cors_any = true;
    s->in_flight = gw_metrics_gauge("http_requests_in_flight", "HTTP requests not yet completed", NULL);
    s->body_gauge = gw_metrics_gauge("http_request_body_bytes",
                                     "Request body bytes held (bounded by gateway.max_body_total_bytes)",
                                     NULL);
    return 0;
}

/* Starts libmicrohttpd on ss, with its threads, connection limits and
 * timeouts from the settings, and the connection guard ahead of it.
 * Returns 0, or -1 with err filled. */
static int start_daemon(gw_server *s, const struct sockaddr_storage *ss, gw_err *err)
{
    const gw_config *cfg = s->app->cfg;
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = cfg->threads > 0 ? cfg->threads : (ncpu > 0 ? ncpu : 1);
    if (threads > 256)
        threads = 256;
    unsigned int climit = cfg->connection_limit > 0 ? (unsigned int)cfg->connection_limit : 1024u;
    if (climit < (unsigned int)threads)
        climit = (unsigned int)threads;
    unsigned int idle = cfg->idle_timeout_s > 0 ? (unsigned int)cfg->idle_timeout_s : 0u;
    unsigned int per_client =
        cfg->max_connections_per_client > 0 ? (unsigned int)cfg->max_connections_per_client : 0u;
    gw_guard_opts gopts = {
        .header_timeout_ms = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : 10000,
        .body_timeout_ms = cfg->body_timeout_ms > 0 ? cfg->body_timeout_ms : 60000,
        .connection_limit = climit,
    };
    s->guard = gw_guard_start(&gopts);
    if (s->guard == NULL)
        return GW_ERR_FAIL(err, 0, "out of memory or threads for the connection guard");

    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, gw_srv_on_access, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(threads > 1 ? threads : 0),
                                 MHD_OPTION_CONNECTION_LIMIT, climit,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_client,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                 MHD_OPTION_CONNECTION_TIMEOUT, idle,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_CONN_MEMORY_LIMIT,
                                 MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
                                 MHD_OPTION_NOTIFY_COMPLETED, gw_srv_on_completed, s,
                                 MHD_OPTION_UNESCAPE_CALLBACK, gw_srv_on_unescape, s,
                                 MHD_OPTION_URI_LOG_CALLBACK, gw_srv_on_uri_log, s,
                                 MHD_OPTION_END);
    if (s->daemon == NULL)
        return GW_ERR_FAIL(err, 0,
                           "cannot listen on gateway.listen %s (address in use or not allowed?)",
                           cfg->listen != NULL ? cfg->listen : "");
    return 0;
}

gw_server *gw_server_start(gw_app *app, gw_err *err)
{
    const gw_config *cfg = app->cfg;
    gw_server *s = calloc(1, sizeof *s);
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;

    if (s == NULL) {
        gw_err_set(err, 0, "out of memory");
        return NULL;
    }
    if (server_settings(s, app, err) < 0)
        goto fail;
    if (gw_config_split_listen(cfg->listen != NULL ? cfg->listen : "127.0.0.1:8080", host,
                               sizeof host, &port) < 0) {
        gw_err_set(err, 0, "gateway.listen: expected host:port");
        goto fail;
    }
    if (listen_addr(host, port, &ss, err) == 0 || start_daemon(s, &ss, err) < 0)
        goto fail;
    return s;
fail:
    gw_server_stop(s);
    return NULL;
}

unsigned gw_server_port(gw_server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i != NULL ? i->port : 0;
}

/* Starts the drain without MHD_quiesce_daemon: in libmicrohttpd 0.9.75 it
 * races its own epoll worker threads over removing the listen FD from
 * their epoll sets and then aborts the process ("Failed to remove listen
 * FD from epoll set", an open libmicrohttpd defect; it hit a SIGTERM under
 * load here). The listening socket stays open while draining (a pod keeps
 * getting connections until its endpoint removal has spread): every
 * request that starts from now on is answered at once (gw_srv_screen: 503
 * shutting-down with Retry-After on the lead routes, /readyz 503, /healthz
 * 200, all with Connection: close) and is not counted in
 * gw_server_active, so the drain waits only for what was in progress.
 * gw_server_stop closes the listener last. */
void gw_server_quiesce(gw_server *s)
{
    if (s != NULL)
        atomic_store(&s->quiesced, true);
}

size_t gw_server_active(gw_server *s) { return atomic_load(&s->active); }

/* Ends a drain. First, while late requests keep coming (one started in
 * the last 100 ms; at most 1 s), they are still answered: a client whose
 * request just finished often sends its next one at once, and a connection
 * still in the listen backlog when the listener shuts is reset, not
 * refused. Then the listening socket stops taking connections (refused by
 * the kernel from here on; shutdown(2) rather than close, so
 * libmicrohttpd's epoll sets stay consistent until MHD_stop_daemon), and
 * the requests still in progress get up to 200 ms to go out. */
static void close_listener(gw_server *s)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    if (i == NULL || i->listen_fd == MHD_INVALID_SOCKET)
        return;
    int64_t until = gw_now_ms() + 1000;
    while (gw_now_ms() < until && gw_now_ms() - atomic_load(&s->late_last_ms) < 100)
        usleep(10 * 1000);
    shutdown(i->listen_fd, SHUT_RDWR);
    for (int k = 0; k < 20 && atomic_load(&s->late_active) + atomic_load(&s->active) > 0; k++)
        usleep(10 * 1000);
}

void gw_server_stop(gw_server *s)
{
    if (s == NULL)
        return;
    if (s->daemon != NULL && atomic_load(&s->quiesced))
        close_listener(s);
    if (s->daemon != NULL)
        MHD_stop_daemon(s->daemon);
    gw_guard_stop(s->guard); /* every connection is closed now */
    if (s->key_digests != NULL)
        OPENSSL_cleanse(s->key_digests, s->nkeys * SHA256_DIGEST_LENGTH);
    free(s->key_digests);
    for (size_t i = 0; i < s->norigins; i++)
        free(s->origins[i]);
    free(s->origins);
    gw_srv_access_free(s);
    free(s);
}
