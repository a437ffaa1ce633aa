/* tests/gateway/test_metrics.c - gateway/metrics.c: registry, math, Prometheus text. */
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/metrics.h"

static int teardown(void **state)
{
    (void)state;
    gw_metrics_reset();
    return 0;
}

/* Returns the value of the sample line starting with prefix + ' ', or NAN. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return NAN;
}

static size_t count_substr(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Checks text line by line against the text format 0.0.4: HELP then TYPE
 * once per name, samples only of the current family (with the histogram
 * suffixes), label syntax, numeric values, cumulative buckets ending in
 * +Inf equal to _count. Fails the test on the first bad line. */
static void check_exposition(const char *text)
{
    regex_t help_re, type_re, sample_re;
    const char *name = "[a-zA-Z_:][a-zA-Z0-9_:]*";
    const char *label = "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\\\\\"n])*\"";
    char pat[1024];
    snprintf(pat, sizeof pat, "^# HELP (%s) (.*)$", name);
    assert_int_equal(regcomp(&help_re, pat, REG_EXTENDED), 0);
    snprintf(pat, sizeof pat, "^# TYPE (%s) (counter|gauge|histogram)$", name);
    assert_int_equal(regcomp(&type_re, pat, REG_EXTENDED), 0);
    snprintf(pat, sizeof pat, "^(%s)(\\{%s(,%s)*\\})? ([^ ]+)$", name, label, label);
    assert_int_equal(regcomp(&sample_re, pat, REG_EXTENDED), 0);

    char family[128] = "", type[16] = "", seen[4096] = " ";
    char pending_help[128] = "";
    double last_bucket = -1;
    bool in_buckets = false;
    const char *p = text;
    assert_true(strlen(text) == 0 || text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        regmatch_t m[8];
        if (regexec(&help_re, line, 3, m, 0) == 0) {
            assert_string_equal(pending_help, "");
            snprintf(pending_help, sizeof pending_help, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
                     line + m[1].rm_so);
            char key[140];
            snprintf(key, sizeof key, " %s ", pending_help);
            if (strstr(seen, key))
                fail_msg("HELP for %s twice", pending_help);
            strncat(seen, key + 1, sizeof seen - strlen(seen) - 1);
            continue;
        }
        if (regexec(&type_re, line, 3, m, 0) == 0) {
            snprintf(family, sizeof family, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
                     line + m[1].rm_so);
            snprintf(type, sizeof type, "%.*s", (int)(m[2].rm_eo - m[2].rm_so), line + m[2].rm_so);
            assert_string_equal(family, pending_help); /* TYPE right after its HELP */
            pending_help[0] = '\0';
            continue;
        }
        if (regexec(&sample_re, line, 8, m, 0) != 0)
            fail_msg("not a valid exposition line: '%s'", line);
        assert_string_equal(pending_help, "");
        assert_string_not_equal(family, "");
        char sname[128];
        snprintf(sname, sizeof sname, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), line + m[1].rm_so);
        const char *value = strrchr(line, ' ') + 1;
        char *end;
        double v = strtod(value, &end);
        if (*end != '\0' && strcmp(value, "+Inf") != 0 && strcmp(value, "NaN") != 0)
            fail_msg("bad value in '%s'", line);
        if (strcmp(type, "histogram") != 0) {
            assert_string_equal(sname, family);
            continue;
        }
        size_t fl = strlen(family);
        assert_true(strncmp(sname, family, fl) == 0);
        const char *suffix = sname + fl;
        if (strcmp(suffix, "_bucket") == 0) {
            assert_non_null(strstr(line, "le=\""));
            if (!in_buckets)
                last_bucket = -1;
            in_buckets = true;
            assert_true(v >= last_bucket); /* cumulative */
            last_bucket = v;
        } else if (strcmp(suffix, "_sum") == 0) {
            assert_true(in_buckets); /* _sum follows the buckets */
        } else if (strcmp(suffix, "_count") == 0) {
            assert_float_equal(v, last_bucket, 0); /* +Inf bucket == _count */
            in_buckets = false;
        } else {
            fail_msg("unexpected histogram series '%s'", sname);
        }
    }
    assert_string_equal(pending_help, "");
    regfree(&help_re);
    regfree(&type_re);
    regfree(&sample_re);
}

static void test_counter_and_gauge_exact_text(void **state)
{
    (void)state;
    gw_counter *c = gw_metrics_counter("gw_requests_total", "HTTP requests answered.",
                                       "route=\"/leads\",status=\"200\"");
    gw_counter *c2 = gw_metrics_counter("gw_requests_total", "ignored second help",
                                        "route=\"/leads\",status=\"200\"");
    assert_non_null(c);
    assert_ptr_equal(c, c2);
    gw_counter_add(c, 3);
    gw_counter_add(c2, 2);
    gw_gauge *g = gw_metrics_gauge("gw_in_flight", "Requests in progress.", NULL);
    gw_gauge_set(g, 10);
    gw_gauge_add(g, -12);
    gw_counter *c3 = gw_metrics_counter("gw_requests_total", NULL, "route=\"/healthz\",status=\"200\"");
    gw_counter_add(c3, 1);

    size_t len = 0;
    char *text = gw_metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_string_equal(text, "# HELP gw_requests_total HTTP requests answered.\n"
                              "# TYPE gw_requests_total counter\n"
                              "gw_requests_total{route=\"/leads\",status=\"200\"} 5\n"
                              "gw_requests_total{route=\"/healthz\",status=\"200\"} 1\n"
                              "# HELP gw_in_flight Requests in progress.\n"
                              "# TYPE gw_in_flight gauge\n"
                              "gw_in_flight -2\n");
    check_exposition(text);
    free(text);
}

