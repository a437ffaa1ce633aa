/* sim/admin.c - /_sim/ endpoints (see admin.h). */
#include "sim/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sim/faults.h"
#include "sim/limits.h"
#include "sim/stats.h"

/* The store of reset and stats. */
static sim_store *g_store;

void sim_admin_init(sim_store *store)
{
    g_store = store;
}

/* {"error": msg} with status st. */
static void error_reply(int st, const char *msg, int *status, char **out)
{
    json_t *j = json_pack("{s:s}", "error", msg);
    *status = st;
    *out = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
}

/* Serialises j (stealing it) as the 200 answer. */
static void json_reply(json_t *j, int *status, char **out)
{
    if (j == NULL) {
        error_reply(500, "out of memory", status, out);
        return;
    }
    *status = 200;
    *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
}

/* The current limits as JSON. */
static json_t *limits_json(void)
{
    sim_limit_cfg c;
    sim_limits_get(&c);
    return json_pack("{s:i, s:i, s:i, s:I}", "calls_per_window", c.calls_per_window,
                     "window_seconds", c.window_seconds, "max_concurrent", c.max_concurrent,
                     "daily_quota", (json_int_t)c.daily_quota);
}

/* Reads integer member name into *out when present; -1 when not an
 * integer in [0, max]. */
static int get_int(const json_t *o, const char *name, long long max, long long *out)
{
    const json_t *v = json_object_get(o, name);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

/* POST /_sim/limits: changes the given members. */
static void set_limits(const json_t *j, int *status, char **out)
{
    sim_limit_cfg c;
    sim_limits_get(&c);
    long long cpw = c.calls_per_window, ws = c.window_seconds, mc = c.max_concurrent,
              dq = c.daily_quota;
    if (!json_is_object(j) || get_int(j, "calls_per_window", 1000000, &cpw) != 0 ||
        get_int(j, "window_seconds", 86400, &ws) != 0 ||
        get_int(j, "max_concurrent", 1000000, &mc) != 0 ||
        get_int(j, "daily_quota", 1000000000LL, &dq) != 0) {
        error_reply(400, "limits must be non-negative integers", status, out);
        return;
    }
    c.calls_per_window = (int)cpw;
    c.window_seconds = (int)ws;
    c.max_concurrent = (int)mc;
    c.daily_quota = (long)dq;
    if (sim_limits_set(&c) != 0) {
        error_reply(400, "bad limits", status, out);
        return;
    }
    json_reply(limits_json(), status, out);
}

void sim_admin_handle(const char *method, const char *url, const char *body, size_t len,
                      int *status, char **out)
{
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    json_t *in = NULL;
    *out = NULL;
    if (post && len > 0) {
        json_error_t e;
        in = json_loadb(body, len, 0, &e);
        if (in == NULL) {
            error_reply(400, "body is not valid JSON", status, out);
            return;
        }
    }
    if (strcmp(url, "/_sim/stats") == 0 && get) {
        sim_store_rdlock(g_store);
        size_t n = sim_store_count(g_store);
        sim_store_unlock(g_store);
        json_reply(sim_stats_json(n), status, out);
    } else if (strcmp(url, "/_sim/reset") == 0 && post) {
        if (sim_store_reset(g_store) != 0) {
            error_reply(500, "out of memory", status, out);
        } else {
            sim_stats_reset();
            sim_faults_clear();
            sim_limits_reset();
            json_reply(json_pack("{s:b}", "reset", 1), status, out);
        }
    } else if (strcmp(url, "/_sim/faults") == 0 && post) {
        char err[128];
        if (sim_faults_set_json(in, err, sizeof(err)) != 0)
            error_reply(400, err, status, out);
        else
            json_reply(json_pack("{s:b}", "ok", 1), status, out);
    } else if (strcmp(url, "/_sim/limits") == 0 && post) {
        set_limits(in, status, out);
    } else if (strcmp(url, "/_sim/limits") == 0 && get) {
        json_reply(limits_json(), status, out);
    } else if (strcmp(url, "/_sim/stats") == 0 || strcmp(url, "/_sim/reset") == 0 ||
               strcmp(url, "/_sim/faults") == 0 || strcmp(url, "/_sim/limits") == 0) {
        error_reply(405, "method not allowed", status, out);
    } else {
        error_reply(404, "no such admin endpoint", status, out);
    }
    json_decref(in);
}
