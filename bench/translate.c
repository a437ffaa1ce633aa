/* bench/translate.c - SOAP helpers and the translation benchmark of bench/run.
 *
 * Modes:
 *   translate envelope-get --user U --key K (--email E | --list NAME) [--batch N]
 *       Writes a freshly signed getMultipleLeads envelope to stdout: the
 *       request the gateway sends for GET /leads?email=E (LeadKeySelector,
 *       EMAIL, one key, batchSize 1000, every attribute), or a
 *       StaticListSelector page of --batch leads.
 *   translate envelope-sync --user U --key K --prefix P --first I --count N
 *       Writes a signed syncMultipleLeads envelope (dedup on) of N new leads
 *       P<i>@example.com, i = I..I+N-1, with the attributes bench/run's
 *       sync body gives them (FirstName First<i>, LastName Last<i>,
 *       Company "Company <i % 100>").
 *   translate bench FILE [--iters N] [--only parse|translate]
 *       Times, over the getMultipleLeads response in FILE, (a) libxml2's bare
 *       parse (xmlReadMemory + xmlFreeDoc) and (b) the gateway's translation
 *       (soap_parse_get_multiple_leads, gw_lead_to_json per lead into
 *       {"leads": [...], "remaining": n, "next_cursor": null}, json_dumps,
 *       frees). Prints one JSON object. --only runs one side (for callgrind,
 *       whose --toggle-collect=bench_parse_once / bench_translate_once then
 *       counts exactly one side's instructions).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "gateway/leads/leadjson.h"
#include "soap/soap.h"

#define TR_MAX_FILE (256u << 20) /* largest response file read */
#define TR_MAX_ITERS 1000000L    /* --iters bound */

/* Command-line options of every mode. */
typedef struct tr_opts {
    const char *user;    /* --user */
    const char *key;     /* --key */
    const char *email;   /* --email */
    const char *list;    /* --list */
    const char *prefix;  /* --prefix */
    const char *only;    /* --only */
    const char *file;    /* positional FILE of bench */
    long batch;          /* --batch */
    long first;          /* --first */
    long count;          /* --count */
    long iters;          /* --iters */
} tr_opts;

/* Kept non-static and out of line so callgrind can name them. */
int bench_parse_once(const char *buf, size_t len);
size_t bench_translate_once(const char *buf, size_t len);

/* Parses a decimal in [lo, hi]; returns 0 or -1. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Monotonic clock in nanoseconds. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Writes len bytes of buf to stdout; returns 0 or -1. */
static int write_out(const char *buf, size_t len)
{
    if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
        return -1;
    return 0;
}

