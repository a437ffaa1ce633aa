/* gateway/metrics.c - a small Prometheus registry: counters, gauges, histograms.
 *
 * The registry is a list of families (one per metric name: help, type,
 * histogram bounds), each with a list of series (one per label set), both in
 * registration order. The registry mutex is taken to register and to
 * render; updates touch only atomics: counters and gauges are one atomic
 * integer, a histogram has one atomic counter per bucket (not cumulative;
 * the render sums them) and its sum as the bits of a double updated with
 * compare-and-swap.
 *
 * Registration returns NULL for a bad name, a label string with a newline,
 * a name already registered with another type, or a histogram registered
 * again with other buckets; every update function ignores NULL.
 */
#include "gateway/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double gw_duration_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25,  0.5,    1,     2.5,  5,     10,   30};
const size_t gw_duration_buckets_n = sizeof gw_duration_buckets / sizeof gw_duration_buckets[0];

/* Longest bucket list accepted. */
#define MAX_BUCKETS 64

typedef enum metric_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM } metric_type;

struct gw_counter {
    _Atomic uint64_t value;       /* total so far */
};

struct gw_gauge {
    _Atomic int64_t value;        /* current value */
};

struct gw_histogram {
    size_t n;                     /* finite upper bounds */
    const double *bounds;         /* the family's bounds, ascending (n of them) */
    _Atomic uint64_t *counts;     /* n + 1 per-bucket counts, the last one for +Inf */
    _Atomic uint64_t sum_bits;    /* sum of observations: a double's bits */
};

/* One label set of a family. */
typedef struct series {
    char *labels;                 /* ready-made label text, "" for none */
    struct series *next;          /* next series of the family, registration order */
    union {
        gw_counter counter;
        gw_gauge gauge;
        gw_histogram histogram;
    } u;                          /* the value, per the family's type */
} series;

/* Every series of one metric name. */
typedef struct family {
    char *name;                   /* metric name */
    char *help;                   /* HELP text from the first registration */
    metric_type type;             /* counter, gauge or histogram */
    double *bounds;               /* histogram: ascending upper bounds */
    size_t nbounds;               /* histogram: how many */
    series *first, *last;         /* its series, registration order */
    struct family *next;          /* next family, registration order */
} family;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static family *families_first, *families_last;
static _Atomic uint64_t generation = 1; /* advanced by every gw_metrics_reset */

