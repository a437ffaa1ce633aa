/* tests/gateway/test_log.c - gateway/log.c: JSON lines, level filtering, redaction;
 * gateway/log_batch.c: batched lines whole and in order per thread, a stderr
 * that does not drain never blocks a logging thread. */
#include <ctype.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/log.h"
#include "gateway/log_batch.h"

/* A capture of log output: an open_memstream the logger writes to. */
typedef struct capture {
    FILE *f;                      /* the stream handed to gw_log_set_output */
    char *buf;                    /* its buffer */
    size_t len;                   /* its length */
} capture;

static void cap_start(capture *c)
{
    memset(c, 0, sizeof *c);
    c->f = open_memstream(&c->buf, &c->len);
    assert_non_null(c->f);
    gw_log_set_output(c->f);
}

/* Stops capturing; c->buf then holds everything written. */
static void cap_stop(capture *c)
{
    gw_log_set_output(NULL);
    fclose(c->f);
    c->f = NULL;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int teardown(void **state)
{
    (void)state;
    gw_log_min_level = GW_LOG_INFO;
    return 0;
}

static void test_json_line_with_control_chars(void **state)
{
    (void)state;
    capture c;
    const char *nasty = "a\r\nb\"c\x01\\d\te";
    cap_start(&c);
    gw_log_emit(GW_LOG_WARN, json_pack("{s:s, s:i}", "path", nasty, "status", 400), "got %s!",
                nasty);
    cap_stop(&c);

    /* exactly one line: no raw CR or LF inside it */
    assert_int_equal(count_lines(c.buf), 1);
    assert_int_equal(c.buf[c.len - 1], '\n');
    assert_null(strchr(c.buf, '\r'));
    for (size_t i = 0; i + 1 < c.len; i++)
        assert_false(iscntrl((unsigned char)c.buf[i]));

    json_error_t jerr;
    json_t *j = json_loads(c.buf, 0, &jerr);
    if (!j)
        fail_msg("not JSON: %s: %s", jerr.text, c.buf);
    char want[64];
    snprintf(want, sizeof want, "got %s!", nasty);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), want);
    assert_string_equal(json_string_value(json_object_get(j, "path")), nasty);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 400);

    /* ts: RFC 3339 UTC with milliseconds, e.g. 2024-05-01T12:34:56.789Z */
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            assert_true(isdigit((unsigned char)ts[i]));
        else
            assert_int_equal(ts[i], shape[i]);
    }
    json_decref(j);
    free(c.buf);
}

