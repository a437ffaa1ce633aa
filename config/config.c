/* config/config.c - the settings table and its loaders (defaults, INI, environment).
 *
 * Every key is one row of `keys` below: section, key, type, default (as text,
 * parsed by the same code as a file value), bounds and an optional validator
 * with the message shown to the user. Loading, environment overrides,
 * printing and freeing all walk that one table, so a key added there is
 * loaded, overridable, printed and documented (the example file's test
 * checks it) without touching anything else.
 *
 * Error messages name the key and, except for secrets and the Redis URL
 * (which may carry a password), quote the offending value, shortened.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The value types a key can have. */
typedef enum key_type {
    KT_STRING,   /* char *, any text the validator accepts */
    KT_SECRET,   /* char *, never printed nor quoted in a message */
    KT_INT,      /* int64_t within [min, max] */
    KT_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
    KT_DOUBLE,   /* double within (dmin, dmax] */
} key_type;

/* One row of the settings table. */
typedef struct key_def {
    const char *section;          /* INI section, lower case */
    const char *key;              /* key within the section, lower case */
    key_type type;                /* how the text is parsed and where it is stored */
    size_t offset;                /* offsetof the field in gw_config */
    const char *def;              /* default value as text */
    int64_t min;                  /* KT_INT: smallest allowed value */
    int64_t max;                  /* KT_INT: largest allowed value */
    double dmin;                  /* KT_DOUBLE: values must be greater than this */
    double dmax;                  /* KT_DOUBLE: values must be at most this */
    bool (*check)(const char *v); /* string validator; NULL: any text without control chars */
    const char *check_msg;        /* what check requires, for the error message */
    bool no_echo;                 /* never quote the value in a message (may hold a password) */
    void (*print)(FILE *out, const char *v); /* custom printer for --check-config; NULL: plain */
} key_def;

static bool check_no_ctl(const char *v);
static bool check_http_url(const char *v);
static bool check_listen(const char *v);
static bool check_listen_opt(const char *v);
static bool check_log_level(const char *v);
static bool check_redis_url(const char *v);
static bool check_key_prefix(const char *v);
static bool check_origins(const char *v);
static void print_redis_url(FILE *out, const char *v);

#define OFF(field) offsetof(gw_config, field)
#define K_STR(s, k, f, d, chk, msg) \
    { .section = s, .key = k, .type = KT_STRING, .offset = OFF(f), .def = d, \
      .check = chk, .check_msg = msg }
#define K_SECRET(s, k, f) \
    { .section = s, .key = k, .type = KT_SECRET, .offset = OFF(f), .def = "", \
      .check = check_no_ctl, .check_msg = "control characters are not allowed" }
#define K_INT(s, k, f, d, lo, hi) \
    { .section = s, .key = k, .type = KT_INT, .offset = OFF(f), .def = d, .min = lo, .max = hi }
#define K_BOOL(s, k, f, d) \
    { .section = s, .key = k, .type = KT_BOOL, .offset = OFF(f), .def = d }
#define K_DOUBLE(s, k, f, d, lo, hi) \
    { .section = s, .key = k, .type = KT_DOUBLE, .offset = OFF(f), .def = d, .dmin = lo, .dmax = hi }

#define KIB 1024LL
#define MIB (1024LL * 1024LL)

/* The settings table. Order here is the order of --check-config and of
 * config/gateway.example.ini. */
