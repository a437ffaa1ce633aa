/* gateway/log.c - structured logs: one JSON object per line.
 *
 * Each line is built into one buffer (on the stack unless it is long): the
 * core members and every string value are escaped here (quotes, backslash
 * and control characters as JSON escapes, invalid UTF-8 bytes as '?');
 * gw_log_emit's jansson fields are dumped by jansson and spliced in. The
 * access log (gw_log_emit_fields) builds no jansson object at all. A line
 * goes to the logging thread's batch, written by the flusher of
 * log_batch.c; before the batcher starts (and in tests) it goes to stderr
 * with one write(2) (see write_line for why lines from several threads
 * never mix).
 */
#include "gateway/log.h"
#include "gateway/log_batch.h"

#include <errno.h>
#include <limits.h>
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
static FILE *log_out;             /* NULL: stderr (fd 2, written with write(2)) */

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
    __atomic_store_n(&log_out, out, __ATOMIC_RELEASE);
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

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, RFC 3339) into out (at least 25
 * bytes) and returns its length (24). The seconds part is cached per thread,
 * so gmtime_r and strftime run once a second, not once a line. */
static size_t timestamp(char out[25])
{
    static _Thread_local time_t cached_sec = (time_t)-1;
    static _Thread_local char cached[21];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm) != 19)
            memcpy(cached, "0000-00-00T00:00:00", 20);
        cached_sec = ts.tv_sec;
    }
    int ms = (int)(ts.tv_nsec / 1000000L) % 1000;
    memcpy(out, cached, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
    return 24;
}

/* ---- line building ------------------------------------------------------ */

/* A line being built into a fixed buffer (sized beforehand for the worst
 * case, so an overflow is a bug: it is caught and the line dropped). */
typedef struct line_buf {
    char *p;      /* the buffer */
    size_t len;   /* bytes used */
    size_t cap;   /* its size */
    bool over;    /* something did not fit */
} line_buf;

/* Bytes the escaped, quoted form of n input bytes can take at most
 * (\u00XX is 6 bytes for 1), plus the quotes. */
#define ESCAPED_MAX(n) (6 * (n) + 2)

