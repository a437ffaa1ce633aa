/* gateway/leads/query.c - GET /leads query parameters -> one validated selector.
 *
 * Parameters:
 *   key selectors  id, email, cookie, leadOwnerEmail, sfdcAccountId,
 *                  sfdcContactId, sfdcLeadId, sfdcLeadOwnerId, sfdcOpptyId:
 *                  comma-separated and/or repeated values, blanks around
 *                  items trimmed, duplicates (after mkto_key_normalize)
 *                  dropped keeping the first; stored normalised (e-mails
 *                  lower-cased, ids without leading zeros). The selector's
 *                  keys are what lookups send, cache and match: nothing
 *                  downstream normalises or de-duplicates them again.
 *   list selectors staticList=NAME or staticListId=N
 *   updated-at     updatedSince=RFC3339 [&updatedUntil=RFC3339, later]
 *   fields=a,b     attribute names, sorted and deduplicated
 *   limit=N        1..max_page_size
 *   cursor=TOKEN   the previous page's next_cursor
 *
 * Decision: limit= and cursor= apply to staticList/staticListId/updatedSince
 * lookups only. Key lookups are answered whole (split into 100-key calls
 * and merged) and their cursors could not be bound to the keys without
 * carrying key values, so limit= or cursor= next to a key parameter is an
 * error rather than silently ignored. A cursor may come alone (then
 * has_selector is false and the cursor's binding supplies the rest).
 *
 * Error messages name parameters, never their values.
 */
#include "gateway/leads/query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/leads/cursor.h"
#include "marketo/leadkey.h"

#define MAX_FIELDS 100        /* distinct names in fields= */
#define MAX_FIELD_ITEMS 1000  /* names in fields= before deduplication */
#define MAX_FIELD_NAME 64     /* bytes in one field name */
#define MAX_TIMESTAMP 64      /* bytes in an updatedSince/updatedUntil value */

/* What a query parameter is. */
typedef enum param_kind {
    P_KEY,
    P_STATIC_LIST,
    P_STATIC_LIST_ID,
    P_UPDATED_SINCE,
    P_UPDATED_UNTIL,
    P_FIELDS,
    P_LIMIT,
    P_CURSOR,
    P__COUNT
} param_kind;

/* One known parameter. */
typedef struct param_def {
    const char *name;  /* query parameter name */
    param_kind kind;   /* what it is */
    mkto_key_type key; /* P_KEY: the key type */
} param_def;

static const param_def params[] = {
    {"id", P_KEY, MKTO_KEY_IDNUM},
    {"cookie", P_KEY, MKTO_KEY_COOKIE},
    {"email", P_KEY, MKTO_KEY_EMAIL},
    {"leadOwnerEmail", P_KEY, MKTO_KEY_LEADOWNEREMAIL},
    {"sfdcAccountId", P_KEY, MKTO_KEY_SFDCACCOUNTID},
    {"sfdcContactId", P_KEY, MKTO_KEY_SFDCCONTACTID},
    {"sfdcLeadId", P_KEY, MKTO_KEY_SFDCLEADID},
    {"sfdcLeadOwnerId", P_KEY, MKTO_KEY_SFDCLEADOWNERID},
    {"sfdcOpptyId", P_KEY, MKTO_KEY_SFDCOPPTYID},
    {"staticList", P_STATIC_LIST, 0},
    {"staticListId", P_STATIC_LIST_ID, 0},
    {"updatedSince", P_UPDATED_SINCE, 0},
    {"updatedUntil", P_UPDATED_UNTIL, 0},
    {"fields", P_FIELDS, 0},
    {"limit", P_LIMIT, 0},
    {"cursor", P_CURSOR, 0},
};

const char *gw_key_param_name(mkto_key_type t)
{
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        if (params[i].kind == P_KEY && params[i].key == t)
            return params[i].name;
    }
    return NULL;
}

bool gw_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < n; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        }
        i += n;
    }
    return true;
}

/* Checks one value (key item or list name) of parameter pname: non-empty,
 * bounded, no control characters, valid UTF-8. Returns 0 or -1 with err. */
