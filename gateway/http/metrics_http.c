/* gateway/http/metrics_http.c - the /metrics-only listener (gateway.metrics_listen);
 * see metrics_http.h. One internal polling thread: scrapes are few and short.
 */
#include "gateway/http/metrics_http.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "config/config.h"

#define METRICS_CONNECTION_LIMIT 64u   /* scrapers are few */
#define METRICS_IDLE_TIMEOUT_S 30u     /* idle keep-alive connections closed after */

struct gw_metrics_http {
    gw_app *app;                  /* the gateway's shared state (not owned) */
    struct MHD_Daemon *daemon;    /* libmicrohttpd daemon, or NULL */
};

/* Queues a reply with a copy of body and returns libmicrohttpd's result. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const char *body, size_t len, const char *allow)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    gw_metrics_http *m = cls;
    static const char text_plain[] = "text/plain; charset=utf-8";
    /* Answer on the first call; a body, if any, is not read (the
     * connection is closed after the reply). */
    if (strcmp(url, "/metrics") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, text_plain, "only /metrics here\n", 19, NULL);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text_plain, "GET only\n", 9, "GET, HEAD");
    size_t len = 0;
    char *text = gw_ops_metrics_text(m->app, &len);
    if (text == NULL)
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text_plain, "out of memory\n", 14, NULL);
    enum MHD_Result rc = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                               text, len, NULL);
    free(text);
    return rc;
}

gw_metrics_http *gw_metrics_http_start(gw_app *app, gw_err *err)
{
    const char *listen = app->cfg->metrics_listen != NULL ? app->cfg->metrics_listen : "";
    char host[256], portstr[8];
    uint16_t port;
    struct addrinfo hints = {0}, *res = NULL;

    if (gw_config_split_listen(listen, host, sizeof host, &port) < 0) {
        gw_err_set(err, 0, "gateway.metrics_listen: expected host:port");
        return NULL;
    }
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0 || res == NULL) {
        gw_err_set(err, 0, "gateway.metrics_listen: cannot resolve the host (%s)",
                   gai_strerror(gai));
        return NULL;
    }
    gw_metrics_http *m = calloc(1, sizeof *m);
    if (m == NULL) {
        freeaddrinfo(res);
        gw_err_set(err, 0, "out of memory");
        return NULL;
    }
    m->app = app;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)res->ai_addr;
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    }
    m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_access, m,
                                 MHD_OPTION_CONNECTION_LIMIT, METRICS_CONNECTION_LIMIT,
                                 MHD_OPTION_CONNECTION_TIMEOUT, METRICS_IDLE_TIMEOUT_S,
                                 MHD_OPTION_SOCK_ADDR, res->ai_addr,
                                 MHD_OPTION_END);
    freeaddrinfo(res);
    if (m->daemon == NULL) {
        gw_err_set(err, 0, "cannot listen on gateway.metrics_listen %s (address in use or "
                           "not allowed?)", listen);
        free(m);
        return NULL;
    }
    return m;
}

unsigned gw_metrics_http_port(gw_metrics_http *m)
{
    const union MHD_DaemonInfo *i =
        m != NULL ? MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    return i != NULL ? i->port : 0;
}

void gw_metrics_http_stop(gw_metrics_http *m)
{
    if (m == NULL)
        return;
    if (m->daemon != NULL)
        MHD_stop_daemon(m->daemon);
    free(m);
}
