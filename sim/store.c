/* sim/store.c - leads, lists, indexes, seed data and upserts (see store.h).
 *
 * Leads live in an array of pointers kept sorted by id: new leads always get
 * an id above the highest one, so appending keeps the order and an id lookup
 * is a binary search. Two hash indexes map lower-cased e-mails and
 * ForeignSysPersonIds to the leads carrying them. The other key types
 * (Cookies, SFDC ids, ...) are matched by one scan of the array per call,
 * which for 10,000 leads costs well under a millisecond.
 */
#include "sim/store.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sim/util.h"

const sim_field sim_fields[SIM_NFIELDS] = {
    {"AnnualRevenue", "currency"},
    {"City", "string"},
    {"Company", "string"},
    {"Cookies", "string"},
    {"Country", "string"},
    {"Date_of_purchase", "date"},
    {"DoNotCall", "boolean"},
    {"FirstName", "string"},
    {"LastActivityDate", "datetime"},
    {"LastName", "string"},
    {"LeadOwnerEmail", "string"},
    {"LeadScore", "integer"},
    {"MobilePhone", "phone"},
    {"NumberOfEmployees", "integer"},
    {"Phone", "phone"},
    {"Rating", "float"},
    {"SFDCAccountId", "string"},
    {"SFDCContactId", "string"},
    {"SFDCLeadId", "string"},
    {"SFDCLeadOwnerId", "string"},
    {"SFDCOpptyId", "string"},
    {"SecondaryEmail", "email"},
    {"Title", "string"},
    {"Unsubscribed", "boolean"},
    {"Website", "url"},
};

int sim_field_index(const char *name)
{
    int lo = 0, hi = SIM_NFIELDS - 1;
    if (name == NULL)
        return -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, sim_fields[mid].name);
        if (c == 0)
            return mid;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

/* ---- string -> leads hash index ------------------------------------------ */

/* One key of an index and the leads carrying it (ascending by id). */
typedef struct idx_entry {
    char *key;               /* the (normalised) key */
    sim_lead **leads;        /* leads with this key */
    size_t n;                /* entries in leads */
    size_t cap;              /* allocated entries */
    struct idx_entry *next;  /* bucket chain */
} idx_entry;

/* A chained hash table from strings to lead vectors. */
typedef struct idx {
    idx_entry **buckets;  /* bucket heads */
    size_t nbuckets;      /* power of two */
    bool fold;            /* keys compared lower-cased (e-mails) */
} idx;

/* FNV-1a of s, lower-casing first when fold is set. */
static uint64_t idx_hash(const char *s, bool fold)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        h ^= fold ? (unsigned char)tolower(c) : c;
        h *= 1099511628211ull;
    }
    return h;
}

/* Sets up an empty index with nbuckets (a power of two). Returns 0 or -1. */
static int idx_init(idx *x, size_t nbuckets, bool fold)
{
    x->buckets = calloc(nbuckets, sizeof(*x->buckets));
    x->nbuckets = nbuckets;
    x->fold = fold;
    return x->buckets == NULL ? -1 : 0;
}

/* Frees every entry and the bucket array. */
static void idx_free(idx *x)
{
    for (size_t i = 0; x->buckets != NULL && i < x->nbuckets; i++) {
        idx_entry *e = x->buckets[i];
        while (e != NULL) {
            idx_entry *next = e->next;
            free(e->key);
            free(e->leads);
            free(e);
            e = next;
        }
    }
    free(x->buckets);
    memset(x, 0, sizeof(*x));
}