static int check_value(const char *pname, const char *v, size_t len, gw_err *err)
{
    if (len == 0)
        return GW_ERR_FAIL(err, 400, "%s: empty value", pname);
    if (len > GW_QUERY_MAX_VALUE)
        return GW_ERR_FAIL(err, 400, "%s: value longer than %d bytes", pname, GW_QUERY_MAX_VALUE);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return GW_ERR_FAIL(err, 400, "%s: control character in value", pname);
        /* U+FFFE and U+FFFF are valid UTF-8 but not XML characters: the
         * envelope builder would refuse them after a slot was spent */
        if (c == 0xEF && i + 2 < len && (unsigned char)v[i + 1] == 0xBF &&
            ((unsigned char)v[i + 2] == 0xBE || (unsigned char)v[i + 2] == 0xBF))
            return GW_ERR_FAIL(err, 400, "%s: character XML cannot carry in value", pname);
    }
    if (!gw_utf8_valid(v, len))
        return GW_ERR_FAIL(err, 400, "%s: value is not valid UTF-8", pname);
    return 0;
}

/* Parses a positive decimal int (digits only, 1..2147483647). Returns 0 or -1. */
static int parse_pos_int(const char *v, size_t len, int64_t *out)
{
    if (len == 0)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
        if (n > 2147483647)
            return -1;
    }
    if (n < 1)
        return -1;
    *out = n;
    return 0;
}

/* ---- distinct key collection -------------------------------------------------- */

/* Keys in request order plus an open-addressing set of their indices. */
typedef struct key_set {
    char **keys;      /* distinct values, in order (owned) */
    size_t n;         /* entries in keys */
    size_t cap;       /* capacity of keys */
    size_t *slots;    /* hash set: index + 1 into keys, 0 empty */
    size_t nslots;    /* power of two */
} key_set;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

/* Adds v unless present. Returns 1 added, 0 duplicate, -1 no memory. */
static int key_set_add(key_set *ks, const char *v)
{
    if ((ks->n + 1) * 2 > ks->nslots) {
        size_t ns = ks->nslots == 0 ? 32 : ks->nslots * 2;
        size_t *nt = calloc(ns, sizeof(*nt));
        if (nt == NULL)
            return -1;
        for (size_t i = 0; i < ks->n; i++) {
            size_t b = str_hash(ks->keys[i]) & (ns - 1);
            while (nt[b] != 0)
                b = (b + 1) & (ns - 1);
            nt[b] = i + 1;
        }
        free(ks->slots);
        ks->slots = nt;
        ks->nslots = ns;
    }
    size_t b = str_hash(v) & (ks->nslots - 1);
    while (ks->slots[b] != 0) {
        if (strcmp(ks->keys[ks->slots[b] - 1], v) == 0)
            return 0;
        b = (b + 1) & (ks->nslots - 1);
    }
    if (ks->n == ks->cap) {
        size_t nc = ks->cap == 0 ? 16 : ks->cap * 2;
        char **nk = realloc(ks->keys, nc * sizeof(*nk));
        if (nk == NULL)
            return -1;
        ks->keys = nk;
        ks->cap = nc;
    }
    ks->keys[ks->n] = strdup(v);
    if (ks->keys[ks->n] == NULL)
        return -1;
    ks->n++;
    ks->slots[b] = ks->n;
    return 1;
}

static void key_set_free(key_set *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->keys[i]);
    free(ks->keys);
    free(ks->slots);
    memset(ks, 0, sizeof(*ks));
}

