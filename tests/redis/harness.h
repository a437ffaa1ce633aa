/* tests/redis/harness.h - a real redis-server for the tests: started on a free
 * 127.0.0.1 port in a temp dir, killed and restarted on the same port on
 * demand, stopped and removed at the end.
 */
#ifndef TESTS_REDIS_HARNESS_H
#define TESTS_REDIS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gateway/store/redis.h"
#include "tests/common/spawn.h"

/* A running (or killed) redis-server. */
typedef struct rh_server {
    char bin[1024];      /* redis-server path (REDIS_SERVER) */
    char dir[256];       /* temp dir, its working directory */
    int port;            /* TCP port on 127.0.0.1 */
    spawn_proc proc;     /* the process; proc.pid 0 when not running */
} rh_server;

/* Starts a server. Returns NULL when REDIS_SERVER is not set or the server
 * does not answer PING within 5 s (the caller skips). */
rh_server *rh_start(void);

/* Kills it with SIGKILL and reaps it (data is lost: no persistence). */
void rh_kill(rh_server *s);

/* Starts it again on the same port; returns 0 when it answers PING. */
int rh_restart(rh_server *s);

/* SIGSTOP / SIGCONT: a server that accepts connections but answers nothing. */
void rh_pause(rh_server *s);
void rh_resume(rh_server *s);

/* Stops it, removes its dir, frees s. NULL is fine. */
void rh_stop(rh_server *s);

/* A connection manager on s with the given key prefix and command timeout. */
gw_redis *rh_client(const rh_server *s, const char *prefix, int64_t command_timeout_ms);

/* Runs one command on a fresh connection (FLUSHALL, DBSIZE...); returns its
 * integer reply, or -1. */
long long rh_command_int(const rh_server *s, const char *cmd);

/* Wall clock, ms since the epoch; monotonic ms. */
int64_t rh_now_ms(void);
int64_t rh_mono_ms(void);
void rh_sleep_ms(int64_t ms);

#endif