static bool valid_name(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != name && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static void free_family(family *f)
{
    series *s = f->first;
    while (s) {
        series *next = s->next;
        if (f->type == MT_HISTOGRAM)
            free(s->u.histogram.counts);
        free(s->labels);
        free(s);
        s = next;
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
}

/* Finds or creates the series (name, labels) of type t; call with
 * reg_lock held. Returns NULL on a conflict or out of memory. */
static series *get_series(const char *name, const char *help, const char *labels, metric_type t,
                          const double *bounds, size_t nbounds)
{
    family *f;
    series *s;
    if (!valid_name(name))
        return NULL;
    if (!labels)
        labels = "";
    if (strchr(labels, '\n'))
        return NULL;

    for (f = families_first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f) {
        if (f->type != t)
            return NULL;
        if (t == MT_HISTOGRAM &&
            (f->nbounds != nbounds || memcmp(f->bounds, bounds, nbounds * sizeof *bounds) != 0))
            return NULL;
        for (s = f->first; s; s = s->next)
            if (strcmp(s->labels, labels) == 0)
                return s;
    } else {
        f = calloc(1, sizeof *f);
        if (!f)
            return NULL;
        f->type = t;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        if (t == MT_HISTOGRAM) {
            f->bounds = malloc(nbounds * sizeof *bounds);
            if (f->bounds)
                memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
            f->nbounds = nbounds;
        }
        if (!f->name || !f->help || (t == MT_HISTOGRAM && !f->bounds)) {
            free_family(f);
            return NULL;
        }
        if (families_last)
            families_last->next = f;
        else
            families_first = f;
        families_last = f;
    }

    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->labels = strdup(labels);
    if (t == MT_HISTOGRAM) {
        s->u.histogram.n = f->nbounds;
        s->u.histogram.bounds = f->bounds;
        s->u.histogram.counts = calloc(f->nbounds + 1, sizeof *s->u.histogram.counts);
        if (!s->u.histogram.counts) {
            free(s->labels);
            free(s);
            return NULL;
        }
    }
    if (!s->labels) {
        free(s->u.histogram.counts);
        free(s);
        return NULL;
    }
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    return s;
}

gw_counter *gw_metrics_counter(const char *name, const char *help, const char *labels)
{
    pthread_mutex_lock(&reg_lock);
    series *s = get_series(name, help, labels, MT_COUNTER, NULL, 0);
    pthread_mutex_unlock(&reg_lock);
    return s ? &s->u.counter : NULL;
}

void gw_counter_add(gw_counter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

gw_gauge *gw_metrics_gauge(const char *name, const char *help, const char *labels)
{
    pthread_mutex_lock(&reg_lock);
    series *s = get_series(name, help, labels, MT_GAUGE, NULL, 0);
    pthread_mutex_unlock(&reg_lock);
    return s ? &s->u.gauge : NULL;
}

void gw_gauge_set(gw_gauge *g, int64_t v)
{
    if (g)
        atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

void gw_gauge_add(gw_gauge *g, int64_t delta)
{
    if (g)
        atomic_fetch_add_explicit(&g->value, delta, memory_order_relaxed);
}

gw_histogram *gw_metrics_histogram(const char *name, const char *help, const char *labels,
                                   const double *buckets, size_t n)
{
    if (!buckets || n == 0 || n > MAX_BUCKETS)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
            return NULL;
    pthread_mutex_lock(&reg_lock);
    series *s = get_series(name, help, labels, MT_HISTOGRAM, buckets, n);
    pthread_mutex_unlock(&reg_lock);
    return s ? &s->u.histogram : NULL;
}

void gw_histogram_observe(gw_histogram *h, double v)
{
    if (!h || isnan(v))
        return;
    size_t i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);

    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed), next;
    do {
        double d;
        memcpy(&d, &old, sizeof d);
        d += v;
        memcpy(&next, &d, sizeof next);
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, next,
                                                    memory_order_relaxed, memory_order_relaxed));
}

/* Formats d in the shortest form that reads back exactly; NaN, +Inf and
 * -Inf as Prometheus spells them. */
static void fmt_double(double d, char *out, size_t outlen)
{
    if (isnan(d)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(out, outlen, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* The fewest significant digits that read back exactly; at least 6 so
     * that %g keeps plain notation for 10, 30, 100000 like Go's 'g', -1. */
    int prec = 1;
    char tmp[40];
    for (; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    snprintf(out, outlen, "%.*g", prec < 6 ? 6 : prec, d);
}

/* Writes HELP text with backslash and newline escaped. */
static void put_help(FILE *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
}

/* Writes "{labels}" or "{labels,extra}" or "{extra}" or nothing. */
static void put_labels(FILE *out, const char *labels, const char *extra)
{
    bool has = labels && *labels;
    if (!has && !extra)
        return;
    fputc('{', out);
    if (has)
        fputs(labels, out);
    if (has && extra)
        fputc(',', out);
    if (extra)
        fputs(extra, out);
    fputc('}', out);
}

static void render_histogram(FILE *out, const family *f, const series *s)
{
    const gw_histogram *h = &s->u.histogram;
    char num[40], le[64];
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->n) {
            fmt_double(h->bounds[i], num, sizeof num);
            snprintf(le, sizeof le, "le=\"%s\"", num);
        } else {
            snprintf(le, sizeof le, "le=\"+Inf\"");
        }
        fprintf(out, "%s_bucket", f->name);
        put_labels(out, s->labels, le);
        fprintf(out, " %llu\n", (unsigned long long)cum);
    }
    uint64_t bits = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    double sum;
    memcpy(&sum, &bits, sizeof sum);
    fmt_double(sum, num, sizeof num);
    fprintf(out, "%s_sum", f->name);
    put_labels(out, s->labels, NULL);
    fprintf(out, " %s\n", num);
    fprintf(out, "%s_count", f->name);
    put_labels(out, s->labels, NULL);
    fprintf(out, " %llu\n", (unsigned long long)cum);
}

char *gw_metrics_render(size_t *len)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    if (!out)
        return NULL;

    pthread_mutex_lock(&reg_lock);
    for (const family *f = families_first; f; f = f->next) {
        fprintf(out, "# HELP %s ", f->name);
        put_help(out, f->help);
        fprintf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (const series *s = f->first; s; s = s->next) {
            switch (f->type) {
            case MT_COUNTER:
                fputs(f->name, out);
                put_labels(out, s->labels, NULL);
                fprintf(out, " %llu\n", (unsigned long long)atomic_load_explicit(
                                            &s->u.counter.value, memory_order_relaxed));
                break;
            case MT_GAUGE:
                fputs(f->name, out);
                put_labels(out, s->labels, NULL);
                fprintf(out, " %lld\n", (long long)atomic_load_explicit(&s->u.gauge.value,
                                                                        memory_order_relaxed));
                break;
            case MT_HISTOGRAM:
                render_histogram(out, f, s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&reg_lock);

    if (fclose(out) != 0) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = size;
    return buf;
}

int gw_metrics_escape(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    if (!out || outlen == 0)
        return -1;
    for (const char *p = in ? in : ""; *p; p++) {
        const char *rep = NULL;
        char one[2] = {*p, '\0'};
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        if (o + n + 1 > outlen) {
            out[0] = '\0';
            return -1;
        }
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

void gw_metrics_reset(void)
{
    pthread_mutex_lock(&reg_lock);
    family *f = families_first;
    while (f) {
        family *next = f->next;
        free_family(f);
        f = next;
    }
    families_first = families_last = NULL;
    atomic_fetch_add(&generation, 1);
    pthread_mutex_unlock(&reg_lock);
}

uint64_t gw_metrics_generation(void)
{
    return atomic_load_explicit(&generation, memory_order_acquire);
}