static void test_histogram_math(void **state)
{
    (void)state;
    gw_histogram *h = gw_metrics_histogram("gw_upstream_seconds", "SOAP call time.",
                                           "op=\"getLead\"", gw_duration_buckets,
                                           gw_duration_buckets_n);
    assert_non_null(h);
    assert_int_equal(gw_duration_buckets_n, 14);
    gw_histogram_observe(h, 0.0005);
    gw_histogram_observe(h, 0.001); /* le is inclusive */
    gw_histogram_observe(h, 0.003);
    gw_histogram_observe(h, 0.75);
    gw_histogram_observe(h, 100);
    gw_histogram_observe(h, NAN); /* ignored */

    char *text = gw_metrics_render(NULL);
    assert_non_null(text);
    check_exposition(text);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"0.001\"}"), 2, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"0.0025\"}"), 2,
                       0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"0.005\"}"), 3, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"0.5\"}"), 3, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"1\"}"), 4, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"30\"}"), 4, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_bucket{op=\"getLead\",le=\"+Inf\"}"), 5, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_count{op=\"getLead\"}"), 5, 0);
    assert_float_equal(sample(text, "gw_upstream_seconds_sum{op=\"getLead\"}"), 100.7545, 1e-9);
    /* every bound appears, spelled as Prometheus does */
    assert_int_equal(count_substr(text, "_bucket{"), 15);
    assert_non_null(strstr(text, "le=\"0.1\""));
    assert_non_null(strstr(text, "le=\"2.5\""));
    assert_non_null(strstr(text, "le=\"10\""));
    assert_non_null(strstr(text, "# TYPE gw_upstream_seconds histogram\n"));
    free(text);
}

static void test_histogram_without_labels(void **state)
{
    (void)state;
    const double b[] = {1, 2};
    gw_histogram *h = gw_metrics_histogram("plain_seconds", "x", NULL, b, 2);
    gw_histogram_observe(h, 1.5);
    char *text = gw_metrics_render(NULL);
    assert_string_equal(text, "# HELP plain_seconds x\n"
                              "# TYPE plain_seconds histogram\n"
                              "plain_seconds_bucket{le=\"1\"} 0\n"
                              "plain_seconds_bucket{le=\"2\"} 1\n"
                              "plain_seconds_bucket{le=\"+Inf\"} 1\n"
                              "plain_seconds_sum 1.5\n"
                              "plain_seconds_count 1\n");
    check_exposition(text);
    free(text);
}

static void test_label_sets_grouped(void **state)
{
    (void)state;
    gw_counter *a = gw_metrics_counter("grp_total", "Grouped.", "k=\"a\"");
    gw_gauge *other = gw_metrics_gauge("other_gauge", "Between.", NULL);
    gw_counter *b = gw_metrics_counter("grp_total", "Grouped.", "k=\"b\"");
    gw_histogram *h1 = gw_metrics_histogram("lat_seconds", "L.", "r=\"1\"", gw_duration_buckets,
                                            gw_duration_buckets_n);
    gw_histogram *h2 = gw_metrics_histogram("lat_seconds", "L.", "r=\"2\"", gw_duration_buckets,
                                            gw_duration_buckets_n);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(other);
    assert_non_null(h1);
    assert_non_null(h2);
    assert_ptr_not_equal(h1, h2);
    gw_counter_add(a, 1);
    gw_counter_add(b, 2);
    gw_histogram_observe(h2, 0.2);
    char *text = gw_metrics_render(NULL);
    check_exposition(text);
    assert_int_equal(count_substr(text, "# HELP grp_total"), 1);
    assert_int_equal(count_substr(text, "# TYPE lat_seconds"), 1);
    /* both grp_total series sit under their HELP, before other_gauge */
    char *ha = strstr(text, "grp_total{k=\"a\"} 1\n"), *hb = strstr(text, "grp_total{k=\"b\"} 2\n");
    char *og = strstr(text, "# HELP other_gauge");
    assert_non_null(ha);
    assert_non_null(hb);
    assert_true(ha < og && hb < og);
    assert_float_equal(sample(text, "lat_seconds_count{r=\"1\"}"), 0, 0);
    assert_float_equal(sample(text, "lat_seconds_count{r=\"2\"}"), 1, 0);
    free(text);
}