static void test_fields_cannot_override_core_keys(void **state)
{
    (void)state;
    capture c;
    cap_start(&c);
    gw_log_emit(GW_LOG_INFO, json_pack("{s:s, s:s, s:s}", "msg", "forged", "level", "debug", "ts",
                                       "yesterday"),
                "real");
    gw_log_emit(GW_LOG_ERROR, NULL, "no fields");
    cap_stop(&c);
    assert_int_equal(count_lines(c.buf), 2);
    json_t *j = json_loadb(c.buf, strchr(c.buf, '\n') - c.buf, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "real");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_not_equal(json_string_value(json_object_get(j, "ts")), "yesterday");
    json_decref(j);
    j = json_loads(strchr(c.buf, '\n') + 1, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    json_decref(j);
    free(c.buf);
}

static void test_invalid_utf8_and_long_message(void **state)
{
    (void)state;
    capture c;
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    cap_start(&c);
    gw_log_emit(GW_LOG_INFO, NULL, "bad bytes \xff\xfe \xc3 end");
    gw_log_emit(GW_LOG_INFO, NULL, "%s", big);
    cap_stop(&c);
    assert_int_equal(count_lines(c.buf), 2);
    char *nl = strchr(c.buf, '\n');
    json_t *j = json_loadb(c.buf, (size_t)(nl - c.buf), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad bytes ?? ? end");
    json_decref(j);
    j = json_loads(nl + 1, 0, NULL);
    assert_non_null(j);
    const char *msg = json_string_value(json_object_get(j, "msg"));
    assert_true(strlen(msg) < 10000);
    assert_true(strlen(msg) > 1000);
    assert_string_equal(msg + strlen(msg) - 3, "...");
    json_decref(j);
    free(c.buf);
    free(big);
}

static int evaluated;

static int count_me(void)
{
    return ++evaluated;
}

static json_t *fields_counted(void)
{
    evaluated += 100;
    return json_pack("{s:i}", "n", evaluated);
}

static void test_level_filter_skips_arguments(void **state)
{
    (void)state;
    capture c;
    evaluated = 0;
    gw_log_min_level = GW_LOG_WARN;
    cap_start(&c);
    GW_LOG(GW_LOG_DEBUG, fields_counted(), "debug %d", count_me());
    GW_LOG(GW_LOG_INFO, fields_counted(), "info %d", count_me());
    assert_int_equal(evaluated, 0);
    GW_LOG(GW_LOG_WARN, fields_counted(), "warn %d", count_me());
    GW_LOG(GW_LOG_ERROR, NULL, "error %d", count_me());
    cap_stop(&c);
    assert_int_equal(evaluated, 102);
    assert_int_equal(count_lines(c.buf), 2);
    assert_null(strstr(c.buf, "\"debug"));
    assert_null(strstr(c.buf, "info "));
    assert_non_null(strstr(c.buf, "\"level\":\"warn\""));
    assert_non_null(strstr(c.buf, "\"level\":\"error\""));
    free(c.buf);
}

static void test_level_parse(void **state)
{
    (void)state;
    int lvl = -1;
    assert_int_equal(gw_log_level_parse("debug", &lvl), 0);
    assert_int_equal(lvl, GW_LOG_DEBUG);
    assert_int_equal(gw_log_level_parse("info", &lvl), 0);
    assert_int_equal(lvl, GW_LOG_INFO);
    assert_int_equal(gw_log_level_parse("warn", &lvl), 0);
    assert_int_equal(lvl, GW_LOG_WARN);
    assert_int_equal(gw_log_level_parse("error", &lvl), 0);
    assert_int_equal(lvl, GW_LOG_ERROR);
    assert_int_equal(gw_log_level_parse("verbose", &lvl), -1);
    assert_int_equal(gw_log_level_parse(NULL, &lvl), -1);
}

static void test_redact(void **state)
{
    (void)state;
    char a[13], b[13], c[13];
    gw_log_redact("joe@marketo.com", a);
    gw_log_redact("joe@marketo.com", b);
    gw_log_redact("joe@marketo.con", c);
    assert_int_equal(strlen(a), 12);
    for (int i = 0; i < 12; i++)
        assert_true(isxdigit((unsigned char)a[i]) && !isupper((unsigned char)a[i]));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    /* salted: the empty value must not give plain SHA-256("")'s e3b0c44298fc */
    char e[13];
    gw_log_redact("", e);
    assert_string_not_equal(e, "e3b0c44298fc");
    gw_log_redact(NULL, c);
    assert_string_equal(c, e);
}

/* gw_log_emit_fields (the access log's path, no jansson): hostile string
 * values still give one valid JSON line with the right values. */
static void test_fields_fast_path_hostile_values(void **state)
{
    (void)state;
    capture c;
    const char *nasty = "a\r\nb\"c\x01\x1f\x7f\\d\te/\xc3\xa9\xe2\x82\xac";
    const char *bad_utf8 = "x\xff\xfe\xc3 \xed\xa0\x80\xf4\x90\x80\x80y";
    gw_log_field f[] = {
        {"request_id", GW_LF_STR, nasty, 0},
        {"bad", GW_LF_STR, bad_utf8, 0},
        {"msg", GW_LF_STR, "forged", 0},        /* core keys are skipped */
        {"missing", GW_LF_STR, NULL, 0},        /* NULL string: left out */
        {"status", GW_LF_INT, NULL, 200},
        {"neg", GW_LF_INT, NULL, INT64_MIN},
        {"zero", GW_LF_INT, NULL, 0},
        {"aborted", GW_LF_BOOL, NULL, 1},
        {"k\"ey\n", GW_LF_BOOL, NULL, 0},      /* keys are escaped too */
    };
    cap_start(&c);
    gw_log_emit_fields(GW_LOG_INFO, f, sizeof f / sizeof f[0], "req\"uest\n");
    cap_stop(&c);

    assert_int_equal(count_lines(c.buf), 1);
    assert_int_equal(c.buf[c.len - 1], '\n');
    for (size_t i = 0; i + 1 < c.len; i++)
        assert_false(iscntrl((unsigned char)c.buf[i]));
    json_error_t jerr;
    json_t *j = json_loads(c.buf, 0, &jerr);
    if (!j)
        fail_msg("not JSON: %s: %s", jerr.text, c.buf);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "req\"uest\n");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), nasty);
    assert_string_equal(json_string_value(json_object_get(j, "bad")), "x??? ???????y");
    assert_null(json_object_get(j, "missing"));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_integer_value(json_object_get(j, "neg")) == INT64_MIN);
    assert_int_equal(json_integer_value(json_object_get(j, "zero")), 0);
    assert_true(json_is_true(json_object_get(j, "aborted")));
    assert_true(json_is_false(json_object_get(j, "k\"ey\n")));
    assert_int_equal(json_object_size(j), 10); /* ts, level, msg + 7 fields */
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[23], 'Z');
    json_decref(j);
    /* member order: ts, level, msg, then the fields as given */
    assert_true(strncmp(c.buf, "{\"ts\":", 6) == 0);
    assert_true(strstr(c.buf, "\"level\"") < strstr(c.buf, "\"msg\""));
    assert_true(strstr(c.buf, "\"msg\"") < strstr(c.buf, "\"request_id\""));
    assert_true(strstr(c.buf, "\"status\"") < strstr(c.buf, "\"aborted\""));
    free(c.buf);
}

