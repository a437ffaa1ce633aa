/* tests/redis/harness.c - see harness.h. */
#include "tests/redis/harness.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

int64_t rh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rh_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rh_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A port the kernel just gave out on 127.0.0.1 (bind to 0, read, close). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Whether the server answers PING. */
static bool ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts redis-server on s->port. Returns 0 once it answers PING (within
 * 5 s), or -1 with nothing left running. */
static int start_server(rh_server *s)
{
    static const spawn_opts quiet = {.out = SPAWN_NULL, .err = SPAWN_NULL};
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    const char *const argv[] = {s->bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", s->dir, NULL};
    if (spawn_start(&s->proc, argv, &quiet) != 0)
        return -1;
    /* Something accepts on the port; PING says it is a Redis. */
    if (spawn_wait_port(&s->proc, s->port, 5000) == 0 && ping(s->port))
        return 0;
    spawn_wait(&s->proc, 0);
    return -1;
}

rh_server *rh_start(void)
{
    const char *bin = getenv("REDIS_SERVER");
    if (bin == NULL || bin[0] == '\0' || access(bin, X_OK) != 0)
        return NULL;
    rh_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    snprintf(s->bin, sizeof s->bin, "%s", bin);
    snprintf(s->dir, sizeof s->dir, "/tmp/gw-redis-test-XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        free(s);
        return NULL;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = free_port();
        if (s->port > 0 && start_server(s) == 0)
            return s;
    }
    rh_stop(s);
    return NULL;
}

void rh_kill(rh_server *s)
{
    if (s != NULL)
        spawn_wait(&s->proc, 0);
}

int rh_restart(rh_server *s)
{
    rh_kill(s);
    for (int i = 0; i < 20; i++) {
        if (start_server(s) == 0)
            return 0;
        rh_sleep_ms(100);
    }
    return -1;
}

void rh_pause(rh_server *s)
{
    if (s && s->proc.pid > 0)
        kill(s->proc.pid, SIGSTOP);
}

void rh_resume(rh_server *s)
{
    if (s && s->proc.pid > 0)
        kill(s->proc.pid, SIGCONT);
}

void rh_stop(rh_server *s)
{
    if (s == NULL)
        return;
    spawn_stop(&s->proc, 1000);
    /* The server writes nothing there (no RDB, no AOF); remove what may be. */
    char path[512];
    snprintf(path, sizeof path, "%s/dump.rdb", s->dir);
    unlink(path);
    rmdir(s->dir);
    free(s);
}

gw_redis *rh_client(const rh_server *s, const char *prefix, int64_t command_timeout_ms)
{
    gw_redis_opts o;
    memset(&o, 0, sizeof o);
    snprintf(o.addr.host, sizeof o.addr.host, "127.0.0.1");
    o.addr.port = s->port;
    o.key_prefix = prefix;
    o.connect_timeout_ms = 500;
    o.command_timeout_ms = command_timeout_ms;
    return gw_redis_new(&o);
}

long long rh_command_int(const rh_server *s, const char *cmd)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    long long v = -1;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        /* Words separated by single spaces (test commands only). */
        char buf[512];
        const char *argv[16];
        int argc = 0;
        snprintf(buf, sizeof buf, "%s", cmd);
        for (char *save = NULL, *w = strtok_r(buf, " ", &save); w && argc < 16;
             w = strtok_r(NULL, " ", &save))
            argv[argc++] = w;
        redisReply *r = redisCommandArgv(c, argc, argv, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        else if (r && r->type == REDIS_REPLY_STATUS)
            v = 0;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return v;
}
