/* sim/main.c - marketo-sim: command line, HTTP server (libmicrohttpd, one
 * thread per connection so that injected latency never holds up other
 * calls) and routing: POST /soap/mktows/... to the SOAP endpoint, /_sim/...
 * to the admin endpoints.
 *
 * After binding it prints "marketo-sim listening on HOST:PORT" (the real
 * port, also for --listen 127.0.0.1:0) and exits 0 on SIGTERM or SIGINT.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "sim/admin.h"
#include "sim/limits.h"
#include "sim/soapsrv.h"
#include "sim/stats.h"
#include "sim/store.h"
#include "sim/util.h"
#include "sim/faults.h"
#include "soap/soap.h"

/* Largest admin request body. */
#define ADMIN_MAX_BODY (1u << 20)
/* Most simultaneous connections. */
#define CONNECTION_LIMIT 2000

/* Kinds of request by path. */
enum { REQ_SOAP = 0, REQ_ADMIN, REQ_OTHER };

/* Per-request state, created on the first handler call. */
typedef struct req {
    int kind;            /* REQ_SOAP, REQ_ADMIN or REQ_OTHER */
    char *body;          /* upload so far (malloc'd) */
    size_t len;          /* bytes in body */
    size_t cap;          /* allocated bytes */
    size_t max;          /* largest body kept */
    bool too_large;      /* body exceeded max (rest discarded) */
    int64_t arrival_ms;  /* when the request headers arrived */
    bool in_flight;      /* counted in the stats' in_flight */
} req;

/* Appends data to r's body, up to r->max. */
static void req_append(req *r, const char *data, size_t n)
{
    if (r->too_large || n > r->max - r->len) {
        r->too_large = true;
        return;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap == 0 ? 65536 : r->cap;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (nb == NULL) {
            r->too_large = true;
            return;
        }
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
}

/* Ends r's in-flight period (once). */
static void req_leave(req *r)
{
    if (r->in_flight) {
        r->in_flight = false;
        sim_stats_leave();
    }
}

/* Queues a response with body (ownership passes to MHD) and frees nothing
 * else. Returns MHD's verdict. */
static enum MHD_Result send_body(struct MHD_Connection *c, int status, const char *ctype,
                                 char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body != NULL ? body : (char *)"",
                                        body != NULL ? MHD_RESPMEM_MUST_FREE
                                                     : MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends a short plain-text answer. */
static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *text)
{
    char *b = strdup(text);
    return send_body(c, status, "text/plain; charset=UTF-8", b, b != NULL ? strlen(b) : 0);
}

/* libmicrohttpd's request handler. */
static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version,
                               const char *upload_data, size_t *upload_data_size,
                               void **req_cls)
{
    req *r = *req_cls;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        r->kind = strncmp(url, "/soap/mktows/", 13) == 0 ? REQ_SOAP
                : strncmp(url, "/_sim/", 6) == 0 ? REQ_ADMIN : REQ_OTHER;
        r->max = r->kind == REQ_SOAP ? SIM_MAX_BODY : ADMIN_MAX_BODY;
        r->arrival_ms = sim_now_ms();
        if (r->kind == REQ_SOAP && strcmp(method, "POST") == 0) {
            r->in_flight = true;
            sim_stats_enter();
        }
        *req_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        req_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->kind == REQ_OTHER)
        return send_text(c, 404, "not found\n");
    if (r->kind == REQ_ADMIN) {
        int status = 500;
        char *out = NULL;
        if (r->too_large) {
            return send_text(c, 413, "request body too large\n");
        }
        sim_admin_handle(method, url, r->body, r->len, &status, &out);
        return send_body(c, status, "application/json", out, out != NULL ? strlen(out) : 0);
    }
    if (strcmp(method, "POST") != 0)
        return send_text(c, 405, "SOAP endpoint: POST only\n");
    sim_soap_reply rep;
    sim_soap_handle(r->body, r->len, r->too_large, r->arrival_ms, &rep);
    req_leave(r);
    if (rep.drop) {
        free(rep.body);
        return MHD_NO;
    }
    return send_body(c, rep.status, rep.content_type, rep.body, rep.len);
}

/* libmicrohttpd's completion callback: frees the request state. */
static void completed(void *cls, struct MHD_Connection *c, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    req *r = *req_cls;
    if (r == NULL)
        return;
    req_leave(r);
    free(r->body);
    free(r);
    *req_cls = NULL;
}

/* Command-line settings. */
typedef struct opts {
    const char *listen;        /* --listen HOST:PORT */
    const char *user_id;       /* --user-id */
    const char *key;           /* --encryption-key */
    long long leads;           /* --leads */
    unsigned long long seed;   /* --seed */
    long long latency_ms;      /* --latency-ms */
    sim_limit_cfg limits;      /* --calls-per-window etc. */
} opts;