/* Reads a whole file into a malloc'd buffer; returns 0 or -1. */
static int read_file(const char *path, char **out, size_t *len)
{
    int rc = -1;
    char *buf = NULL;
    size_t cap = 1u << 20, n = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        goto out;
    buf = malloc(cap);
    if (buf == NULL)
        goto out;
    for (;;) {
        if (n == cap) {
            if (cap >= TR_MAX_FILE)
                goto out;
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                goto out;
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        goto out;
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Prints a signed getMultipleLeads envelope; returns the exit status. */
static int cmd_envelope_get(const tr_opts *o)
{
    soap_auth auth = {.user_id = o->user, .encryption_key = o->key, .timestamp = NULL};
    mkto_query p;
    const char *keys[1];
    char *env = NULL;
    size_t len = 0;
    soap_err err = {0};

    memset(&p, 0, sizeof p);
    if (o->email != NULL) {
        keys[0] = o->email;
        p.kind = MKTO_SEL_KEYS;
        p.key_type = MKTO_KEY_EMAIL;
        p.keys = keys;
        p.nkeys = 1;
        p.batch_size = SOAP_MAX_BATCH_SIZE;
    } else {
        p.kind = MKTO_SEL_STATIC_LIST;
        p.list_name = o->list;
        p.batch_size = (int)o->batch;
    }
    if (soap_build_get_multiple_leads(&auth, &p, &env, &len, &err) != SOAP_OK) {
        fprintf(stderr, "translate: cannot build envelope: %s\n", err.msg);
        return 1;
    }
    int rc = write_out(env, len) == 0 ? 0 : 1;
    free(env);
    return rc;
}

/* Prints a signed syncMultipleLeads envelope of o->count new leads;
 * returns the exit status. */
static int cmd_envelope_sync(const tr_opts *o)
{
    enum { NATTR = 3 };
    soap_auth auth = {.user_id = o->user, .encryption_key = o->key, .timestamp = NULL};
    size_t n = (size_t)o->count;
    mkto_lead *leads = calloc(n, sizeof *leads);
    mkto_attr *attrs = calloc(n * NATTR, sizeof *attrs);
    char *strings = calloc(n, 4 * 96);
    char *env = NULL;
    size_t len = 0;
    soap_err err = {0};
    int rc = 1;

    if (leads == NULL || attrs == NULL || strings == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        long idx = o->first + (long)i;
        char *s = strings + i * 4 * 96;
        snprintf(s, 96, "%s%ld@example.com", o->prefix, idx);
        snprintf(s + 96, 96, "First%ld", idx);
        snprintf(s + 192, 96, "Last%ld", idx);
        snprintf(s + 288, 96, "Company %ld", idx % 100);
        mkto_attr *a = attrs + i * NATTR;
        a[0] = (mkto_attr){.name = (char *)"FirstName", .type = NULL, .value = s + 96};
        a[1] = (mkto_attr){.name = (char *)"LastName", .type = NULL, .value = s + 192};
        a[2] = (mkto_attr){.name = (char *)"Company", .type = NULL, .value = s + 288};
        leads[i].email = s;
        leads[i].attrs = a;
        leads[i].nattrs = NATTR;
    }
    if (soap_build_sync_multiple_leads(&auth, leads, n, true, &env, &len, &err) != SOAP_OK) {
        fprintf(stderr, "translate: cannot build envelope: %s\n", err.msg);
        goto out;
    }
    rc = write_out(env, len) == 0 ? 0 : 1;
out:
    free(env);
    free(strings);
    free(attrs);
    free(leads);
    return rc;
}

/* One bare libxml2 parse of buf into a tree, then frees it. Returns 0 or -1. */
__attribute__((noinline)) int bench_parse_once(const char *buf, size_t len)
{
    xmlDocPtr doc = xmlReadMemory(buf, (int)len, NULL, NULL, XML_PARSE_NONET);
    if (doc == NULL)
        return -1;
    xmlFreeDoc(doc);
    return 0;
}

/* One translation of buf into the gateway's JSON page, then frees it.
 * Returns the length of the JSON text, 0 on failure. */
__attribute__((noinline)) size_t bench_translate_once(const char *buf, size_t len)
{
    mkto_leads res;
    mkto_fault fault;
    soap_err err;
    json_t *page = NULL, *arr = NULL;
    char *text = NULL;
    size_t out = 0;

    memset(&res, 0, sizeof res);
    memset(&fault, 0, sizeof fault);
    memset(&err, 0, sizeof err);
    if (soap_parse_get_multiple_leads(buf, len, 0, &res, &fault, &err) != SOAP_OK)
        goto out;
    arr = json_array();
    if (arr == NULL)
        goto out;
    for (size_t i = 0; i < res.nleads; i++)
        if (json_array_append_new(arr, gw_lead_to_json(&res.leads[i])) != 0)
            goto out;
    page = json_pack("{s:o, s:i, s:n}", "leads", arr, "remaining", res.remaining_count, "next_cursor");
    arr = NULL; /* owned by page (json_pack steals "o" even on failure) */
    if (page == NULL)
        goto out;
    text = json_dumps(page, JSON_COMPACT);
    if (text != NULL)
        out = strlen(text);
out:
    free(text);
    json_decref(page);
    json_decref(arr);
    mkto_leads_clear(&res);
    mkto_fault_clear(&fault);
    return out;
}

/* Compares two int64 for qsort. */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Runs the timing loops and prints the JSON summary; returns the exit status. */
static int cmd_bench(const tr_opts *o)
{
    char *buf = NULL;
    size_t len = 0, json_len = 0, nleads = 0, nattrs = 0;
    int64_t *tp = NULL, *tt = NULL;
    long n = o->iters;
    bool do_parse = o->only == NULL || strcmp(o->only, "parse") == 0;
    bool do_tr = o->only == NULL || strcmp(o->only, "translate") == 0;
    int rc = 1;

    if (read_file(o->file, &buf, &len) < 0) {
        fprintf(stderr, "translate: cannot read %s\n", o->file);
        return 1;
    }
    /* Check the input once: a 200 getMultipleLeads page, and count it. */
    {
        mkto_leads res;
        mkto_fault fault;
        soap_err err;
        memset(&res, 0, sizeof res);
        memset(&fault, 0, sizeof fault);
        memset(&err, 0, sizeof err);
        int prc = soap_parse_get_multiple_leads(buf, len, 0, &res, &fault, &err);
        nleads = res.nleads;
        for (size_t i = 0; i < res.nleads; i++)
            nattrs += res.leads[i].nattrs;
        mkto_leads_clear(&res);
        mkto_fault_clear(&fault);
        if (prc != SOAP_OK) {
            fprintf(stderr, "translate: %s is not a getMultipleLeads response\n", o->file);
            goto out;
        }
    }
    tp = calloc((size_t)n + 1, sizeof *tp);
    tt = calloc((size_t)n + 1, sizeof *tt);
    if (tp == NULL || tt == NULL)
        goto out;
    /* Interleave the two sides so that a noisy neighbour hits both alike. */
    for (long i = 0; i < n; i++) {
        if (do_parse) {
            int64_t t0 = now_ns();
            if (bench_parse_once(buf, len) < 0)
                goto out;
            tp[i] = now_ns() - t0;
        }
        if (do_tr) {
            int64_t t0 = now_ns();
            json_len = bench_translate_once(buf, len);
            if (json_len == 0)
                goto out;
            tt[i] = now_ns() - t0;
        }
    }
    int64_t sp = 0, st = 0;
    for (long i = 0; i < n; i++) {
        sp += tp[i];
        st += tt[i];
    }
    qsort(tp, (size_t)n, sizeof *tp, cmp_i64);
    qsort(tt, (size_t)n, sizeof *tt, cmp_i64);
    double mp = n > 0 ? (double)tp[n / 2] / 1e6 : 0, mt = n > 0 ? (double)tt[n / 2] / 1e6 : 0;
    printf("{\"bytes\": %zu, \"leads\": %zu, \"attributes\": %zu, \"json_bytes\": %zu, "
           "\"iterations\": %ld, \"parse_ms_median\": %.4f, \"parse_ms_mean\": %.4f, "
           "\"translate_ms_median\": %.4f, \"translate_ms_mean\": %.4f, \"ratio_median\": %.3f}\n",
           len, nleads, nattrs, json_len, n, mp, n > 0 ? (double)sp / 1e6 / (double)n : 0, mt,
           n > 0 ? (double)st / 1e6 / (double)n : 0, mp > 0 ? mt / mp : 0);
    rc = 0;
out:
    free(tp);
    free(tt);
    free(buf);
    return rc;
}

static void usage(void)
{
    fputs("usage: translate envelope-get --user U --key K (--email E | --list NAME) [--batch N]\n"
          "       translate envelope-sync --user U --key K --prefix P --first I --count N\n"
          "       translate bench FILE [--iters N] [--only parse|translate]\n",
          stderr);
}

/* Parses argv[2..] into o; returns 0 or -1. */
static int parse_opts(int argc, char **argv, tr_opts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (o->file != NULL)
                return -1;
            o->file = a;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        if (strcmp(a, "--user") == 0)
            o->user = v;
        else if (strcmp(a, "--key") == 0)
            o->key = v;
        else if (strcmp(a, "--email") == 0)
            o->email = v;
        else if (strcmp(a, "--list") == 0)
            o->list = v;
        else if (strcmp(a, "--prefix") == 0)
            o->prefix = v;
        else if (strcmp(a, "--only") == 0)
            o->only = v;
        else if (strcmp(a, "--batch") == 0) {
            if (parse_long(v, 1, SOAP_MAX_BATCH_SIZE, &o->batch) < 0)
                return -1;
        } else if (strcmp(a, "--first") == 0) {
            if (parse_long(v, 0, 1000000000L, &o->first) < 0)
                return -1;
        } else if (strcmp(a, "--count") == 0) {
            if (parse_long(v, 1, SOAP_MAX_SYNC_PER_CALL, &o->count) < 0)
                return -1;
        } else if (strcmp(a, "--iters") == 0) {
            if (parse_long(v, 0, TR_MAX_ITERS, &o->iters) < 0)
                return -1;
        } else
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    tr_opts o = {.batch = SOAP_MAX_BATCH_SIZE, .iters = 50, .count = 0, .first = 1};
    int rc = 2;

    if (argc < 2 || parse_opts(argc, argv, &o) < 0) {
        usage();
        return 2;
    }
    soap_init();
    if (strcmp(argv[1], "envelope-get") == 0 && o.user && o.key && (o.email || o.list) && !o.file)
        rc = cmd_envelope_get(&o);
    else if (strcmp(argv[1], "envelope-sync") == 0 && o.user && o.key && o.prefix && o.count > 0 &&
             !o.file)
        rc = cmd_envelope_sync(&o);
    else if (strcmp(argv[1], "bench") == 0 && o.file &&
             (o.only == NULL || strcmp(o.only, "parse") == 0 || strcmp(o.only, "translate") == 0))
        rc = cmd_bench(&o);
    else
        usage();
    soap_cleanup();
    return rc;
}