/* Splits one value of key parameter d on ',' and adds each item. */
static int add_key_items(const param_def *d, const char *value, const gw_query_limits *lim,
                         key_set *ks, gw_err *err)
{
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *item = p;
        while (len > 0 && item[0] == ' ') {
            item++;
            len--;
        }
        while (len > 0 && item[len - 1] == ' ')
            len--;
        if (check_value(d->name, item, len, err) != 0)
            return -1;

        char raw[GW_QUERY_MAX_VALUE + 1];
        char norm[MKTO_KEY_MAX_LEN + 1];
        if (d->key == MKTO_KEY_IDNUM) {
            int64_t id;
            if (parse_pos_int(item, len, &id) != 0)
                return GW_ERR_FAIL(err, 400,
                                   "id: each value must be a positive integer up to 2147483647");
            snprintf(raw, sizeof(raw), "%lld", (long long)id);
        } else {
            memcpy(raw, item, len);
            raw[len] = '\0';
        }
        if (mkto_key_normalize(d->key, raw, norm, sizeof(norm)) != 0)
            return GW_ERR_FAIL(err, 400, "%s: value longer than %d bytes", d->name,
                               GW_QUERY_MAX_VALUE);
        int added = key_set_add(ks, norm);
        if (added < 0)
            return GW_ERR_FAIL(err, 500, "out of memory");
        if (added > 0 && ks->n > lim->max_keys)
            return GW_ERR_FAIL(err, 400, "too many keys: at most %zu per request", lim->max_keys);
        if (end == NULL)
            return 0;
        p = end + 1;
    }
}

/* ---- fields ------------------------------------------------------------------ */

/* Whether name[0..len) is [A-Za-z0-9_]{1,64}. */
static bool field_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > MAX_FIELD_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* Splits one fields= value and appends the names to *fields. */
static int add_field_items(const char *value, char ***fields, size_t *n, gw_err *err)
{
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *item = p;
        while (len > 0 && item[0] == ' ') {
            item++;
            len--;
        }
        while (len > 0 && item[len - 1] == ' ')
            len--;
        if (len == 0)
            return GW_ERR_FAIL(err, 400, "fields: empty name");
        if (!field_name_ok(item, len))
            return GW_ERR_FAIL(err, 400,
                               "fields: names are letters, digits and _ (1 to %d characters)",
                               MAX_FIELD_NAME);
        if (*n >= MAX_FIELD_ITEMS)
            return GW_ERR_FAIL(err, 400, "fields: at most %d names", MAX_FIELDS);
        if (*n % 16 == 0) {
            char **nf = realloc(*fields, (*n + 16) * sizeof(*nf));
            if (nf == NULL)
                return GW_ERR_FAIL(err, 500, "out of memory");
            *fields = nf;
        }
        (*fields)[*n] = strndup(item, len);
        if ((*fields)[*n] == NULL)
            return GW_ERR_FAIL(err, 500, "out of memory");
        (*n)++;
        if (end == NULL)
            return 0;
        p = end + 1;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts and deduplicates s->fields, checks the count, builds s->fieldset. */
static int finish_fields(gw_selector *s, gw_err *err)
{
    if (s->nfields == 0) {
        s->fieldset = strdup("");
        return s->fieldset == NULL ? GW_ERR_FAIL(err, 500, "out of memory") : 0;
    }
    qsort(s->fields, s->nfields, sizeof(*s->fields), cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < s->nfields; i++) {
        if (strcmp(s->fields[i], s->fields[w - 1]) == 0)
            free(s->fields[i]);
        else
            s->fields[w++] = s->fields[i];
    }
    s->nfields = w;
    if (s->nfields > MAX_FIELDS)
        return GW_ERR_FAIL(err, 400, "fields: at most %d names", MAX_FIELDS);
    size_t total = 0;
    for (size_t i = 0; i < s->nfields; i++)
        total += strlen(s->fields[i]) + 1;
    s->fieldset = malloc(total);
    if (s->fieldset == NULL)
        return GW_ERR_FAIL(err, 500, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < s->nfields; i++) {
        size_t l = strlen(s->fields[i]);
        if (i > 0)
            s->fieldset[o++] = ',';
        memcpy(s->fieldset + o, s->fields[i], l);
        o += l;
    }
    s->fieldset[o] = '\0';
    return 0;
}

/* ---- the parser ---------------------------------------------------------------- */

/* Parses an updatedSince/updatedUntil value. */
static int parse_time(const char *pname, const char *v, int64_t *out, gw_err *err)
{
    time_t t;
    if (strlen(v) > MAX_TIMESTAMP || soap_timestamp_parse(v, &t) != SOAP_OK || t < 0)
        return GW_ERR_FAIL(err, 400,
                           "%s: must be an RFC 3339 date-time such as 2024-01-31T00:00:00Z", pname);
    *out = (int64_t)t;
    return 0;
}

/* Looks a parameter up by name; NULL when unknown. */
static const param_def *find_param(const char *name)
{
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        if (strcmp(params[i].name, name) == 0)
            return &params[i];
    }
    return NULL;
}

