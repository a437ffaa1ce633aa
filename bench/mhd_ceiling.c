/* bench/mhd_ceiling.c - the libmicrohttpd ceiling of the cache-hit benchmark.
 *
 * A minimal libmicrohttpd server that answers every request with the same
 * bytes the gateway sends for a cache hit (body from a file, the same
 * Content-Type and X-Cache headers, a fresh 32-hex-digit X-Request-ID per
 * request), started with the gateway's daemon flags and options
 * (gateway/http/server.c: MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
 * a thread pool of --threads, the same per-connection memory limit,
 * connection limit and idle timeout; --memory-limit overrides the per-connection
 * pool size, to show what it costs). It does no routing, no auth, no
 * logging, no JSON: what is left is the framework's own cost, the ceiling
 * the gateway is measured against.
 *
 * Usage: mhd_ceiling --body FILE [--listen 127.0.0.1:0] [--threads N]
 *                    [--header "Name: value"]... [--connection-limit N]
 *                    [--idle-timeout S] [--memory-limit BYTES]
 * Prints "mhd_ceiling listening on HOST:PORT" and runs until SIGTERM/SIGINT.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#define MC_MAX_HEADERS 16               /* --header entries */
#define MC_MAX_BODY (16u << 20)         /* largest --body file */
#define MC_CONN_MEMORY_LIMIT (128u << 10) /* same as gateway/http/server.c GW_CONN_MEMORY_LIMIT */

/* One fixed response header. */
typedef struct mc_header {
    char name[128];   /* header name */
    char value[1024]; /* header value */
} mc_header;

/* Everything the handler reads; filled once before the daemon starts. */
typedef struct mc_state {
    char *body;                       /* response body bytes */
    size_t body_len;                  /* bytes in body */
    mc_header headers[MC_MAX_HEADERS];/* fixed headers added to every reply */
    size_t nheaders;                  /* entries in headers */
    atomic_ullong counter;            /* source of per-request ids */
} mc_state;

/* Marker stored in *req_cls after the first call of a request. */
static int mc_seen;

/* Parses a decimal in [lo, hi]; returns 0 or -1. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Reads a whole file into a malloc'd buffer (at most MC_MAX_BODY bytes).
 * Returns 0 or -1. */
static int read_file(const char *path, char **out, size_t *len)
{
    int rc = -1;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        goto out;
    buf = malloc(MC_MAX_BODY);
    if (buf == NULL)
        goto out;
    size_t n = fread(buf, 1, MC_MAX_BODY, f);
    if (ferror(f) || n == MC_MAX_BODY)
        goto out;
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* The request handler: on the second call of a request (headers complete)
 * queues the fixed reply. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    mc_state *st = cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &mc_seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* bodies are read and ignored */
        return MHD_YES;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(st->body_len, st->body, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    unsigned long long n = atomic_fetch_add(&st->counter, 1);
    char id[33];
    snprintf(id, sizeof id, "%016llx%016llx", n * 0x9e3779b97f4a7c15ULL, n);
    MHD_add_response_header(resp, "X-Request-ID", id);
    for (size_t i = 0; i < st->nheaders; i++)
        MHD_add_response_header(resp, st->headers[i].name, st->headers[i].value);
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Splits "Name: value" into h; returns 0 or -1. */
static int parse_header(const char *s, mc_header *h)
{
    const char *colon = strchr(s, ':');
    if (colon == NULL || colon == s)
        return -1;
    size_t nlen = (size_t)(colon - s);
    const char *v = colon + 1;
    while (*v == ' ')
        v++;
    if (nlen >= sizeof h->name || strlen(v) >= sizeof h->value)
        return -1;
    memcpy(h->name, s, nlen);
    h->name[nlen] = '\0';
    snprintf(h->value, sizeof h->value, "%s", v);
    return 0;
}

/* Parses "a.b.c.d:port" into sin; returns 0 or -1. */
static int parse_listen(const char *s, struct sockaddr_in *sin)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    long port;
    if (colon == NULL || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    if (parse_long(colon + 1, 0, 65535, &port) < 0)
        return -1;
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static void usage(void)
{
    fputs("usage: mhd_ceiling --body FILE [--listen 127.0.0.1:0] [--threads N]\n"
          "                   [--header \"Name: value\"]... [--connection-limit N]\n"
          "                   [--idle-timeout S] [--memory-limit BYTES]\n",
          stderr);
}

int main(int argc, char **argv)
{
    static mc_state st;
    const char *listen = "127.0.0.1:0";
    const char *body_path = NULL;
    long threads = 2, climit = 1024, idle = 30, memlimit = MC_CONN_MEMORY_LIMIT;
    struct sockaddr_in sin;
    struct MHD_Daemon *d = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--body") == 0) {
            body_path = v;
        } else if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_long(v, 1, 256, &threads) < 0)
                goto bad;
        } else if (strcmp(a, "--connection-limit") == 0) {
            if (parse_long(v, 1, 1000000, &climit) < 0)
                goto bad;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            if (parse_long(v, 0, 3600, &idle) < 0)
                goto bad;
        } else if (strcmp(a, "--memory-limit") == 0) {
            if (parse_long(v, 1024, 64L << 20, &memlimit) < 0)
                goto bad;
        } else if (strcmp(a, "--header") == 0) {
            if (st.nheaders == MC_MAX_HEADERS || parse_header(v, &st.headers[st.nheaders]) < 0)
                goto bad;
            st.nheaders++;
        } else {
            goto bad;
        }
    }
    if (body_path == NULL || parse_listen(listen, &sin) < 0)
        goto bad;
    if (read_file(body_path, &st.body, &st.body_len) < 0) {
        fprintf(stderr, "mhd_ceiling: cannot read --body file\n");
        return 1;
    }

    /* Block the stop signals in every thread; main waits for them below. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The gateway's flags and options (gateway/http/server.c gw_server_start). */
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, &st,
                         MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(threads > 1 ? threads : 0),
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned int)climit,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)idle,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)memlimit,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
                         MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "mhd_ceiling: cannot listen on %s\n", listen);
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sin.sin_addr, host, sizeof host);
    printf("mhd_ceiling listening on %s:%u\n", host, info != NULL ? (unsigned)info->port : 0u);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    rc = 0;
out:
    if (d != NULL)
        MHD_stop_daemon(d);
    free(st.body);
    return rc;
bad:
    usage();
    free(st.body);
    return 2;
}