static void test_conflicts_and_bad_input(void **state)
{
    (void)state;
    const double b1[] = {1, 2}, b2[] = {1, 3}, bad[] = {2, 1};
    assert_non_null(gw_metrics_counter("x_total", "x", NULL));
    assert_null(gw_metrics_gauge("x_total", "x", NULL));          /* type clash */
    assert_null(gw_metrics_histogram("x_total", "x", NULL, b1, 2));
    assert_non_null(gw_metrics_histogram("h_seconds", "h", NULL, b1, 2));
    assert_null(gw_metrics_histogram("h_seconds", "h", "a=\"1\"", b2, 2)); /* other buckets */
    assert_null(gw_metrics_histogram("h2_seconds", "h", NULL, bad, 2));    /* not ascending */
    assert_null(gw_metrics_histogram("h3_seconds", "h", NULL, b1, 0));
    assert_null(gw_metrics_counter("9starts_with_digit", "x", NULL));
    assert_null(gw_metrics_counter("has-dash", "x", NULL));
    assert_null(gw_metrics_counter("", "x", NULL));
    assert_null(gw_metrics_counter("nl_total", "x", "a=\"1\n\""));
    /* updates through NULL are ignored */
    gw_counter_add(NULL, 1);
    gw_gauge_set(NULL, 1);
    gw_gauge_add(NULL, 1);
    gw_histogram_observe(NULL, 1);
    char *text = gw_metrics_render(NULL);
    check_exposition(text);
    free(text);
}

static void test_help_escaping(void **state)
{
    (void)state;
    gw_counter_add(gw_metrics_counter("esc_total", "back\\slash and\nnewline", NULL), 1);
    char *text = gw_metrics_render(NULL);
    assert_non_null(strstr(text, "# HELP esc_total back\\\\slash and\\nnewline\n"));
    check_exposition(text);
    free(text);
}

static void test_escape(void **state)
{
    (void)state;
    char out[64], small[6];
    assert_int_equal(gw_metrics_escape("a\"b\\c\nd", out, sizeof out), 0);
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    assert_int_equal(gw_metrics_escape("plain", small, sizeof small), 0);
    assert_string_equal(small, "plain");
    assert_int_equal(gw_metrics_escape("plain!", small, sizeof small), -1);
    assert_int_equal(gw_metrics_escape("ab\"c", small, 5), -1);

    /* an escaped value makes a valid label */
    char labels[128];
    assert_int_equal(gw_metrics_escape("/leads\"x\n", out, sizeof out), 0);
    snprintf(labels, sizeof labels, "route=\"%s\"", out);
    gw_counter_add(gw_metrics_counter("escaped_total", "e", labels), 1);
    char *text = gw_metrics_render(NULL);
    check_exposition(text);
    free(text);
}

static void test_reset(void **state)
{
    (void)state;
    gw_counter_add(gw_metrics_counter("gone_total", "g", NULL), 5);
    gw_metrics_reset();
    char *text = gw_metrics_render(NULL);
    assert_string_equal(text, "");
    free(text);
    gw_counter *c = gw_metrics_counter("gone_total", "g", NULL);
    text = gw_metrics_render(NULL);
    assert_non_null(strstr(text, "gone_total 0\n"));
    free(text);
    gw_counter_add(c, 1);
}

/* ---- concurrency -------------------------------------------------------- */

#define PER_THREAD 100000

static void *hammer(void *arg)
{
    (void)arg;
    gw_counter *c = gw_metrics_counter("conc_total", "c", "t=\"x\"");
    gw_gauge *g = gw_metrics_gauge("conc_gauge", "g", NULL);
    gw_histogram *h =
        gw_metrics_histogram("conc_seconds", "h", NULL, gw_duration_buckets, gw_duration_buckets_n);
    for (int i = 0; i < PER_THREAD; i++) {
        gw_counter_add(c, 1);
        gw_gauge_add(g, (i & 1) ? -1 : 2);
        gw_histogram_observe(h, 0.5);
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = gw_metrics_render(NULL);
    check_exposition(text);
    assert_float_equal(sample(text, "conc_total{t=\"x\"}"), 4.0 * PER_THREAD, 0);
    assert_float_equal(sample(text, "conc_gauge"), 4.0 * PER_THREAD / 2, 0);
    assert_float_equal(sample(text, "conc_seconds_count"), 4.0 * PER_THREAD, 0);
    assert_float_equal(sample(text, "conc_seconds_bucket{le=\"0.5\"}"), 4.0 * PER_THREAD, 0);
    assert_float_equal(sample(text, "conc_seconds_bucket{le=\"0.25\"}"), 0, 0);
    assert_float_equal(sample(text, "conc_seconds_sum"), 0.5 * 4 * PER_THREAD, 1e-6);
    assert_int_equal(count_substr(text, "# HELP conc_total"), 1);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counter_and_gauge_exact_text, teardown),
        cmocka_unit_test_teardown(test_histogram_math, teardown),
        cmocka_unit_test_teardown(test_histogram_without_labels, teardown),
        cmocka_unit_test_teardown(test_label_sets_grouped, teardown),
        cmocka_unit_test_teardown(test_conflicts_and_bad_input, teardown),
        cmocka_unit_test_teardown(test_help_escaping, teardown),
        cmocka_unit_test_teardown(test_escape, teardown),
        cmocka_unit_test_teardown(test_reset, teardown),
        cmocka_unit_test_teardown(test_concurrent_updates, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