/* Whether a parameter kind is a selector of its own. */
static bool is_selector(param_kind k)
{
    return k == P_KEY || k == P_STATIC_LIST || k == P_STATIC_LIST_ID || k == P_UPDATED_SINCE;
}

/* Reports an unknown parameter, echoing its name only when it is short and
 * made of name characters (so neither a value nor junk is reflected). */
static int unknown_param(const char *name, gw_err *err)
{
    size_t len = strlen(name);
    bool safe = len > 0 && len <= 32;
    for (size_t i = 0; safe && i < len; i++) {
        char c = name[i];
        safe = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    }
    if (safe)
        return GW_ERR_FAIL(err, 400, "unknown parameter '%s'", name);
    return GW_ERR_FAIL(err, 400, "unknown parameter");
}

int gw_query_parse(const char *const *names, const char *const *values, size_t n,
                   const gw_query_limits *lim, gw_selector *out, gw_err *err)
{
    int rc = -1;
    key_set ks = {0};
    const param_def *selector = NULL;   /* first selector parameter seen */
    bool seen[P__COUNT] = {false};      /* non-key parameters seen */
    const char *until_value = NULL;     /* updatedUntil, checked after updatedSince */

    for (size_t i = 0; i < n; i++) {
        const char *name = names[i] != NULL ? names[i] : "";
        const char *value = values[i] != NULL ? values[i] : "";
        const param_def *d = find_param(name);
        if (d == NULL) {
            unknown_param(name, err);
            goto out;
        }
        if (is_selector(d->kind)) {
            if (selector != NULL && selector != d) {
                gw_err_set(err, 400, "only one selector per request: got %s and %s",
                           selector->name, d->name);
                goto out;
            }
            selector = d;
        }
        if (d->kind != P_KEY && d->kind != P_FIELDS) {
            if (seen[d->kind]) {
                gw_err_set(err, 400, "parameter '%s' given more than once", d->name);
                goto out;
            }
            seen[d->kind] = true;
        }

        switch (d->kind) {
        case P_KEY:
            if (add_key_items(d, value, lim, &ks, err) != 0)
                goto out;
            break;
        case P_STATIC_LIST:
            if (check_value(d->name, value, strlen(value), err) != 0)
                goto out;
            out->list_name = strdup(value);
            if (out->list_name == NULL) {
                gw_err_set(err, 500, "out of memory");
                goto out;
            }
            break;
        case P_STATIC_LIST_ID:
            if (parse_pos_int(value, strlen(value), &out->list_id) != 0) {
                gw_err_set(err, 400, "staticListId: must be a positive integer up to 2147483647");
                goto out;
            }
            break;
        case P_UPDATED_SINCE:
            if (parse_time(d->name, value, &out->updated_since, err) != 0)
                goto out;
            break;
        case P_UPDATED_UNTIL:
            until_value = value;
            break;
        case P_FIELDS:
            if (add_field_items(value, &out->fields, &out->nfields, err) != 0)
                goto out;
            break;
        case P_LIMIT: {
            int64_t v;
            if (parse_pos_int(value, strlen(value), &v) != 0 || v > lim->max_page_size) {
                gw_err_set(err, 400, "limit: must be an integer from 1 to %d", lim->max_page_size);
                goto out;
            }
            out->limit = (int)v;
            out->has_limit = true;
            break;
        }
        case P_CURSOR: {
            size_t len = strlen(value);
            bool ok = len > 0 && len <= GW_CURSOR_MAX_LEN;
            for (size_t k = 0; ok && k < len; k++) {
                char c = value[k];
                ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '_' || c == '-' || c == '.';
            }
            if (!ok) {
                gw_err_set(err, 400, "cursor: malformed");
                goto out;
            }
            out->cursor = strdup(value);
            if (out->cursor == NULL) {
                gw_err_set(err, 500, "out of memory");
                goto out;
            }
            break;
        }
        case P__COUNT:
            break;
        }
    }

    if (until_value != NULL) {
        if (selector == NULL || selector->kind != P_UPDATED_SINCE) {
            gw_err_set(err, 400, "updatedUntil applies to updatedSince lookups");
            goto out;
        }
        if (parse_time("updatedUntil", until_value, &out->updated_until, err) != 0)
            goto out;
        if (out->updated_until <= out->updated_since) {
            gw_err_set(err, 400, "updatedUntil must be later than updatedSince");
            goto out;
        }
    }
    if (selector == NULL && out->cursor == NULL) {
        gw_err_set(err, 400,
                   "a selector is required: one of id, email, cookie, leadOwnerEmail, "
                   "sfdcAccountId, sfdcContactId, sfdcLeadId, sfdcLeadOwnerId, sfdcOpptyId, "
                   "staticList, staticListId, updatedSince");
        goto out;
    }
    if (selector != NULL && selector->kind == P_KEY) {
        if (out->cursor != NULL) {
            gw_err_set(err, 400,
                       "cursor applies to staticList, staticListId and updatedSince lookups");
            goto out;
        }
        if (out->has_limit) {
            gw_err_set(err, 400,
                       "limit applies to staticList, staticListId and updatedSince lookups");
            goto out;
        }
    }
    if (finish_fields(out, err) != 0)
        goto out;

    out->has_selector = selector != NULL;
    if (selector != NULL) {
        switch (selector->kind) {
        case P_KEY:
            out->kind = MKTO_SEL_KEYS;
            out->key_type = selector->key;
            out->keys = ks.keys;
            out->nkeys = ks.n;
            ks.keys = NULL;
            ks.n = 0;
            break;
        case P_STATIC_LIST:
        case P_STATIC_LIST_ID:
            out->kind = MKTO_SEL_STATIC_LIST;
            break;
        default:
            out->kind = MKTO_SEL_UPDATED_AT;
            break;
        }
    }
    if (!out->has_limit) {
        int d = lim->default_page_size;
        if (d < 1)
            d = 1;
        if (d > lim->max_page_size && lim->max_page_size >= 1)
            d = lim->max_page_size;
        out->limit = d;
    }
    rc = 0;
out:
    key_set_free(&ks);
    return rc;
}