/* A long value takes the heap path and still comes out whole. */
static void test_fields_fast_path_long_value(void **state)
{
    (void)state;
    capture c;
    char *big = malloc(5001);
    assert_non_null(big);
    for (int i = 0; i < 5000; i++)
        big[i] = (char)(i % 3 == 0 ? '\n' : 'q');
    big[5000] = '\0';
    gw_log_field f[] = {{"v", GW_LF_STR, big, 0}};
    cap_start(&c);
    gw_log_emit_fields(GW_LOG_WARN, f, 1, "long");
    cap_stop(&c);
    assert_int_equal(count_lines(c.buf), 1);
    json_t *j = json_loads(c.buf, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "v")), big);
    json_decref(j);
    free(c.buf);
    free(big);
}

/* ---- several threads ---------------------------------------------------- */

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 200; i++)
        gw_log_emit(GW_LOG_INFO, json_pack("{s:i, s:i}", "thread", id, "i", i),
                    "line %d of thread %d with\nnewline", i, id);
    return NULL;
}

static void test_threads_do_not_mix_lines(void **state)
{
    (void)state;
    capture c;
    pthread_t t[4];
    cap_start(&c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cap_stop(&c);
    assert_int_equal(count_lines(c.buf), 800);
    char *p = c.buf;
    int per_thread[4] = {0};
    while (*p) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);
        assert_non_null(j);
        int id = (int)json_integer_value(json_object_get(j, "thread"));
        assert_true(id >= 0 && id < 4);
        per_thread[id]++;
        json_decref(j);
        p = nl + 1;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(per_thread[i], 200);
    free(c.buf);
}

/* ---- batching (log_batch.c) ------------------------------------------------- */

/* stderr turned into a pipe for a test: what was written, read back. */
typedef struct errpipe {
    int saved;          /* the real fd 2 */
    int rd;             /* read end */
    pthread_t reader;   /* drains rd into buf (when started) */
    char *buf;          /* everything read */
    size_t len, cap;    /* its length and size */
} errpipe;

static void *pipe_reader(void *arg)
{
    errpipe *p = arg;
    char chunk[65536];
    for (;;) {
        ssize_t n = read(p->rd, chunk, sizeof chunk);
        if (n <= 0)
            return NULL;
        if (p->len + (size_t)n + 1 > p->cap) {
            p->cap = (p->len + (size_t)n + 1) * 2;
            p->buf = realloc(p->buf, p->cap);
            assert_non_null(p->buf);
        }
        memcpy(p->buf + p->len, chunk, (size_t)n);
        p->len += (size_t)n;
        p->buf[p->len] = '\0';
    }
}