/* Prints the usage to f. */
static void usage(FILE *f)
{
    fputs("usage: marketo-sim --listen HOST:PORT --user-id ID --encryption-key KEY\n"
          "                   [--leads N] [--seed S] [--latency-ms MS]\n"
          "                   [--calls-per-window N] [--window-seconds S]\n"
          "                   [--max-concurrent N] [--daily-quota N]\n"
          "\n"
          "An offline Marketo SOAP API (mktows 2_3) for tests and demos.\n"
          "  --listen HOST:PORT      address to bind (port 0: any free port)\n"
          "  --user-id ID            expected mktowsUserId\n"
          "  --encryption-key KEY    HMAC-SHA1 key of requestSignature\n"
          "  --leads N               generated leads lead<i>@example.com (default 1000)\n"
          "  --seed S                seed of the generated data (default 1)\n"
          "  --latency-ms MS         delay added to every accepted SOAP call (default 0)\n"
          "  --calls-per-window N    rolling window limit, 0 = off (default 100)\n"
          "  --window-seconds S      rolling window length (default 20)\n"
          "  --max-concurrent N      calls in flight, 0 = off (default 10)\n"
          "  --daily-quota N         calls per US Central day, 0 = off (default 10000)\n"
          "  --help                  this text\n"
          "SOAP: POST /soap/mktows/2_3. Admin: GET /_sim/stats, POST /_sim/reset,\n"
          "POST /_sim/faults, GET|POST /_sim/limits.\n",
          f);
}

/* Parses a whole decimal number in [lo, hi]. Returns 0 or -1. */
static int num_arg(const char *s, long long lo, long long hi, long long *out)
{
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Parses argv into o. Returns 0, 1 (--help shown) or -1 (error shown). */
static int parse_args(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"user-id", required_argument, NULL, 'u'},
        {"encryption-key", required_argument, NULL, 'k'},
        {"leads", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"latency-ms", required_argument, NULL, 'L'},
        {"calls-per-window", required_argument, NULL, 'c'},
        {"window-seconds", required_argument, NULL, 'w'},
        {"max-concurrent", required_argument, NULL, 'm'},
        {"daily-quota", required_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long v;
    int ch, li = -1;
    memset(o, 0, sizeof(*o));
    o->leads = 1000;
    o->seed = 1;
    o->limits = (sim_limit_cfg){.calls_per_window = 100, .window_seconds = 20,
                                .max_concurrent = 10, .daily_quota = 10000};
    while ((ch = getopt_long(argc, argv, "", longopts, &li)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'l': o->listen = optarg; break;
        case 'u': o->user_id = optarg; break;
        case 'k': o->key = optarg; break;
        case 'n': bad = num_arg(optarg, 0, 5000000, &o->leads); break;
        case 's':
            bad = num_arg(optarg, 0, INT64_MAX, &v);
            o->seed = (unsigned long long)v;
            break;
        case 'L': bad = num_arg(optarg, 0, 600000, &o->latency_ms); break;
        case 'c':
            bad = num_arg(optarg, 0, 1000000, &v);
            o->limits.calls_per_window = (int)v;
            break;
        case 'w':
            bad = num_arg(optarg, 0, 86400, &v);
            o->limits.window_seconds = (int)v;
            break;
        case 'm':
            bad = num_arg(optarg, 0, 1000000, &v);
            o->limits.max_concurrent = (int)v;
            break;
        case 'q':
            bad = num_arg(optarg, 0, 1000000000LL, &v);
            o->limits.daily_quota = (long)v;
            break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (bad) {
            fprintf(stderr, "marketo-sim: bad value for --%s\n",
                    li >= 0 ? longopts[li].name : "option");
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc || o->listen == NULL || o->user_id == NULL || o->key == NULL) {
        fputs("marketo-sim: --listen, --user-id and --encryption-key are required\n", stderr);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Resolves "HOST:PORT" (IPv4) into sa. Returns 0 or -1. */
static int parse_listen(const char *spec, struct sockaddr_in *sa)
{
    const char *colon = strrchr(spec, ':');
    long long port;
    char host[256];
    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host) ||
        num_arg(colon + 1, 0, 65535, &port) != 0)
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host[0] != '\0' ? host : "0.0.0.0", NULL, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(sa, res->ai_addr, sizeof(*sa));
    sa->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    struct sockaddr_in sa;
    if (parse_listen(o.listen, &sa) != 0) {
        fputs("marketo-sim: --listen must be HOST:PORT (IPv4)\n", stderr);
        return 2;
    }
    int result = 1;
    struct MHD_Daemon *d = NULL;
    sim_store *st = NULL;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    soap_init();
    st = sim_store_new((size_t)o.leads, (uint64_t)o.seed);
    if (st == NULL) {
        fputs("marketo-sim: out of memory building the seed data\n", stderr);
        goto out;
    }
    sim_soap_cfg cfg = {.user_id = o.user_id, .encryption_key = o.key,
                        .latency_ms = o.latency_ms, .store = st};
    if (sim_soap_init(&cfg) != 0 || sim_limits_init(&o.limits) != 0) {
        fputs("marketo-sim: cannot initialise\n", stderr);
        goto out;
    }
    sim_admin_init(st);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_POLL,
                         0, NULL, NULL, handler, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                         MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                         MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "marketo-sim: cannot listen on %s\n", o.listen);
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    char ip[INET_ADDRSTRLEN];
    if (info == NULL || getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) != 0 ||
        inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof(ip)) == NULL) {
        fputs("marketo-sim: cannot read the bound address\n", stderr);
        goto out;
    }
    printf("marketo-sim listening on %s:%u\n", ip, (unsigned)ntohs(bound.sin_port));
    fflush(stdout);
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    /* requests sleeping in an injected latency or hold end now */
    sim_stop_waiting();
    sim_stats_wake_all();
    result = 0;
out:
    if (d != NULL)
        MHD_stop_daemon(d);
    sim_store_free(st);
    sim_stats_cleanup();
    sim_limits_cleanup();
    soap_cleanup();
    return result;
}
