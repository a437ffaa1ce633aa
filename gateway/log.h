/* gateway/log.h - structured logs: one JSON object per line on stderr.
 *
 * Every line is valid JSON whatever the input (jansson does the escaping);
 * CR and LF never appear raw. Never log a secret; never log a key value
 * (e-mail, cookie, ...) in clear: use gw_log_redact().
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <jansson.h>
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