/* Appends n raw bytes. */
static void lb_raw(line_buf *b, const char *s, size_t n)
{
    if (b->over || n > b->cap - b->len) {
        b->over = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Appends s (n bytes) as a JSON string: quotes, backslash and every control
 * character (0x00-0x1F, 0x7F) escaped, valid UTF-8 copied, each byte that
 * does not start a valid UTF-8 sequence written as '?'. */
static void lb_str(line_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (b->over || ESCAPED_MAX(n) > b->cap - b->len) {
        b->over = true;
        return;
    }
    char *o = b->p + b->len;
    const unsigned char *u = (const unsigned char *)s;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7F) {
            if (c == '"' || c == '\\')
                *o++ = '\\';
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x20 || c == 0x7F) {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                memcpy(o, "u00", 3);
                o += 3;
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
                break;
            }
            i++;
            continue;
        }
        size_t len = utf8_seq(u + i, n - i);
        if (len == 0) {
            *o++ = '?';
            i++;
        } else {
            memcpy(o, u + i, len);
            o += len;
            i += len;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

/* Appends a decimal integer (by hand: snprintf's format parsing costs more
 * than the rest of an access-log field). */
static void lb_int(line_buf *b, int64_t v)
{
    char num[24];
    size_t i = sizeof num;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        num[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        num[--i] = '-';
    lb_raw(b, num + i, sizeof num - i);
}

/* Appends {"ts":"...","level":"...","msg":"..." (no closing brace). */
static void lb_head(line_buf *b, int level, const char *msg, size_t msglen)
{
    char ts[25];
    size_t tslen = timestamp(ts);
    lb_raw(b, "{\"ts\":\"", 7);
    lb_raw(b, ts, tslen);
    lb_raw(b, "\",\"level\":\"", 11);
    lb_raw(b, level_names[level], strlen(level_names[level]));
    lb_raw(b, "\",\"msg\":", 8);
    lb_str(b, msg, msglen);
}

/* Room lb_head needs for a message of msglen bytes. */
static size_t head_max(size_t msglen)
{
    return 64 + ESCAPED_MAX(msglen);
}

/* Whether key is one of the members every line has ("ts", "level", "msg"). */
static bool core_key(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0;
}

/* Writes one finished line, newline included. While the batcher runs and
 * no stream is set: into the thread's batch (log_batch.c). To a stream set by
 * gw_log_set_output: one fwrite and a flush under the log mutex. To stderr:
 * write(2) on fd 2 without stdio; a line of at most PIPE_BUF bytes is one
 * write(2), atomic on a pipe and (the kernel holds the file position lock)
 * on a file, so no lock is taken; a longer line takes the mutex so that
 * lines of this process never mix. */
static void write_line(const char *line, size_t n)
{
    bool locked = false;
    /* While the batcher runs (the gateway's normal state), the line goes to
     * this thread's buffer and the flusher writes it (log_batch.c). */
    if (__atomic_load_n(&log_out, __ATOMIC_ACQUIRE) == NULL && gw_logb_append(line, n))
        return;
    if (n > PIPE_BUF || __atomic_load_n(&log_out, __ATOMIC_ACQUIRE) != NULL) {
        pthread_mutex_lock(&log_lock);
        locked = true;
        if (log_out != NULL) {
            fwrite(line, 1, n, log_out);
            fflush(log_out);
            pthread_mutex_unlock(&log_lock);
            return;
        }
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
    if (locked)
        pthread_mutex_unlock(&log_lock);
}

/* The line written when a line cannot be built. */
static const char fallback_line[] = "{\"level\":\"error\",\"msg\":\"log line could not be built\"}\n";

/* Clamps a level to the known ones. */
static int clamp_level(int level)
{
    return level < GW_LOG_DEBUG ? GW_LOG_DEBUG : level > GW_LOG_ERROR ? GW_LOG_ERROR : level;
}

void gw_log_emit_fields(int level, const gw_log_field *fields, size_t n, const char *msg)
{
    char stackbuf[2048];
    line_buf b = {stackbuf, 0, sizeof stackbuf, false};
    char *heap = NULL;

    level = clamp_level(level);
    if (msg == NULL)
        msg = "";
    size_t msglen = strnlen(msg, GW_LOG_MSG_MAX);
    size_t need = head_max(msglen) + 2;
    for (size_t i = 0; i < n; i++) {
        size_t klen = fields[i].key != NULL ? strlen(fields[i].key) : 0;
        size_t vlen = fields[i].kind == GW_LF_STR && fields[i].s != NULL
                          ? strnlen(fields[i].s, GW_LOG_MSG_MAX) : 0;
        need += ESCAPED_MAX(klen) + ESCAPED_MAX(vlen) + 32;
    }
    if (need > sizeof stackbuf) {
        heap = malloc(need);
        if (heap == NULL) {
            write_line(fallback_line, sizeof fallback_line - 1);
            return;
        }
        b.p = heap;
        b.cap = need;
    }
    lb_head(&b, level, msg, msglen);
    for (size_t i = 0; i < n; i++) {
        const gw_log_field *f = &fields[i];
        if (f->key == NULL || core_key(f->key) || (f->kind == GW_LF_STR && f->s == NULL))
            continue;
        lb_raw(&b, ",", 1);
        lb_str(&b, f->key, strlen(f->key));
        lb_raw(&b, ":", 1);
        switch (f->kind) {
        case GW_LF_INT:
            lb_int(&b, f->i);
            break;
        case GW_LF_BOOL:
            if (f->i != 0)
                lb_raw(&b, "true", 4);
            else
                lb_raw(&b, "false", 5);
            break;
        case GW_LF_STR:
        default:
            lb_str(&b, f->s, strnlen(f->s, GW_LOG_MSG_MAX));
            break;
        }
    }
    lb_raw(&b, "}\n", 2);
    if (b.over)
        write_line(fallback_line, sizeof fallback_line - 1);
    else
        write_line(b.p, b.len);
    free(heap);
}

void gw_log_emit(int level, json_t *fields, const char *fmt, ...)
{
    char stackbuf[1024];
    char linebuf[2048];
    char *msg = stackbuf;
    char *heap = NULL;
    char *extra = NULL;
    size_t extralen = 0;
    va_list ap;

    level = clamp_level(level);

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

    /* The fields (jansson escapes them): their members, without the
     * braces, after the core members; core keys in them are dropped. */
    if (fields != NULL && json_is_object(fields)) {
        json_object_del(fields, "ts");
        json_object_del(fields, "level");
        json_object_del(fields, "msg");
        if (json_object_size(fields) > 0) {
            extra = json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (extra == NULL)
                goto fail;
            extralen = strlen(extra);
            if (extralen < 2 || extra[0] != '{' || extra[extralen - 1] != '}')
                goto fail;
        }
    }

    size_t need = head_max((size_t)n) + extralen + 4;
    line_buf b = {linebuf, 0, sizeof linebuf, false};
    if (need > sizeof linebuf) {
        heap = malloc(need);
        if (heap == NULL)
            goto fail;
        b.p = heap;
        b.cap = need;
    }
    lb_head(&b, level, msg, (size_t)n);
    if (extra != NULL) {
        lb_raw(&b, ",", 1);
        lb_raw(&b, extra + 1, extralen - 2);
    }
    lb_raw(&b, "}\n", 2);
    if (b.over)
        goto fail;
    write_line(b.p, b.len);
    goto out;
fail:
    write_line(fallback_line, sizeof fallback_line - 1);
out:
    free(heap);
    free(extra);
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