/* The entry for key, or NULL. */
static idx_entry *idx_find(const idx *x, const char *key)
{
    if (key == NULL || x->buckets == NULL)
        return NULL;
    idx_entry *e = x->buckets[idx_hash(key, x->fold) & (x->nbuckets - 1)];
    for (; e != NULL; e = e->next) {
        if (x->fold ? strcasecmp(e->key, key) == 0 : strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* Adds lead under key, keeping the vector ascending by id. Returns 0 or -1. */
static int idx_add(idx *x, const char *key, sim_lead *lead)
{
    idx_entry *e = idx_find(x, key);
    if (e == NULL) {
        size_t b = idx_hash(key, x->fold) & (x->nbuckets - 1);
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return -1;
        e->key = strdup(key);
        if (e->key == NULL) {
            free(e);
            return -1;
        }
        e->next = x->buckets[b];
        x->buckets[b] = e;
    }
    if (e->n == e->cap) {
        size_t cap = e->cap == 0 ? 2 : e->cap * 2;
        sim_lead **nl = realloc(e->leads, cap * sizeof(*nl));
        if (nl == NULL)
            return -1;
        e->leads = nl;
        e->cap = cap;
    }
    size_t pos = e->n;
    while (pos > 0 && e->leads[pos - 1]->id > lead->id)
        pos--;
    memmove(&e->leads[pos + 1], &e->leads[pos], (e->n - pos) * sizeof(*e->leads));
    e->leads[pos] = lead;
    e->n++;
    return 0;
}

/* Removes lead from key's vector (the empty entry is kept: harmless). */
static void idx_remove(idx *x, const char *key, const sim_lead *lead)
{
    idx_entry *e = idx_find(x, key);
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++) {
        if (e->leads[i] == lead) {
            memmove(&e->leads[i], &e->leads[i + 1], (e->n - i - 1) * sizeof(*e->leads));
            e->n--;
            return;
        }
    }
}

/* ---- the store -------------------------------------------------------------- */

#define NLISTS 2

struct sim_store {
    pthread_rwlock_t lock;   /* guards everything below */
    size_t ngen;             /* generated leads (--leads) */
    uint64_t seed;           /* --seed */
    sim_lead **leads;        /* all leads, ascending by id */
    size_t n;                /* entries in leads */
    size_t cap;              /* allocated entries */
    idx by_email;            /* lower-cased Email -> leads */
    idx by_fsp;              /* ForeignSysPersonId -> leads */
    sim_list lists[NLISTS];  /* the static lists */
};

void sim_store_rdlock(sim_store *st) { pthread_rwlock_rdlock(&st->lock); }
void sim_store_wrlock(sim_store *st) { pthread_rwlock_wrlock(&st->lock); }
void sim_store_unlock(sim_store *st) { pthread_rwlock_unlock(&st->lock); }

size_t sim_store_count(const sim_store *st) { return st->n; }

/* Frees one lead and its strings. */
static void lead_free(sim_lead *l)
{
    if (l == NULL)
        return;
    free(l->email);
    free(l->fsp_id);
    free(l->fsp_type);
    for (int i = 0; i < SIM_NFIELDS; i++)
        free(l->vals[i]);
    free(l);
}

/* Frees all data (leads, indexes, lists), leaving an empty store. */
static void store_clear(sim_store *st)
{
    for (size_t i = 0; i < st->n; i++)
        lead_free(st->leads[i]);
    free(st->leads);
    st->leads = NULL;
    st->n = st->cap = 0;
    idx_free(&st->by_email);
    idx_free(&st->by_fsp);
    for (int i = 0; i < NLISTS; i++) {
        free(st->lists[i].name);
        free(st->lists[i].ids);
        memset(&st->lists[i], 0, sizeof(st->lists[i]));
    }
}

/* Appends lead (whose id must exceed every existing id) and indexes it.
 * Returns 0, or -1 on OOM (the lead is then not owned by the store). */
static int store_append(sim_store *st, sim_lead *lead)
{
    if (st->n == st->cap) {
        size_t cap = st->cap == 0 ? 1024 : st->cap * 2;
        sim_lead **nl = realloc(st->leads, cap * sizeof(*nl));
        if (nl == NULL)
            return -1;
        st->leads = nl;
        st->cap = cap;
    }
    if (lead->email != NULL && idx_add(&st->by_email, lead->email, lead) != 0)
        return -1;
    if (lead->fsp_id != NULL && idx_add(&st->by_fsp, lead->fsp_id, lead) != 0) {
        if (lead->email != NULL)
            idx_remove(&st->by_email, lead->email, lead);
        return -1;
    }
    st->leads[st->n++] = lead;
    return 0;
}

/* Sets *slot to a copy of v (NULL or "" clears it). Returns 0 or -1. */
static int set_str(char **slot, const char *v)
{
    char *c = NULL;
    if (v != NULL && v[0] != '\0') {
        c = strdup(v);
        if (c == NULL)
            return -1;
    }
    free(*slot);
    *slot = c;
    return 0;
}

/* Sets field name of lead to a formatted value. Returns 0 or -1. */
__attribute__((format(printf, 3, 4)))
static int set_fmt(sim_lead *l, const char *name, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    int i = sim_field_index(name);
    if (i < 0)
        return -1;
    return set_str(&l->vals[i], buf);
}

/* Word lists for generated leads. */
static const char *const first_names[] = {"Ada", "Ben", "Chloe", "Dev", "Elena", "Farid",
    "Grace", "Hugo", "Ines", "Jon", "Kira", "Liam", "Maya", "Noah", "Olga", "Pavel"};
static const char *const last_names[] = {"Anders", "Baker", "Chen", "Diaz", "Evans",
    "Fischer", "Garcia", "Huang", "Ivanov", "Jones", "Khan", "Lopez", "Moreau", "Novak"};
static const char *const companies[] = {"Acme Corp", "Globex", "Initech", "Umbrella",
    "Hooli", "Stark Industries", "Wayne Enterprises", "Tyrell", "Cyberdyne", "Soylent"};
static const char *const titles[] = {"Engineer", "Manager", "Director", "VP Sales",
    "CTO", "Analyst", "Consultant", "Designer"};
static const char *const cities[] = {"Austin", "Berlin", "Chicago", "Dublin", "Lyon",
    "Madrid", "Osaka", "Toronto", "Sydney", "San Mateo"};
static const char *const countries[] = {"United States", "Germany", "France", "Spain",
    "Japan", "Canada", "Australia", "Ireland"};

#define PICK(arr, r) (arr[(r) % (sizeof(arr) / sizeof(arr[0]))])

/* Builds generated lead number i (1-based) deterministically from seed.
 * Returns the lead or NULL on OOM. */
static sim_lead *gen_lead(size_t i, uint64_t seed, time_t now)
{
    uint64_t s = seed * 0x100000001B3ull + (uint64_t)i;
    sim_lead *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->id = 1000000 + (int64_t)i;
    char email[64];
    snprintf(email, sizeof(email), "lead%zu@example.com", i);
    int rc = set_str(&l->email, email);
    l->updated_at = now - (time_t)(sim_rand_next(&s) % (60u * 86400u));
    const char *first = PICK(first_names, sim_rand_next(&s));
    const char *last = PICK(last_names, sim_rand_next(&s));
    uint64_t r = sim_rand_next(&s);
    rc |= set_fmt(l, "FirstName", "%s", first);
    rc |= set_fmt(l, "LastName", "%s", last);
    rc |= set_fmt(l, "Company", "%s", PICK(companies, r));
    if (r % 5 != 0)
        rc |= set_fmt(l, "Title", "%s", PICK(titles, r >> 8));
    rc |= set_fmt(l, "City", "%s", PICK(cities, r >> 16));
    rc |= set_fmt(l, "Country", "%s", PICK(countries, r >> 24));
    rc |= set_fmt(l, "LeadScore", "%u", (unsigned)(sim_rand_next(&s) % 101));
    rc |= set_fmt(l, "NumberOfEmployees", "%u", (unsigned)(sim_rand_next(&s) % 50000) + 1);
    r = sim_rand_next(&s);
    rc |= set_fmt(l, "Unsubscribed", "%s", (r & 7) == 0 ? "true" : "false");
    rc |= set_fmt(l, "DoNotCall", "%s", (r & 0x30) == 0 ? "true" : "false");
    time_t purchase = now - (time_t)(sim_rand_next(&s) % (3u * 365u * 86400u));
    struct tm tm;
    gmtime_r(&purchase, &tm);
    rc |= set_fmt(l, "Date_of_purchase", "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday);
    gmtime_r(&l->updated_at, &tm);
    rc |= set_fmt(l, "LastActivityDate", "%04d-%02d-%02dT%02d:%02d:%02d+00:00",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    rc |= set_fmt(l, "Website", "www.example%zu.com", i % 97);
    rc |= set_fmt(l, "SecondaryEmail", "%s.%s%zu@mail.example.org", first, last, i);
    r = sim_rand_next(&s);
    rc |= set_fmt(l, "Phone", "+1-555-%03u-%04u", (unsigned)(r % 1000), (unsigned)(i % 10000));
    if (r % 3 != 0)
        rc |= set_fmt(l, "MobilePhone", "+1-555-%04u", (unsigned)((r >> 12) % 10000));
    rc |= set_fmt(l, "AnnualRevenue", "%u.%02u", (unsigned)(sim_rand_next(&s) % 50000000),
                  (unsigned)(r % 100));
    rc |= set_fmt(l, "Rating", "%u.%u", (unsigned)(r >> 20) % 5, (unsigned)(r >> 28) % 10);
    rc |= set_fmt(l, "Cookies", "id:%zu&token:_mch-example.com-%llu-%05u", i,
                  1370000000000ull + (unsigned long long)(sim_rand_next(&s) % 100000000000ull),
                  (unsigned)(sim_rand_next(&s) % 100000));
    rc |= set_fmt(l, "LeadOwnerEmail", "owner%zu@example.com", i % 10);
    rc |= set_fmt(l, "SFDCAccountId", "001A%zu", i);
    rc |= set_fmt(l, "SFDCContactId", "003A%zu", i);
    rc |= set_fmt(l, "SFDCLeadId", "00QA%zu", i);
    rc |= set_fmt(l, "SFDCLeadOwnerId", "005A%zu", i % 10);
    rc |= set_fmt(l, "SFDCOpptyId", "006A%zu", i);
    if (rc != 0) {
        lead_free(l);
        return NULL;
    }
    return l;
}

/* Builds one of the docs' fixed leads. Returns the lead or NULL on OOM. */
static sim_lead *fixed_lead(int64_t id, const char *email, time_t updated,
                            const char *const kv[][2], size_t nkv)
{
    sim_lead *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->id = id;
    l->updated_at = updated;
    int rc = set_str(&l->email, email);
    for (size_t i = 0; i < nkv; i++)
        rc |= set_fmt(l, kv[i][0], "%s", kv[i][1]);
    if (rc != 0) {
        lead_free(l);
        return NULL;
    }
    return l;
}

/* Sets up one static list with ids [first, first + n) or the given ids. */
static int make_list(sim_list *list, int64_t id, const char *name, const int64_t *ids,
                     size_t n, int64_t first)
{
    list->id = id;
    list->name = strdup(name);
    list->ids = malloc((n == 0 ? 1 : n) * sizeof(*list->ids));
    if (list->name == NULL || list->ids == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        list->ids[i] = ids != NULL ? ids[i] : first + (int64_t)i;
    list->n = n;
    return 0;
}

/* Fills an empty store with the seed data. Returns 0 or -1 on OOM. */
static int store_fill(sim_store *st)
{
    time_t now = time(NULL);
    static const char *const kv65835[][2] = {
        {"Company", "Marketo Test"}, {"FirstName", "FnameForm1"}, {"LastName", "LnameForm1"},
        {"LeadScore", "16"}, {"Website", "marketo.com"}};
    static const char *const kv67508[][2] = {
        {"Company", "Marketo"}, {"Date_of_purchase", "2012-04-04"}, {"FirstName", "Joe"},
        {"LastName", "Orante"}, {"LeadScore", "11"}};
    static const int64_t docs_ids[] = {65835, 67508};
    size_t nb = 1024;
    while (nb < st->ngen * 2)
        nb *= 2;
    if (idx_init(&st->by_email, nb, true) != 0 || idx_init(&st->by_fsp, 1024, false) != 0)
        return -1;
    sim_lead *l = fixed_lead(65835, "formtest1@marketo.com", now - 45 * 86400, kv65835, 5);
    if (l == NULL || store_append(st, l) != 0) {
        lead_free(l);
        return -1;
    }
    l = fixed_lead(67508, "joe@marketo.com", now - 3600, kv67508, 5);
    if (l == NULL || store_append(st, l) != 0) {
        lead_free(l);
        return -1;
    }
    for (size_t i = 1; i <= st->ngen; i++) {
        l = gen_lead(i, st->seed, now);
        if (l == NULL || store_append(st, l) != 0) {
            lead_free(l);
            return -1;
        }
    }
    if (make_list(&st->lists[0], 1, "Demo.All", NULL, st->ngen, 1000001) != 0 ||
        make_list(&st->lists[1], 6926, "SMSProgram.listForTesting", docs_ids, 2, 0) != 0)
        return -1;
    return 0;
}

sim_store *sim_store_new(size_t nleads, uint64_t seed)
{
    sim_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    if (pthread_rwlock_init(&st->lock, NULL) != 0) {
        free(st);
        return NULL;
    }
    st->ngen = nleads;
    st->seed = seed;
    if (store_fill(st) != 0) {
        sim_store_free(st);
        return NULL;
    }
    return st;
}

void sim_store_free(sim_store *st)
{
    if (st == NULL)
        return;
    store_clear(st);
    pthread_rwlock_destroy(&st->lock);
    free(st);
}

int sim_store_reset(sim_store *st)
{
    sim_store_wrlock(st);
    store_clear(st);
    int rc = store_fill(st);
    if (rc != 0)
        store_clear(st);
    sim_store_unlock(st);
    return rc;
}

/* Index in st->leads of the lead with id, or -1. */
static long find_pos(const sim_store *st, int64_t id)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->leads[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < st->n && st->leads[lo]->id == id) ? (long)lo : -1;
}

const sim_lead *sim_store_by_id(const sim_store *st, int64_t id)
{
    long p = find_pos(st, id);
    return p < 0 ? NULL : st->leads[p];
}

/* Orders lead pointers by id. */
static int cmp_id(const void *a, const void *b)
{
    const sim_lead *x = *(const sim_lead *const *)a, *y = *(const sim_lead *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Orders lead pointers by (updated_at, id). */
static int cmp_updated(const void *a, const void *b)
{
    const sim_lead *x = *(const sim_lead *const *)a, *y = *(const sim_lead *const *)b;
    if (x->updated_at != y->updated_at)
        return (x->updated_at > y->updated_at) - (x->updated_at < y->updated_at);
    return (x->id > y->id) - (x->id < y->id);
}

/* A growable result vector of leads. */
typedef struct vec {
    const sim_lead **v;  /* entries */
    size_t n;            /* used */
    size_t cap;          /* allocated */
} vec;

/* Appends l. Returns 0 or -1. */
static int vec_push(vec *v, const sim_lead *l)
{
    if (v->n == v->cap) {
        size_t cap = v->cap == 0 ? 64 : v->cap * 2;
        const sim_lead **nv = realloc(v->v, cap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = l;
    return 0;
}

/* Sorts with cmp, drops duplicates (for id order), hands the array over. */
static long vec_finish(vec *v, int (*cmp)(const void *, const void *), const sim_lead ***out)
{
    if (v->n > 1)
        qsort(v->v, v->n, sizeof(*v->v), cmp);
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (w > 0 && v->v[w - 1] == v->v[i])
            continue;
        v->v[w++] = v->v[i];
    }
    *out = v->v;
    if (w == 0) {
        free(v->v);
        *out = NULL;
    }
    return (long)w;
}

/* Parses a whole decimal integer; returns true and sets *out on success. */
static bool parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

long sim_store_match_keys(const sim_store *st, mkto_key_type t, const char *const *keys,
                          size_t nkeys, const sim_lead ***out)
{
    vec v = {0};
    *out = NULL;
    if (t == MKTO_KEY_IDNUM) {
        for (size_t k = 0; k < nkeys; k++) {
            int64_t id;
            const sim_lead *l;
            if (parse_i64(keys[k], &id) && (l = sim_store_by_id(st, id)) != NULL &&
                vec_push(&v, l) != 0)
                goto oom;
        }
    } else if (t == MKTO_KEY_EMAIL) {
        for (size_t k = 0; k < nkeys; k++) {
            const idx_entry *e = idx_find(&st->by_email, keys[k]);
            for (size_t i = 0; e != NULL && i < e->n; i++)
                if (vec_push(&v, e->leads[i]) != 0)
                    goto oom;
        }
    } else {
        int f = sim_field_index(mkto_key_type_attr(t));
        bool fold = t == MKTO_KEY_LEADOWNEREMAIL;
        if (f < 0)
            return 0;
        for (size_t i = 0; i < st->n; i++) {
            const char *val = st->leads[i]->vals[f];
            if (val == NULL)
                continue;
            for (size_t k = 0; k < nkeys; k++) {
                if (keys[k] != NULL &&
                    (fold ? strcasecmp(val, keys[k]) == 0 : strcmp(val, keys[k]) == 0)) {
                    if (vec_push(&v, st->leads[i]) != 0)
                        goto oom;
                    break;
                }
            }
        }
    }
    return vec_finish(&v, cmp_id, out);
oom:
    free(v.v);
    return -1;
}

const sim_list *sim_store_find_list(const sim_store *st, const char *name, int64_t id)
{
    for (int i = 0; i < NLISTS; i++) {
        const sim_list *l = &st->lists[i];
        if (l->name == NULL)
            continue;
        if (id > 0 ? l->id == id : (name != NULL && strcmp(l->name, name) == 0))
            return l;
    }
    return NULL;
}

long sim_store_list_leads(const sim_store *st, const sim_list *list, const sim_lead ***out)
{
    vec v = {0};
    *out = NULL;
    for (size_t i = 0; i < list->n; i++) {
        const sim_lead *l = sim_store_by_id(st, list->ids[i]);
        if (l != NULL && vec_push(&v, l) != 0) {
            free(v.v);
            return -1;
        }
    }
    return vec_finish(&v, cmp_id, out);
}

long sim_store_updated_between(const sim_store *st, time_t oldest, time_t latest,
                               const sim_lead ***out)
{
    vec v = {0};
    *out = NULL;
    for (size_t i = 0; i < st->n; i++) {
        const sim_lead *l = st->leads[i];
        if (l->updated_at >= oldest && l->updated_at <= latest && vec_push(&v, l) != 0) {
            free(v.v);
            return -1;
        }
    }
    return vec_finish(&v, cmp_updated, out);
}

/* Changes lead's e-mail to email (NULL/"" clears), keeping the index right.
 * Returns 0 or -1 on OOM. */
static int change_email(sim_store *st, sim_lead *l, const char *email)
{
    if (email != NULL && email[0] == '\0')
        email = NULL;
    if (l->email != NULL && email != NULL && strcmp(l->email, email) == 0)
        return 0;
    char *copy = email != NULL ? strdup(email) : NULL;
    if (email != NULL && copy == NULL)
        return -1;
    if (copy != NULL && idx_add(&st->by_email, copy, l) != 0) {
        free(copy);
        return -1;
    }
    if (l->email != NULL)
        idx_remove(&st->by_email, l->email, l);
    free(l->email);
    l->email = copy;
    return 0;
}

/* Same for the ForeignSysPersonId and its index. */
static int change_fsp(sim_store *st, sim_lead *l, const char *fsp)
{
    if (fsp != NULL && fsp[0] == '\0')
        fsp = NULL;
    if (l->fsp_id != NULL && fsp != NULL && strcmp(l->fsp_id, fsp) == 0)
        return 0;
    char *copy = fsp != NULL ? strdup(fsp) : NULL;
    if (fsp != NULL && copy == NULL)
        return -1;
    if (copy != NULL && idx_add(&st->by_fsp, copy, l) != 0) {
        free(copy);
        return -1;
    }
    if (l->fsp_id != NULL)
        idx_remove(&st->by_fsp, l->fsp_id, l);
    free(l->fsp_id);
    l->fsp_id = copy;
    return 0;
}

/* Fills err (bounded) and *code; returns SIM_SYNC_FAILED. */
static sim_sync_state sync_fail(int *code, int c, char *err, size_t errlen, const char *msg)
{
    *code = c;
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return SIM_SYNC_FAILED;
}

/* Applies rec's values to l: keys (as the precedence rules allow), type and
 * attributes. Returns 0 or -1 on OOM. */
static int apply_rec(sim_store *st, sim_lead *l, const sim_sync_rec *rec, time_t now)
{
    if (rec->email != NULL && change_email(st, l, rec->email) != 0)
        return -1;
    if (rec->fsp_id != NULL && change_fsp(st, l, rec->fsp_id) != 0)
        return -1;
    if (rec->fsp_type != NULL && set_str(&l->fsp_type, rec->fsp_type) != 0)
        return -1;
    for (size_t i = 0; i < rec->nattrs; i++) {
        const sim_sync_attr *a = &rec->attrs[i];
        if (strcmp(a->name, "Email") == 0) {
            if (change_email(st, l, a->value) != 0)
                return -1;
            continue;
        }
        int f = sim_field_index(a->name);
        if (f >= 0 && set_str(&l->vals[f], a->value) != 0)
            return -1;
    }
    l->updated_at = now;
    return 0;
}

sim_sync_state sim_store_sync(sim_store *st, const sim_sync_rec *rec, bool dedup, time_t now,
                              int64_t *id_out, int *code, char *err, size_t errlen)
{
    *id_out = rec->has_id ? rec->id : 0;
    *code = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    const char *email = (rec->email != NULL && rec->email[0] != '\0') ? rec->email : NULL;
    const char *fsp = (rec->fsp_id != NULL && rec->fsp_id[0] != '\0') ? rec->fsp_id : NULL;
    if (!rec->has_id && email == NULL && fsp == NULL)
        return sync_fail(code, 20101, err, errlen, "Lead key required");
    for (size_t i = 0; i < rec->nattrs; i++) {
        if (strcmp(rec->attrs[i].name, "Email") != 0 && sim_field_index(rec->attrs[i].name) < 0)
            return sync_fail(code, 20105, err, errlen, "20105 Lead Attribute Bad");
    }
    sim_lead *target = NULL;
    if (rec->has_id) {
        long p = find_pos(st, rec->id);
        if (p < 0)
            return sync_fail(code, 20103, err, errlen, "Lead not found");
        target = st->leads[p];
    } else if (fsp != NULL && idx_find(&st->by_fsp, fsp) != NULL &&
               idx_find(&st->by_fsp, fsp)->n > 0) {
        target = idx_find(&st->by_fsp, fsp)->leads[0];
    } else if (dedup && email != NULL && idx_find(&st->by_email, email) != NULL &&
               idx_find(&st->by_email, email)->n > 0) {
        target = idx_find(&st->by_email, email)->leads[0];
    }
    if (target != NULL) {
        /* A key match by e-mail does not rewrite the e-mail's spelling. */
        sim_sync_rec r = *rec;
        if (!rec->has_id && fsp == NULL)
            r.email = NULL;
        if (apply_rec(st, target, &r, now) != 0)
            return sync_fail(code, 10001, err, errlen, "Internal error");
        *id_out = target->id;
        return SIM_SYNC_UPDATED;
    }
    sim_lead *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return sync_fail(code, 10001, err, errlen, "Internal error");
    l->id = st->n > 0 ? st->leads[st->n - 1]->id + 1 : 1;
    /* Index through store_append, so set the keys directly first. */
    if (set_str(&l->email, email) != 0 || set_str(&l->fsp_id, fsp) != 0) {
        lead_free(l);
        return sync_fail(code, 10001, err, errlen, "Internal error");
    }
    if (store_append(st, l) != 0) {
        lead_free(l);
        return sync_fail(code, 10001, err, errlen, "Internal error");
    }
    sim_sync_rec r = *rec;
    r.email = NULL;
    r.fsp_id = NULL;
    if (apply_rec(st, l, &r, now) != 0)
        return sync_fail(code, 10001, err, errlen, "Internal error");
    *id_out = l->id;
    return SIM_SYNC_CREATED;
}