/* Value of one hex digit, or -1. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) ('+' is a space) into a malloc'd string.
 * Returns NULL with err filled on a bad escape or %00. */
static char *pct_decode(const char *s, size_t len, gw_err *err)
{
    char *out = malloc(len + 1);
    if (out == NULL) {
        gw_err_set(err, 500, "out of memory");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            out[o++] = ' ';
        } else if (c == '%') {
            int hi = i + 1 < len ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(out);
                gw_err_set(err, 400, "malformed percent-encoding in the query string");
                return NULL;
            }
            char v = (char)(hi * 16 + lo);
            if (v == '\0') {
                free(out);
                gw_err_set(err, 400, "NUL byte in the query string");
                return NULL;
            }
            out[o++] = v;
            i += 2;
        } else {
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return out;
}

int gw_query_parse_string(const char *qs, const gw_query_limits *lim, gw_selector *out,
                          gw_err *err)
{
    int rc = -1;
    size_t cap = 1;
    char **names = NULL;
    char **values = NULL;
    size_t n = 0;

    if (qs == NULL)
        qs = "";
    for (const char *p = qs; *p != '\0'; p++) {
        if (*p == '&')
            cap++;
    }
    names = calloc(cap, sizeof(*names));
    values = calloc(cap, sizeof(*values));
    if (names == NULL || values == NULL) {
        gw_err_set(err, 500, "out of memory");
        goto out;
    }
    const char *p = qs;
    for (;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t nlen = eq != NULL ? (size_t)(eq - p) : len;
            names[n] = pct_decode(p, nlen, err);
            if (names[n] == NULL)
                goto out;
            values[n] = eq != NULL ? pct_decode(eq + 1, len - nlen - 1, err)
                                   : strdup("");
            if (values[n] == NULL) {
                free(names[n]);
                names[n] = NULL;
                if (eq == NULL)
                    gw_err_set(err, 500, "out of memory");
                goto out;
            }
            n++;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    rc = gw_query_parse((const char *const *)names, (const char *const *)values, n, lim, out, err);
out:
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(values[i]);
    }
    free(names);
    free(values);
    return rc;
}

