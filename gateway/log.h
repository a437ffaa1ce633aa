/* gateway/log.h - structured logs: one JSON object per line on stderr.
 *
 * Every line is valid JSON whatever the input (log.c escapes every string;
 * invalid UTF-8 bytes become '?'); CR, LF and other control characters
 * never appear raw. Lines go to stderr: batched per thread and written by a
 * flusher thread once main has started it (gateway/log_batch.h), one
 * write(2) each before that. Never log a secret; never log a key value
 * (e-mail, cookie, ...) in clear: use gw_log_redact().
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum gw_log_level {
    GW_LOG_DEBUG = 0,
    GW_LOG_INFO,
    GW_LOG_WARN,
    GW_LOG_ERROR,
} gw_log_level;

/* Lines below this level are dropped before their arguments are built. */
extern int gw_log_min_level;

/* Parses "debug", "info", "warn", "error". Returns 0 or -1. */
int gw_log_level_parse(const char *s, int *out);

/* Writes {"ts": ..., "level": ..., "msg": <formatted>, ...fields} as one line.
 * fields: a JSON object whose members are added (reference stolen), or NULL. */
void gw_log_emit(int level, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Kind of one field of gw_log_emit_fields. */
typedef enum gw_log_kind {
    GW_LF_STR = 0, /* s: a string (escaped; invalid UTF-8 bytes become '?') */
    GW_LF_INT,     /* i: an integer */
    GW_LF_BOOL,    /* i: false when 0, true otherwise */
} gw_log_kind;

/* One field of a line built by gw_log_emit_fields. */
typedef struct gw_log_field {
    const char *key;  /* member name (escaped like a value); "ts", "level", "msg" are skipped */
    gw_log_kind kind; /* which of s and i holds the value */
    const char *s;    /* GW_LF_STR: the value; NULL leaves the member out */
    int64_t i;        /* GW_LF_INT / GW_LF_BOOL: the value */
} gw_log_field;

/* Writes {"ts": ..., "level": ..., "msg": msg, fields...} as one line, like
 * gw_log_emit, without building jansson objects: the line is escaped by hand
 * into a stack buffer and written with one write(2). For the per-request
 * access log. msg is a plain string (no format). Members keep the order of
 * fields; the caller must not repeat a key. */
void gw_log_emit_fields(int level, const gw_log_field *fields, size_t n, const char *msg);

/* Logs only when level is enabled; fields and arguments are not evaluated otherwise. */
#define GW_LOG(level, fields, ...)                                  \
    do {                                                            \
        if ((level) >= gw_log_min_level)                            \
            gw_log_emit((level), (fields), __VA_ARGS__);            \
    } while (0)

/* Sends log lines to out instead of stderr (NULL: back to stderr). The
 * stream must stay open until the next call. For tests. */
void gw_log_set_output(FILE *out);

/* A stable, non-reversible tag for a key value in logs: the first 12 hex
 * digits of SHA-256(process salt || value). out must hold 13 bytes. */
void gw_log_redact(const char *value, char out[13]);

#endif /* GW_LOG_H */
