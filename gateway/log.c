/* gateway/log.c - structured logs: one JSON object per line.
 *
 * jansson builds and escapes each line (CR, LF, quotes and control
 * characters come out as JSON escapes); the message text is first made
 * valid UTF-8 so that jansson accepts it. A line is written with one fwrite
 * and one fflush under a mutex, so lines from several threads never mix.
 */
#include "gateway/log.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int gw_log_min_level = GW_LOG_INFO;

/* Longest message kept; longer ones are cut (and marked with "..."). */
#define GW_LOG_MSG_MAX 8192

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_out;             /* NULL: stderr */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int gw_log_level_parse(const char *s, int *out)
{
    if (!s)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

void gw_log_set_output(FILE *out)
{
    pthread_mutex_lock(&log_lock);
    log_out = out;
    pthread_mutex_unlock(&log_lock);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the
 * bytes there are not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* Replaces, in place, every byte that does not start a valid UTF-8
 * sequence with '?'. */
static void utf8_sanitize(char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);
        if (len == 0) {
            s[i++] = '?';
        } else {
            i += len;
        }
    }
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, RFC 3339) into out. */
static void timestamp(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char secs[32];
    strftime(secs, sizeof secs, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%.20s.%03dZ", secs, (int)(ts.tv_nsec / 1000000L) % 1000);
}

/* Writes one finished line, newline included, with a single fwrite (one
 * write(2) on unbuffered stderr) and a flush, under the log mutex. */
static void write_line(const char *line, size_t n)
{
    pthread_mutex_lock(&log_lock);
    FILE *out = log_out ? log_out : stderr;
    fwrite(line, 1, n, out);
    fflush(out);
    pthread_mutex_unlock(&log_lock);
}

void gw_log_emit(int level, json_t *fields, const char *fmt, ...)
{
    char stackbuf[1024];
    char *msg = stackbuf;
    char ts[48];
    json_t *obj = NULL;
    char *line = NULL;
    size_t len = 0;
    bool written = false;
    va_list ap;
    static const char fallback[] = "{\"level\":\"error\",\"msg\":\"log line could not be built\"}\n";

    if (level < GW_LOG_DEBUG)
        level = GW_LOG_DEBUG;
    if (level > GW_LOG_ERROR)
        level = GW_LOG_ERROR;

    va_start(ap, fmt);
    int n = vsnprintf(stackbuf, sizeof stackbuf, fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(stackbuf, sizeof stackbuf, "(unformattable log message)");
        n = (int)strlen(stackbuf);
    } else if ((size_t)n >= sizeof stackbuf) {
        size_t cap = (size_t)n < GW_LOG_MSG_MAX ? (size_t)n + 1 : GW_LOG_MSG_MAX;
        char *big = malloc(cap);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, cap, fmt, ap);
            va_end(ap);
            msg = big;
            if ((size_t)n >= cap && cap > 4)
                memcpy(big + cap - 4, "...", 4);
            n = (int)strlen(big);
        } else {
            n = (int)sizeof stackbuf - 1;
        }
    }
    utf8_sanitize(msg, (size_t)n);

    timestamp(ts, sizeof ts);
    obj = json_object();
    if (!obj)
        goto out;
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    json_object_set_new(obj, "msg", json_stringn(msg, (size_t)n));
    if (fields && json_is_object(fields))
        json_object_update_missing(obj, fields);
    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (line) {
        len = strlen(line);
        char *grown = realloc(line, len + 2);
        if (!grown)
            goto out;
        line = grown;
        line[len++] = '\n';
        line[len] = '\0';
        written = true;
        write_line(line, len);
    }
out:
    if (!written)
        write_line(fallback, sizeof fallback - 1);
    free(line);
    json_decref(obj);
    json_decref(fields);
    if (msg != stackbuf)
        free(msg);
}

/* ---- redaction ---------------------------------------------------------- */

static unsigned char redact_salt[32];
static pthread_once_t redact_once = PTHREAD_ONCE_INIT;

/* Draws the per-process salt (OpenSSL's RNG, getrandom as a fallback). */
static void redact_init(void)
{
    if (RAND_bytes(redact_salt, (int)sizeof redact_salt) == 1)
        return;
    if (getrandom(redact_salt, sizeof redact_salt, 0) == (ssize_t)sizeof redact_salt)
        return;
    /* Last resort: not secret, but still distinct per process. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pid_t pid = getpid();
    memcpy(redact_salt, &ts, sizeof ts < sizeof redact_salt ? sizeof ts : sizeof redact_salt);
    memcpy(redact_salt + sizeof redact_salt - sizeof pid, &pid, sizeof pid);
}

void gw_log_redact(const char *value, char out[13])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = NULL;

    pthread_once(&redact_once, redact_init);
    if (!value)
        value = "";
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, redact_salt, sizeof redact_salt) != 1 ||
        EVP_DigestUpdate(ctx, value, strlen(value)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen < 6) {
        memcpy(out, "????????????", 13);
        goto out;
    }
    for (int i = 0; i < 6; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0F];
    }
    out[12] = '\0';
out:
    EVP_MD_CTX_free(ctx);
}