/* Makes fd 2 the write end of a new pipe. */
static void errpipe_open(errpipe *p)
{
    int fds[2];
    memset(p, 0, sizeof *p);
    assert_int_equal(pipe(fds), 0);
    p->saved = dup(STDERR_FILENO);
    assert_true(p->saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    close(fds[1]);
    p->rd = fds[0];
}

static void errpipe_start_reader(errpipe *p)
{
    assert_int_equal(pthread_create(&p->reader, NULL, pipe_reader, p), 0);
}

/* Puts the real stderr back and reads what is left (reader started). */
static void errpipe_close(errpipe *p)
{
    dup2(p->saved, STDERR_FILENO);
    close(p->saved);
    pthread_join(p->reader, NULL);
    close(p->rd);
}

/* Checks every line of buf: valid JSON with "t" and "i"; per thread t the
 * values of i strictly increase. Returns the number of lines. */
static size_t check_lines_in_order(const char *buf, int nthreads)
{
    long last[16];
    size_t lines = 0;
    for (int t = 0; t < 16; t++)
        last[t] = -1;
    const char *p = buf;
    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_error_t e;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &e);
        assert_non_null(o);
        json_int_t t = json_integer_value(json_object_get(o, "t"));
        json_int_t i = json_integer_value(json_object_get(o, "i"));
        assert_true(t >= 0 && t < nthreads);
        assert_true(i > last[t]);
        last[t] = (long)i;
        json_decref(o);
        lines++;
        p = nl + 1;
    }
    return lines;
}

#define BATCH_LINES 3000

static void *batch_writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < BATCH_LINES; i++)
        GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:i}", "t", t, "i", i), "batched line");
    return NULL;
}

static void test_batched_lines_whole_and_in_order(void **state)
{
    (void)state;
    errpipe p;
    errpipe_open(&p);
    errpipe_start_reader(&p);
    assert_int_equal(gw_logb_start(), 0);
    uint64_t dropped = gw_logb_dropped();
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, batch_writer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    gw_logb_stop();
    errpipe_close(&p);
    /* a burst far faster than a pipe drains may drop lines (counted), never
     * cut, mix or reorder them */
    size_t got = check_lines_in_order(p.buf, 4);
    assert_true(got > 0);
    assert_int_equal(got + (size_t)(gw_logb_dropped() - dropped), 4 * BATCH_LINES);
    free(p.buf);
}

static void test_lines_go_out_without_stop(void **state)
{
    (void)state;
    errpipe p;
    errpipe_open(&p);
    errpipe_start_reader(&p);
    assert_int_equal(gw_logb_start(), 0);
    GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:i}", "t", 0, "i", 1), "one line");
    /* the flusher writes it within a few ms; wait up to 5 s, no stop */
    for (int k = 0; k < 500 && strstr(p.buf ? p.buf : "", "one line") == NULL; k++)
        usleep(10000);
    assert_non_null(strstr(p.buf ? p.buf : "", "one line"));
    gw_logb_stop();
    errpipe_close(&p);
    free(p.buf);
}

static void test_stuck_stderr_never_blocks(void **state)
{
    (void)state;
    errpipe p;
    errpipe_open(&p); /* nobody reads: the pipe fills at 64 KiB */
    assert_int_equal(gw_logb_start(), 0);
    uint64_t dropped = gw_logb_dropped();
    /* ~5 MB of lines into a pipe nobody reads: a logging thread that waited
     * for stderr would hang here (and the test would time out) */
    for (int i = 0; i < 50000; i++)
        GW_LOG(GW_LOG_INFO, json_pack("{s:i, s:i}", "t", 0, "i", i), "stuck line");
    assert_true(gw_logb_dropped() > dropped);
    errpipe_start_reader(&p); /* now drain: the flusher gets unstuck */
    gw_logb_stop();
    errpipe_close(&p);
    size_t got = check_lines_in_order(p.buf, 1);
    assert_true(got > 0);
    assert_int_equal(got + (size_t)(gw_logb_dropped() - dropped), 50000);
    free(p.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_json_line_with_control_chars, teardown),
        cmocka_unit_test_teardown(test_fields_cannot_override_core_keys, teardown),
        cmocka_unit_test_teardown(test_invalid_utf8_and_long_message, teardown),
        cmocka_unit_test_teardown(test_level_filter_skips_arguments, teardown),
        cmocka_unit_test_teardown(test_level_parse, teardown),
        cmocka_unit_test_teardown(test_redact, teardown),
        cmocka_unit_test_teardown(test_threads_do_not_mix_lines, teardown),
        cmocka_unit_test_teardown(test_fields_fast_path_hostile_values, teardown),
        cmocka_unit_test_teardown(test_fields_fast_path_long_value, teardown),
        cmocka_unit_test_teardown(test_batched_lines_whole_and_in_order, teardown),
        cmocka_unit_test_teardown(test_lines_go_out_without_stop, teardown),
        cmocka_unit_test_teardown(test_stuck_stderr_never_blocks, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