/* Appends the percent-encoded form of s (unreserved characters kept) at
 * buf+*o; the caller sized buf for 3 bytes per input byte. */
static void pct_encode_into(const char *s, char *buf, size_t *o)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++) {
        unsigned char c = *u;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            buf[(*o)++] = (char)c;
        } else {
            buf[(*o)++] = '%';
            buf[(*o)++] = hex[c >> 4];
            buf[(*o)++] = hex[c & 15];
        }
    }
}

/* Appends RFC 3339 UTC ("2024-01-31T00:00:00Z") of t at buf+*o (room for 32). */
static void time_into(int64_t t, char *buf, size_t *o)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL) {
        *o += (size_t)snprintf(buf + *o, 32, "%lld", (long long)t);
        return;
    }
    *o += strftime(buf + *o, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *gw_selector_binding(const gw_selector *s)
{
    if (s == NULL || !s->has_selector || s->kind == MKTO_SEL_KEYS)
        return NULL;
    size_t cap = 128 + (s->list_name != NULL ? 3 * strlen(s->list_name) : 0) +
                 (s->fieldset != NULL ? strlen(s->fieldset) : 0);
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    size_t o = 0;
    if (s->kind == MKTO_SEL_STATIC_LIST) {
        if (s->list_name != NULL) {
            memcpy(buf, "staticList=", 11);
            o = 11;
            pct_encode_into(s->list_name, buf, &o);
        } else {
            o = (size_t)snprintf(buf, cap, "staticListId=%lld", (long long)s->list_id);
        }
    } else {
        memcpy(buf, "updatedSince=", 13);
        o = 13;
        time_into(s->updated_since, buf, &o);
        if (s->updated_until != 0) {
            memcpy(buf + o, "&updatedUntil=", 14);
            o += 14;
            time_into(s->updated_until, buf, &o);
        }
    }
    if (s->nfields > 0 && s->fieldset != NULL) {
        o += (size_t)snprintf(buf + o, cap - o, "&fields=%s", s->fieldset);
    }
    snprintf(buf + o, cap - o, "&limit=%d", s->limit);
    return buf;
}

/* Equality of two optional strings. */
static bool str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

bool gw_selector_cursor_compatible(const gw_selector *req, const gw_selector *bound)
{
    if (req == NULL || bound == NULL || !bound->has_selector || bound->kind == MKTO_SEL_KEYS)
        return false;
    if (req->has_selector) {
        if (req->kind != bound->kind || !str_eq(req->list_name, bound->list_name) ||
            req->list_id != bound->list_id || req->updated_since != bound->updated_since ||
            req->updated_until != bound->updated_until)
            return false;
    }
    if (req->nfields > 0 && !str_eq(req->fieldset, bound->fieldset))
        return false;
    if (req->has_limit && req->limit != bound->limit)
        return false;
    return true;
}

void gw_selector_clear(gw_selector *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nkeys; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->list_name);
    for (size_t i = 0; i < s->nfields; i++)
        free(s->fields[i]);
    free(s->fields);
    free(s->fieldset);
    free(s->cursor);
    memset(s, 0, sizeof(*s));
}