static const key_def keys[] = {
    K_STR("marketo", "soap_endpoint", soap_endpoint, "", check_http_url,
          "must start with http:// or https:// and name a host, without spaces"),
    K_STR("marketo", "user_id", user_id, "", check_no_ctl, "control characters are not allowed"),
    K_SECRET("marketo", "encryption_key", encryption_key),
    K_INT("marketo", "timeout_ms", timeout_ms, "30000", 100, 600000),
    K_INT("marketo", "max_response_bytes", max_response_bytes, "67108864", 64 * KIB, 1024 * MIB),
    K_INT("marketo", "retry_max_attempts", retry_max_attempts, "3", 1, 10),
    K_BOOL("marketo", "tls_verify", tls_verify, "true"),

    K_STR("gateway", "listen", listen, "127.0.0.1:8080", check_listen,
          "must be host:port with a port between 0 and 65535 ([v6addr]:port for IPv6)"),
    K_STR("gateway", "metrics_listen", metrics_listen, "", check_listen_opt,
          "must be empty or host:port with a port between 0 and 65535 ([v6addr]:port for IPv6)"),
    K_INT("gateway", "threads", threads, "0", 0, 256),
    K_INT("gateway", "max_body_bytes", max_body_bytes, "8388608", 1 * KIB, 256 * MIB),
    K_INT("gateway", "max_body_total_bytes", max_body_total_bytes, "33554432", 1 * KIB, 16384 * MIB),
    K_INT("gateway", "max_keys", max_keys, "1000", 1, 100000),
    K_INT("gateway", "max_page_size", max_page_size, "1000", 1, 10000),
    K_INT("gateway", "default_page_size", default_page_size, "100", 1, 10000),
    K_INT("gateway", "sync_batch_size", sync_batch_size, "300", 1, 300),
    K_INT("gateway", "max_sync_leads", max_sync_leads, "10000", 1, 1000000),
    K_INT("gateway", "connection_limit", connection_limit, "1024", 1, 1000000),
    K_INT("gateway", "idle_timeout_s", idle_timeout_s, "30", 1, 3600),
    K_INT("gateway", "header_timeout_ms", header_timeout_ms, "10000", 100, 3600000),
    K_INT("gateway", "body_timeout_ms", body_timeout_ms, "60000", 100, 3600000),
    K_INT("gateway", "max_connections_per_client", max_connections_per_client, "0", 0, 1000000),
    K_INT("gateway", "drain_timeout_ms", drain_timeout_ms, "20000", 0, 600000),
    K_INT("gateway", "request_timeout_ms", request_timeout_ms, "60000", 100, 3600000),
    K_INT("gateway", "coalesce_window_ms", coalesce_window_ms, "0", 0, 1000),
    K_STR("gateway", "log_level", log_level, "info", check_log_level,
          "must be one of debug, info, warn, error"),

    K_SECRET("auth", "api_keys", api_keys),
    K_BOOL("auth", "disabled", auth_disabled, "false"),
    K_INT("auth", "key_calls_per_minute", auth_key_calls_per_minute, "0", 0, 1000000),

    K_SECRET("cursor", "secret", cursor_secret),
    K_INT("cursor", "ttl_seconds", cursor_ttl_seconds, "3600", 1, 30 * 86400),

    { .section = "redis", .key = "url", .type = KT_STRING, .offset = OFF(redis_url), .def = "",
      .check = check_redis_url, .no_echo = true, .print = print_redis_url,
      .check_msg = "must be redis://[:password@]host[:port][/db] with a port between 1 and 65535" },
    K_SECRET("redis", "password", redis_password),
    K_STR("redis", "key_prefix", redis_key_prefix, "mktgw:", check_key_prefix,
          "must be at most 64 printable characters without spaces"),
    K_INT("redis", "connect_timeout_ms", redis_connect_timeout_ms, "500", 1, 60000),
    K_INT("redis", "command_timeout_ms", redis_command_timeout_ms, "500", 1, 60000),
    K_INT("redis", "invalidation_wait_ms", redis_invalidation_wait_ms, "5000", 0, 600000),

    K_INT("cache", "ttl_seconds", cache_ttl_seconds, "300", 1, 7 * 86400),
    K_INT("cache", "negative_ttl_seconds", cache_negative_ttl_seconds, "30", 1, 86400),
    K_INT("cache", "max_entries", cache_max_entries, "100000", 1, 100000000),

    K_INT("ratelimit", "calls_per_window", rl_calls_per_window, "100", 1, 100000),
    K_INT("ratelimit", "window_seconds", rl_window_seconds, "20", 1, 3600),
    K_INT("ratelimit", "max_concurrent", rl_max_concurrent, "10", 1, 1000),
    K_INT("ratelimit", "daily_quota", rl_daily_quota, "10000", 1, 100000000),
    K_INT("ratelimit", "queue_timeout_ms", rl_queue_timeout_ms, "10000", 0, 600000),
    K_DOUBLE("ratelimit", "fallback_share", rl_fallback_share, "0.3333333333333333", 0.0, 1.0),

    K_STR("cors", "allowed_origins", cors_allowed_origins, "", check_origins,
          "must be a comma-separated list of origins (http[s]://host[:port]) or *"),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

size_t gw_config_key_count(void)
{
    return N_KEYS;
}

const char *gw_config_key_section(size_t i)
{
    return i < N_KEYS ? keys[i].section : NULL;
}

const char *gw_config_key_name(size_t i)
{
    return i < N_KEYS ? keys[i].key : NULL;
}

/* ---- small helpers ------------------------------------------------------ */

/* Appends a formatted message to a bounded buffer (truncating). */
static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copies v into out for quoting in a message: at most 60 characters, any
 * non-printable byte shown as '?', "..." when shortened. */
static void shown_value(const char *v, char *out, size_t outlen)
{
    size_t n = 0;
    const size_t cap = 60;
    for (; v[n] && n < cap && n + 4 < outlen; n++)
        out[n] = isprint((unsigned char)v[n]) ? v[n] : '?';
    if (v[n] && n + 4 <= outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static bool has_ctl(const char *v)
{
    for (; *v; v++)
        if (iscntrl((unsigned char)*v))
            return true;
    return false;
}

static bool check_no_ctl(const char *v)
{
    return !has_ctl(v);
}

/* Parses a host name, IPv4 literal or bracketed IPv6 literal at s, stopping
 * at ':' '/' or the end. Copies it (without brackets) into host when not
 * NULL. Returns the number of bytes consumed, or 0 when malformed. */
static size_t parse_host(const char *s, char *host, size_t hostlen)
{
    const char *start = s, *end;
    size_t used;
    if (*s == '[') {
        start = s + 1;
        end = strchr(start, ']');
        if (!end || end == start)
            return 0;
        for (const char *p = start; p < end; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return 0;
        used = (size_t)(end - s) + 1;
    } else {
        end = s;
        while (*end && *end != ':' && *end != '/')
            end++;
        if (end == start)
            return 0;
        for (const char *p = start; p < end; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
                return 0;
        used = (size_t)(end - s);
    }
    if (host) {
        size_t len = (size_t)(end - start);
        if (len + 1 > hostlen)
            return 0;
        memcpy(host, start, len);
        host[len] = '\0';
    }
    return used;
}

/* Parses a decimal number of at most 10 digits in [lo, hi] from s up to
 * stop (exclusive). Returns 0 or -1. */
static int parse_small_uint(const char *s, const char *stop, long lo, long hi, long *out)
{
    long v = 0;
    if (stop <= s || stop - s > 10)
        return -1;
    for (const char *p = s; p < stop; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int gw_config_split_listen(const char *listen, char *host, size_t hostlen, uint16_t *port)
{
    char tmp[256];
    long p;
    if (!listen)
        return -1;
    size_t used = parse_host(listen, host ? host : tmp, host ? hostlen : sizeof tmp);
    if (used == 0 || listen[used] != ':')
        return -1;
    const char *digits = listen + used + 1;
    if (parse_small_uint(digits, digits + strlen(digits), 0, 65535, &p) < 0)
        return -1;
    if (port)
        *port = (uint16_t)p;
    return 0;
}

static bool check_listen(const char *v)
{
    return gw_config_split_listen(v, NULL, 0, NULL) == 0;
}

/* Empty (not set) or a valid listen address. */
static bool check_listen_opt(const char *v)
{
    return *v == '\0' || check_listen(v);
}

static bool check_http_url(const char *v)
{
    const char *rest;
    if (*v == '\0')
        return true;
    if (strncasecmp(v, "http://", 7) == 0)
        rest = v + 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        rest = v + 8;
    else
        return false;
    if (*rest == '\0' || *rest == '/' || *rest == ':')
        return false;
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return false;
    return true;
}

static bool check_log_level(const char *v)
{
    return strcmp(v, "debug") == 0 || strcmp(v, "info") == 0 || strcmp(v, "warn") == 0 ||
           strcmp(v, "error") == 0;
}

static bool check_key_prefix(const char *v)
{
    size_t n = strlen(v);
    if (n > 64)
        return false;
    for (const char *p = v; *p; p++)
        if (!isgraph((unsigned char)*p))
            return false;
    return true;
}

/* One origin: "*" or http[s]://host[:port], no path. */
static bool check_one_origin(const char *s, size_t len)
{
    char buf[300];
    const char *rest;
    if (len == 1 && s[0] == '*')
        return true;
    if (len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (strncasecmp(buf, "http://", 7) == 0)
        rest = buf + 7;
    else if (strncasecmp(buf, "https://", 8) == 0)
        rest = buf + 8;
    else
        return false;
    size_t used = parse_host(rest, NULL, 0);
    if (used == 0)
        return false;
    if (rest[used] == '\0')
        return true;
    long port;
    if (rest[used] != ':')
        return false;
    const char *digits = rest + used + 1;
    return parse_small_uint(digits, digits + strlen(digits), 1, 65535, &port) == 0;
}

static bool check_origins(const char *v)
{
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a && !check_one_origin(a, (size_t)(b - a)))
            return false;
        if (!comma)
            break;
        p = comma + 1;
    }
    return true;
}

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0 or -1. */
static int parse_redis_url(const char *url, gw_redis_addr *out)
{
    gw_redis_addr tmp;
    gw_redis_addr *a = out ? out : &tmp;
    memset(a, 0, sizeof *a);
    a->port = 6379;
    if (strncasecmp(url, "redis://", 8) != 0 || has_ctl(url))
        return -1;
    const char *rest = url + 8;
    const char *at = strrchr(rest, '@');
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (!colon)
            return -1;
        size_t ulen = (size_t)(colon - rest), plen = (size_t)(at - colon - 1);
        if (ulen >= sizeof a->username || plen >= sizeof a->password)
            return -1;
        memcpy(a->username, rest, ulen);
        a->username[ulen] = '\0';
        memcpy(a->password, colon + 1, plen);
        a->password[plen] = '\0';
        rest = at + 1;
    }
    size_t used = parse_host(rest, a->host, sizeof a->host);
    if (used == 0)
        return -1;
    rest += used;
    if (*rest == ':') {
        const char *slash = strchr(rest + 1, '/');
        const char *stop = slash ? slash : rest + strlen(rest);
        long port;
        if (parse_small_uint(rest + 1, stop, 1, 65535, &port) < 0)
            return -1;
        a->port = (int)port;
        rest = stop;
    }
    if (*rest == '/') {
        rest++;
        if (*rest) {
            long db;
            if (parse_small_uint(rest, rest + strlen(rest), 0, 1000000, &db) < 0)
                return -1;
            a->db = (int)db;
        }
    } else if (*rest != '\0') {
        return -1;
    }
    return 0;
}

static bool check_redis_url(const char *v)
{
    return *v == '\0' || parse_redis_url(v, NULL) == 0;
}

int gw_config_redis_addr(const gw_config *cfg, gw_redis_addr *out)
{
    if (!cfg->redis_url || cfg->redis_url[0] == '\0')
        return 1;
    if (parse_redis_url(cfg->redis_url, out) < 0)
        return -1;
    if (out->password[0] == '\0' && cfg->redis_password && cfg->redis_password[0]) {
        size_t n = strlen(cfg->redis_password);
        if (n >= sizeof out->password)
            return -1;
        memcpy(out->password, cfg->redis_password, n + 1);
    }
    return 0;
}

/* Prints a Redis URL with the password part (if any) masked. */
static void print_redis_url(FILE *out, const char *v)
{
    const char *at = strrchr(v, '@');
    if (strncasecmp(v, "redis://", 8) != 0 || !at) {
        fputs(v, out);
        return;
    }
    const char *rest = v + 8;
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    if (!colon) {
        fputs(v, out);
        return;
    }
    fprintf(out, "%.*s****%s", (int)(colon + 1 - v), v, at);
}

/* ---- typed parsing ------------------------------------------------------ */

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    if (*v == '\0' || isspace((unsigned char)*v))
        return -1;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end != '\0')
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = (int64_t)n;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    if (*v == '\0' || isspace((unsigned char)*v))
        return -1;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno == ERANGE || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

/* Parses text per k and stores it in cfg. Returns 0, or -1 with a message
 * (what is wrong, quoting the value unless it is secret) in msg. */
static int set_value(gw_config *cfg, const key_def *k, const char *text, char *msg, size_t msglen)
{
    char *base = (char *)cfg;
    char shown[80];
    bool hide = k->type == KT_SECRET || k->no_echo;
    shown_value(text, shown, sizeof shown);

    switch (k->type) {
    case KT_STRING:
    case KT_SECRET: {
        bool ok = k->check ? k->check(text) : check_no_ctl(text);
        if (!ok) {
            if (hide)
                errf(msg, msglen, "invalid: %s", k->check_msg);
            else
                errf(msg, msglen, "'%s' %s", shown,
                     k->check_msg ? k->check_msg : "is not valid");
            return -1;
        }
        char *copy = strdup(text);
        if (!copy) {
            errf(msg, msglen, "out of memory");
            return -1;
        }
        char **field = (char **)(base + k->offset);
        free(*field);
        *field = copy;
        return 0;
    }
    case KT_INT: {
        int64_t n = 0;
        int rc = parse_int(text, &n);
        if (rc == -1) {
            errf(msg, msglen, "'%s' is not an integer", shown);
            return -1;
        }
        if (rc == -2 || n < k->min || n > k->max) {
            errf(msg, msglen, "'%s' must be between %lld and %lld", shown, (long long)k->min,
                 (long long)k->max);
            return -1;
        }
        *(int64_t *)(base + k->offset) = n;
        return 0;
    }
    case KT_BOOL: {
        bool b;
        if (parse_bool(text, &b) < 0) {
            errf(msg, msglen, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)", shown);
            return -1;
        }
        *(bool *)(base + k->offset) = b;
        return 0;
    }
    case KT_DOUBLE: {
        double d;
        if (parse_double(text, &d) < 0) {
            errf(msg, msglen, "'%s' is not a number", shown);
            return -1;
        }
        if (!(d > k->dmin && d <= k->dmax)) {
            errf(msg, msglen, "'%s' must be greater than %g and at most %g", shown, k->dmin,
                 k->dmax);
            return -1;
        }
        *(double *)(base + k->offset) = d;
        return 0;
    }
    }
    errf(msg, msglen, "unknown type");
    return -1;
}

static const key_def *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcasecmp(keys[i].section, section) == 0 && strcasecmp(keys[i].key, name) == 0)
            return &keys[i];
    return NULL;
}

/* ---- INI ---------------------------------------------------------------- */

/* State shared with the inih handler while one file is parsed. */
typedef struct ini_ctx {
    gw_config *cfg;               /* where values go */
    bool failed;                  /* a handler call already failed: msg holds the first error */
    char msg[256];                /* first error, without the file:line prefix */
} ini_ctx;

/* inih callback: stores one key = value, or records the first error and
 * returns 0 (inih then reports that line's number). */
static int ini_handler_fn(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *ctx = user;
    char detail[200], sec[40], key[60];
    const key_def *k = find_key(section, name);
    if (!k) {
        if (!ctx->failed) {
            shown_value(section, sec, sizeof sec);
            shown_value(name, key, sizeof key);
            errf(ctx->msg, sizeof ctx->msg, "unknown key [%s] %s", sec, key);
            ctx->failed = true;
        }
        return 0;
    }
    if (set_value(ctx->cfg, k, value ? value : "", detail, sizeof detail) < 0) {
        if (!ctx->failed) {
            errf(ctx->msg, sizeof ctx->msg, "[%s] %s: %s", k->section, k->key, detail);
            ctx->failed = true;
        }
        return 0;
    }
    return 1;
}

/* Parses one INI file into cfg. Returns 0 or -1 with err. */
static int load_file(gw_config *cfg, const char *path, char *err, size_t errlen)
{
    ini_ctx ctx = {.cfg = cfg};
    /* Debian's libinih takes these at run time: lines of any length (long
     * api_keys lists), and no continuation lines (an indented line is a key). */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 64 * 1024;
    ini_allow_multiline = false;
    ini_stop_on_first_error = true;

    int rc = ini_parse(path, ini_handler_fn, &ctx);
    if (rc == 0)
        return 0;
    if (rc == -1)
        errf(err, errlen, "config %s: cannot open: %s", path, strerror(errno));
    else if (rc == -2)
        errf(err, errlen, "config %s: out of memory", path);
    else if (ctx.failed)
        errf(err, errlen, "config %s:%d: %s", path, rc, ctx.msg);
    else
        errf(err, errlen, "config %s:%d: syntax error (expected [section] or key = value)", path, rc);
    return -1;
}

/* ---- environment -------------------------------------------------------- */

/* Writes SECTION_KEY (upper case) for k into out. */
static void env_name(const key_def *k, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s_%s", k->section, k->key);
    for (char *p = out; *p; p++)
        *p = (char)toupper((unsigned char)*p);
}

static int load_env(gw_config *cfg, char *err, size_t errlen)
{
    char name[96], detail[200];
    for (size_t i = 0; i < N_KEYS; i++) {
        env_name(&keys[i], name, sizeof name);
        const char *v = getenv(name);
        if (!v)
            continue;
        if (set_value(cfg, &keys[i], v, detail, sizeof detail) < 0) {
            errf(err, errlen, "config: environment %s: [%s] %s: %s", name, keys[i].section,
                 keys[i].key, detail);
            return -1;
        }
    }
    return 0;
}

/* ---- public ------------------------------------------------------------- */

int gw_config_load(gw_config *cfg, const char *path, char *err, size_t errlen)
{
    char detail[200];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (set_value(cfg, &keys[i], keys[i].def, detail, sizeof detail) < 0) {
            errf(err, errlen, "config: default of [%s] %s: %s", keys[i].section, keys[i].key,
                 detail);
            goto fail;
        }
    }
    if (path && load_file(cfg, path, err, errlen) < 0)
        goto fail;
    if (load_env(cfg, err, errlen) < 0)
        goto fail;
    if (cfg->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n < 1 ? 1 : n > 256 ? 256 : n;
    }
    return 0;
fail:
    gw_config_free(cfg);
    return -1;
}

/* Counts the non-empty, whitespace-trimmed entries of a comma-separated list. */
static size_t count_list(const char *s)
{
    size_t n = 0;
    bool in_item = false;
    for (const char *p = s ? s : ""; ; p++) {
        if (*p == ',' || *p == '\0') {
            n += in_item;
            in_item = false;
            if (*p == '\0')
                break;
        } else if (*p != ' ' && *p != '\t') {
            in_item = true;
        }
    }
    return n;
}

static bool empty(const char *s)
{
    return !s || s[0] == '\0';
}

int gw_config_validate(const gw_config *cfg, char *err, size_t errlen)
{
    if (cfg->auth_disabled && !empty(cfg->api_keys)) {
        errf(err, errlen, "config: auth.disabled = true needs auth.api_keys empty");
        return -1;
    }
    if (!cfg->auth_disabled && count_list(cfg->api_keys) == 0) {
        errf(err, errlen,
             "config: auth.api_keys is empty: set keys, or auth.disabled = true for a local run");
        return -1;
    }
    uint16_t mport = 0;
    if (!empty(cfg->metrics_listen) && !empty(cfg->listen) &&
        strcmp(cfg->metrics_listen, cfg->listen) == 0 &&
        gw_config_split_listen(cfg->metrics_listen, NULL, 0, &mport) == 0 && mport != 0) {
        errf(err, errlen, "config: gateway.metrics_listen must differ from gateway.listen "
                          "(leave it empty to serve /metrics on listen)");
        return -1;
    }
    if (cfg->default_page_size > cfg->max_page_size) {
        errf(err, errlen,
             "config: gateway.default_page_size (%lld) must not exceed gateway.max_page_size (%lld)",
             (long long)cfg->default_page_size, (long long)cfg->max_page_size);
        return -1;
    }
    if (cfg->max_body_total_bytes < cfg->max_body_bytes) {
        errf(err, errlen,
             "config: gateway.max_body_total_bytes (%lld) must be at least gateway.max_body_bytes "
             "(%lld)",
             (long long)cfg->max_body_total_bytes, (long long)cfg->max_body_bytes);
        return -1;
    }
    if (!empty(cfg->soap_endpoint) && (empty(cfg->user_id) || empty(cfg->encryption_key))) {
        errf(err, errlen,
             "config: marketo.soap_endpoint is set: marketo.user_id and marketo.encryption_key "
             "are needed too");
        return -1;
    }
    if (!empty(cfg->redis_url)) {
        gw_redis_addr a;
        if (parse_redis_url(cfg->redis_url, &a) < 0) {
            errf(err, errlen, "config: redis.url: malformed");
            return -1;
        }
        bool both = a.password[0] != '\0' && !empty(cfg->redis_password);
        explicit_bzero(&a, sizeof a);
        if (both) {
            errf(err, errlen, "config: set the Redis password in redis.url or in redis.password, "
                              "not both");
            return -1;
        }
    }
    return 0;
}

void gw_config_print(const gw_config *cfg, FILE *out)
{
    const char *base = (const char *)cfg;
    const char *section = NULL;
    fputs("; marketo-gateway effective settings (secrets masked)\n", out);
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(out, "\n[%s]\n", k->section);
            section = k->section;
        }
        fprintf(out, "%s = ", k->key);
        switch (k->type) {
        case KT_STRING: {
            const char *v = *(char *const *)(base + k->offset);
            v = v ? v : "";
            if (k->print)
                k->print(out, v);
            else
                fputs(v, out);
            break;
        }
        case KT_SECRET: {
            const char *v = *(char *const *)(base + k->offset);
            fputs(empty(v) ? "" : "****", out);
            break;
        }
        case KT_INT:
            fprintf(out, "%lld", (long long)*(const int64_t *)(base + k->offset));
            break;
        case KT_BOOL:
            fputs(*(const bool *)(base + k->offset) ? "true" : "false", out);
            break;
        case KT_DOUBLE:
            fprintf(out, "%.15g", *(const double *)(base + k->offset));
            break;
        }
        fputc('\n', out);
    }
}

void gw_config_free(gw_config *cfg)
{
    if (!cfg)
        return;
    char *base = (char *)cfg;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].type != KT_STRING && keys[i].type != KT_SECRET)
            continue;
        char **field = (char **)(base + keys[i].offset);
        if (*field)
            explicit_bzero(*field, strlen(*field));
        free(*field);
        *field = NULL;
    }
    memset(cfg, 0, sizeof *cfg);
}

int gw_config_split_list(const char *in, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const char *p = in != NULL ? in : "";
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            char **nv = realloc(*out, (*n + 1) * sizeof *nv);
            if (nv == NULL)
                return -1;
            *out = nv;
            (*out)[*n] = strndup(a, (size_t)(b - a));
            if ((*out)[*n] == NULL)
                return -1;
            (*n)++;
        }
        p = e != NULL ? e + 1 : p + len;
    }
    return 0;
}
