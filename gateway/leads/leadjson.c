/* gateway/leads/leadjson.c - lead records between SOAP structs and the gateway's JSON.
 *
 * Output (gw_lead_to_json): every string that goes into jansson is checked
 * for UTF-8 first; a value Marketo sent that is not UTF-8 (libxml2 should
 * never let one through) gets U+FFFD for each bad byte rather than breaking
 * the response.
 *
 * Input (gw_sync_body_scan, gw_sync_body_leads): jansson rejects invalid
 * JSON, invalid UTF-8, \u0000 and duplicate member names; this file checks
 * the shape and every string, one lead at a time. Messages name the lead
 * index and member, never a value.
 */
#include "gateway/leads/leadjson.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/leads/query.h"

/* ---- output ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < 4) {
        i++;
        if (gw_utf8_valid((const char *)s, i))
            return i;
    }
    return 0;
}

/* New JSON string of s, with each byte that is not part of a valid UTF-8
 * sequence replaced by U+FFFD. NULL on no memory. */
static json_t *safe_string(const char *s)
{
    size_t len = strlen(s);
    if (gw_utf8_valid(s, len))
        return json_stringn_nocheck(s, len);
    char *buf = malloc(3 * len + 1);
    if (buf == NULL)
        return NULL;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0) {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, u + i, n);
            o += n;
            i += n;
        }
    }
    json_t *j = json_stringn_nocheck(buf, o);
    free(buf);
    return j;
}

/* JSON string of s, or null for NULL. */
static json_t *string_or_null(const char *s)
{
    return s == NULL ? json_null() : safe_string(s);
}

/* Integer attribute: an optional '-' then digits only, fitting a long long. */
static json_t *parse_integer(const char *v)
{
    const char *p = v[0] == '-' ? v + 1 : v;
    if (*p < '0' || *p > '9')
        return NULL;
    errno = 0;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return NULL;
    return json_integer((json_int_t)n);
}

/* Float or currency attribute: a decimal number (no hex, inf, nan or
 * blanks) that parses completely to a finite double. */
static json_t *parse_real(const char *v)
{
    if (v[0] == '\0')
        return NULL;
    for (const char *p = v; *p != '\0'; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' || *p == 'e' ||
              *p == 'E'))
            return NULL;
    }
    if (v[0] == '+' || v[0] == 'e' || v[0] == 'E')
        return NULL;
    errno = 0;
    char *end = NULL;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !isfinite(d))
        return NULL;
    return json_real(d);
}

/* Boolean attribute: true/false/1/0, any case. */
static json_t *parse_bool(const char *v)
{
    if (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return json_true();
    if (strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return json_false();
    return NULL;
}

json_t *gw_attr_to_json(const mkto_attr *a)
{
    if (a == NULL || a->value == NULL)
        return json_null();
    json_t *j = NULL;
    if (a->type != NULL) {
        if (strcasecmp(a->type, "integer") == 0)
            j = parse_integer(a->value);
        else if (strcasecmp(a->type, "float") == 0 || strcasecmp(a->type, "currency") == 0)
            j = parse_real(a->value);
        else if (strcasecmp(a->type, "boolean") == 0)
            j = parse_bool(a->value);
    }
    return j != NULL ? j : safe_string(a->value);
}

json_t *gw_lead_to_json(const mkto_lead *l)
{
    json_t *obj = json_object();
    json_t *attrs = json_object();
    if (obj == NULL || attrs == NULL)
        goto fail;
    if (json_object_set_new_nocheck(obj, "id", l->has_id ? json_integer(l->id) : json_null()) ||
        json_object_set_new_nocheck(obj, "email", string_or_null(l->email)) ||
        json_object_set_new_nocheck(obj, "foreignSysPersonId",
                                    string_or_null(l->foreign_sys_person_id)) ||
        json_object_set_new_nocheck(obj, "foreignSysType", string_or_null(l->foreign_sys_type)))
        goto fail;
    for (size_t i = 0; i < l->nattrs; i++) {
        const mkto_attr *a = &l->attrs[i];
        if (a->name == NULL)
            continue;
        json_t *v = gw_attr_to_json(a);
        if (v == NULL)
            goto fail;
        size_t nlen = strlen(a->name);
        if (gw_utf8_valid(a->name, nlen)) {
            if (json_object_set_new_nocheck(attrs, a->name, v) != 0)
                goto fail;
        } else {
            json_t *key = safe_string(a->name);
            int rc = key == NULL ? -1 : json_object_set_new_nocheck(attrs, json_string_value(key), v);
            if (key == NULL)
                json_decref(v);
            json_decref(key);
            if (rc != 0)
                goto fail;
        }
    }
    if (json_object_set_new_nocheck(obj, "attributes", attrs) != 0) {
        attrs = NULL; /* stolen even on failure */
        goto fail;
    }
    return obj;
fail:
    json_decref(attrs);
    json_decref(obj);
    return NULL;
}

/* ---- sync input ------------------------------------------------------------- */

/* Whether name is [A-Za-z0-9_]{1,64}: safe to echo and to send as attrName. */
static bool name_ok(const char *name)
{
    size_t n = 0;
    for (; name[n] != '\0'; n++) {
        char ch = name[n];
        if (n >= 64 ||
            !((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return n > 0;
}

/* Checks one string of the body (already valid UTF-8 per jansson): length,
 * control characters other than tab/LF/CR, and U+FFFE/U+FFFF, which XML
 * cannot carry. Returns NULL or the problem. */
static const char *string_problem(const char *s, size_t len)
{
    if (len > GW_SYNC_MAX_STRING)
        return "longer than 65536 bytes";
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        if ((u[i] < 0x20 && u[i] != '\t' && u[i] != '\n' && u[i] != '\r') || u[i] == 0x7f)
            return "contains a control character";
        if (u[i] == 0xEF && i + 2 < len && u[i + 1] == 0xBF && (u[i + 2] == 0xBE || u[i + 2] == 0xBF))
            return "contains a character XML cannot carry";
    }
    if (!gw_utf8_valid(s, len))
        return "is not valid UTF-8";
    return NULL;
}

/* Shortest "%.*g" form of d that reads back as d. */
static void format_real(double d, char *buf, size_t len)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* Converts one attribute value to its string form into a->value. Returns
 * 0, or -1 with err filled. */
static int attr_value(json_t *v, size_t li, const char *name, mkto_attr *a, gw_err *err)
{
    char buf[64];
    const char *s;
    size_t slen;
    switch (json_typeof(v)) {
    case JSON_STRING: {
        s = json_string_value(v);
        slen = json_string_length(v);
        const char *prob = string_problem(s, slen);
        if (prob != NULL)
            return GW_ERR_FAIL(err, 400, "leads[%zu].attributes.%s: %s", li, name, prob);
        break;
    }
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        s = buf;
        slen = strlen(buf);
        break;
    case JSON_REAL:
        format_real(json_real_value(v), buf, sizeof(buf));
        s = buf;
        slen = strlen(buf);
        break;
    case JSON_TRUE:
        s = "true";
        slen = 4;
        break;
    case JSON_FALSE:
        s = "false";
        slen = 5;
        break;
    case JSON_NULL:
        s = "";
        slen = 0;
        break;
    default:
        return GW_ERR_FAIL(err, 400,
                           "leads[%zu].attributes.%s: must be a string, number, boolean or null",
                           li, name);
    }
    a->value = strndup(s, slen);
    if (a->value == NULL)
        return GW_ERR_FAIL(err, 500, "out of memory");
    return 0;
}

/* Copies a key string member (email, foreignSysPersonId) into *dst after
 * checking it. null leaves *dst NULL. Returns 0, or -1 with err filled. */
static int key_string(json_t *v, size_t li, const char *member, char **dst, gw_err *err)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return GW_ERR_FAIL(err, 400, "leads[%zu].%s: must be a string", li, member);
    size_t len = json_string_length(v);
    if (len == 0)
        return GW_ERR_FAIL(err, 400, "leads[%zu].%s: must not be empty", li, member);
    const char *prob = string_problem(json_string_value(v), len);
    if (prob != NULL)
        return GW_ERR_FAIL(err, 400, "leads[%zu].%s: %s", li, member, prob);
    *dst = strndup(json_string_value(v), len);
    if (*dst == NULL)
        return GW_ERR_FAIL(err, 500, "out of memory");
    return 0;
}

/* Validates lead li of the body into l. Returns 0, or -1 with err filled. */
static int parse_lead(json_t *jl, size_t li, mkto_lead *l, gw_err *err)
{
    if (!json_is_object(jl))
        return GW_ERR_FAIL(err, 400, "leads[%zu]: must be an object", li);
    const char *member;
    json_t *v;
    json_t *attrs = NULL;
    json_object_foreach(jl, member, v) {
        if (strcmp(member, "id") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > 2147483647)
                return GW_ERR_FAIL(err, 400,
                                   "leads[%zu].id: must be an integer from 1 to 2147483647", li);
            l->has_id = true;
            l->id = (int64_t)json_integer_value(v);
        } else if (strcmp(member, "email") == 0) {
            if (key_string(v, li, "email", &l->email, err) != 0)
                return -1;
        } else if (strcmp(member, "foreignSysPersonId") == 0) {
            if (key_string(v, li, "foreignSysPersonId", &l->foreign_sys_person_id, err) != 0)
                return -1;
        } else if (strcmp(member, "foreignSysType") == 0) {
            if (json_is_null(v))
                continue;
            const char *t = json_string_value(v);
            if (t == NULL || (strcmp(t, "CUSTOM") != 0 && strcmp(t, "SFDC") != 0 &&
                              strcmp(t, "NETSUITE") != 0))
                return GW_ERR_FAIL(err, 400,
                                   "leads[%zu].foreignSysType: must be CUSTOM, SFDC or NETSUITE",
                                   li);
            l->foreign_sys_type = strdup(t);
            if (l->foreign_sys_type == NULL)
                return GW_ERR_FAIL(err, 500, "out of memory");
        } else if (strcmp(member, "attributes") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_object(v))
                return GW_ERR_FAIL(err, 400, "leads[%zu].attributes: must be an object", li);
            attrs = v;
        } else if (name_ok(member) && strlen(member) <= 32) {
            return GW_ERR_FAIL(err, 400, "leads[%zu]: unknown member '%s'", li, member);
        } else {
            return GW_ERR_FAIL(err, 400, "leads[%zu]: unknown member", li);
        }
    }
    if (!l->has_id && l->email == NULL && l->foreign_sys_person_id == NULL)
        return GW_ERR_FAIL(err, 400, "leads[%zu]: needs id, email or foreignSysPersonId", li);

    if (attrs != NULL && json_object_size(attrs) > 0) {
        l->attrs = calloc(json_object_size(attrs), sizeof(*l->attrs));
        if (l->attrs == NULL)
            return GW_ERR_FAIL(err, 500, "out of memory");
        const char *name;
        json_object_foreach(attrs, name, v) {
            if (!name_ok(name))
                return GW_ERR_FAIL(err, 400,
                                   "leads[%zu].attributes: invalid attribute name (letters, digits "
                                   "and _ only, 1 to 64)",
                                   li);
            mkto_attr *a = &l->attrs[l->nattrs];
            a->name = strdup(name);
            if (a->name == NULL)
                return GW_ERR_FAIL(err, 500, "out of memory");
            l->nattrs++;
            if (attr_value(v, li, name, a, err) != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- the sync body, lead by lead ------------------------------------------------ */

/* The sync body is never held as one jansson tree (10,000 leads of 78
 * attributes made a 200 MB tree of a 6 MiB body): gw_sync_body_scan walks
 * the top-level object and the "leads" array itself (only whitespace and
 * the , : [ ] { } between values) and lets jansson parse each member name,
 * each "dedup" value and each lead on its own (JSON_DISABLE_EOF_CHECK tells
 * how many bytes a value took). Each lead is checked and dropped; only its
 * place in the body is kept, and gw_sync_body_leads converts a slice again
 * when it is about to be sent. */

/* Offset of the first non-whitespace byte of s at or after i. */
static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* What a jansson error means for the client ("is not valid JSON", ...). */
static const char *jerr_what(const json_error_t *jerr)
{
    if (jerr != NULL && json_error_code(jerr) == json_error_invalid_utf8)
        return "is not valid UTF-8";
    if (jerr != NULL && json_error_code(jerr) == json_error_duplicate_key)
        return "has a duplicate member";
    return "is not valid JSON";
}

/* Fills err with "request body <what> (line L, column C)" for absolute
 * offset pos of body (1-based, as people count). Returns -1. */
static int json_fail(const char *body, size_t pos, const char *what, gw_err *err)
{
    int line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (body[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return GW_ERR_FAIL(err, 400, "request body %s (line %d, column %d)", what, line, col);
}

/* Parses the one JSON value that starts at *i into *out (new reference) and
 * moves *i past it. Returns 0, or -1 with err filled. */
static int next_value(const char *body, size_t len, size_t *i, json_t **out, gw_err *err)
{
    json_error_t jerr;
    *out = json_loadb(body + *i, len - *i,
                      JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (*out == NULL)
        return json_fail(body, *i + (size_t)(jerr.position > 0 ? jerr.position : 0),
                         jerr_what(&jerr), err);
    *i += (size_t)jerr.position;
    return 0;
}

/* Expects byte c at the next non-whitespace offset after *i; moves past it. */
static int expect(const char *body, size_t len, size_t *i, char c, gw_err *err)
{
    *i = skip_ws(body, len, *i);
    if (*i >= len || body[*i] != c)
        return json_fail(body, *i, jerr_what(NULL), err);
    (*i)++;
    return 0;
}

/* Appends lead li's place in the body (and its id) to out->spans. */
static int add_span(gw_sync_body *out, size_t off, size_t n, const mkto_lead *l, gw_err *err)
{
    if (out->nleads == out->cap) {
        size_t ncap = out->cap ? out->cap * 2 : 64;
        gw_sync_span *ns = realloc(out->spans, ncap * sizeof *ns);
        if (ns == NULL)
            return GW_ERR_FAIL(err, 500, "out of memory");
        out->spans = ns;
        out->cap = ncap;
    }
    out->spans[out->nleads].off = off;
    out->spans[out->nleads].len = n;
    out->spans[out->nleads].id = l->has_id ? l->id : 0;
    out->nleads++;
    return 0;
}

/* Walks the "leads" array that starts at *i: checks every lead, keeps its
 * place. Returns 0, or -1 with err filled. */
static int scan_leads(const char *body, size_t len, size_t *i, size_t max_leads,
                      gw_sync_body *out, gw_err *err)
{
    *i = skip_ws(body, len, *i);
    if (*i >= len || body[*i] != '[') {
        /* not an array: say so if it is a value at all */
        json_t *v = NULL;
        if (next_value(body, len, i, &v, err) != 0)
            return -1;
        json_decref(v);
        return GW_ERR_FAIL(err, 400, "leads: must be an array");
    }
    (*i)++;
    *i = skip_ws(body, len, *i);
    if (*i < len && body[*i] == ']') {
        (*i)++;
        return GW_ERR_FAIL(err, 400, "leads: must not be empty");
    }
    for (;;) {
        *i = skip_ws(body, len, *i);
        size_t start = *i;
        json_t *jl = NULL;
        if (next_value(body, len, i, &jl, err) != 0)
            return -1;
        if (out->nleads >= max_leads) {
            json_decref(jl);
            return GW_ERR_FAIL(err, 400, "leads: at most %zu leads per request", max_leads);
        }
        mkto_lead l;
        memset(&l, 0, sizeof l);
        int rc = parse_lead(jl, out->nleads, &l, err);
        json_decref(jl);
        if (rc == 0)
            rc = add_span(out, start, *i - start, &l, err);
        mkto_lead_clear(&l);
        if (rc != 0)
            return -1;
        *i = skip_ws(body, len, *i);
        if (*i < len && body[*i] == ',') {
            (*i)++;
            continue;
        }
        return expect(body, len, i, ']', err);
    }
}

int gw_sync_body_scan(const char *body, size_t len, size_t max_leads, gw_sync_body *out,
                      gw_err *err)
{
    int rc = -1;
    size_t i = 0;
    bool seen_leads = false, seen_dedup = false;
    json_t *v = NULL;

    memset(out, 0, sizeof *out);
    out->dedup = true;
    if (body == NULL || len == 0) {
        rc = GW_ERR_FAIL(err, 400, "request body is empty");
        goto out;
    }
    if (len > GW_SYNC_MAX_BODY) {
        rc = GW_ERR_FAIL(err, 400, "request body larger than %u bytes", GW_SYNC_MAX_BODY);
        goto out;
    }
    i = skip_ws(body, len, 0);
    if (i < len && body[i] != '{') {
        /* valid JSON that is not an object, or not JSON at all */
        if (next_value(body, len, &i, &v, err) != 0)
            goto out;
        rc = GW_ERR_FAIL(err, 400, "request body must be a JSON object");
        goto out;
    }
    if (expect(body, len, &i, '{', err) != 0)
        goto out;
    i = skip_ws(body, len, i);
    if (i < len && body[i] == '}') {
        i++;
    } else {
        for (;;) {
            i = skip_ws(body, len, i);
            size_t at = i;
            if (i >= len || body[i] != '"') {
                json_fail(body, i, jerr_what(NULL), err);
                goto out;
            }
            if (next_value(body, len, &i, &v, err) != 0)
                goto out;
            const char *member = json_string_value(v);
            if (expect(body, len, &i, ':', err) != 0)
                goto out;
            if (strcmp(member, "leads") == 0 || strcmp(member, "dedup") == 0) {
                bool *seen = member[0] == 'l' ? &seen_leads : &seen_dedup;
                if (*seen) {
                    json_fail(body, at, "has a duplicate member", err);
                    goto out;
                }
                *seen = true;
            }
            if (strcmp(member, "leads") == 0) {
                if (scan_leads(body, len, &i, max_leads, out, err) != 0)
                    goto out;
            } else if (strcmp(member, "dedup") == 0) {
                json_t *d = NULL;
                i = skip_ws(body, len, i);
                if (next_value(body, len, &i, &d, err) != 0)
                    goto out;
                bool ok = json_is_boolean(d);
                out->dedup = json_is_true(d);
                json_decref(d);
                if (!ok) {
                    gw_err_set(err, 400, "dedup: must be true or false");
                    goto out;
                }
            } else if (name_ok(member) && strlen(member) <= 32) {
                gw_err_set(err, 400, "unknown member '%s'", member);
                goto out;
            } else {
                gw_err_set(err, 400, "unknown member");
                goto out;
            }
            json_decref(v);
            v = NULL;
            i = skip_ws(body, len, i);
            if (i < len && body[i] == ',') {
                i++;
                continue;
            }
            if (expect(body, len, &i, '}', err) != 0)
                goto out;
            break;
        }
    }
    i = skip_ws(body, len, i);
    if (i != len) {
        json_fail(body, i, jerr_what(NULL), err);
        goto out;
    }
    if (!seen_leads) {
        gw_err_set(err, 400, "leads: required");
        goto out;
    }
    rc = 0;
out:
    json_decref(v);
    if (rc != 0)
        gw_sync_body_clear(out);
    return rc;
}

int gw_sync_body_leads(const gw_sync_body *b, const char *body, size_t first, size_t n,
                       mkto_lead *out, gw_err *err)
{
    size_t done = 0;
    for (; done < n && first + done < b->nleads; done++) {
        const gw_sync_span *sp = &b->spans[first + done];
        json_error_t jerr;
        json_t *jl = json_loadb(body + sp->off, sp->len, JSON_REJECT_DUPLICATES, &jerr);
        int rc = jl != NULL ? parse_lead(jl, first + done, &out[done], err)
                            : GW_ERR_FAIL(err, 500, "out of memory");
        json_decref(jl);
        if (rc != 0) {
            for (size_t k = 0; k <= done; k++)
                mkto_lead_clear(&out[k]);
            return -1;
        }
    }
    return 0;
}

void gw_sync_body_clear(gw_sync_body *b)
{
    if (b == NULL)
        return;
    free(b->spans);
    memset(b, 0, sizeof *b);
    b->dedup = true;
}

int gw_sync_request_parse(const char *body, size_t len, size_t max_leads,
                          gw_sync_request *out, gw_err *err)
{
    gw_sync_body b;
    if (gw_sync_body_scan(body, len, max_leads, &b, err) != 0)
        return -1;
    out->dedup = b.dedup;
    out->leads = calloc(b.nleads, sizeof *out->leads);
    if (out->leads == NULL) {
        gw_sync_body_clear(&b);
        return GW_ERR_FAIL(err, 500, "out of memory");
    }
    int rc = gw_sync_body_leads(&b, body, 0, b.nleads, out->leads, err);
    if (rc == 0)
        out->nleads = b.nleads;
    else
        gw_sync_request_clear(out);
    gw_sync_body_clear(&b);
    return rc;
}

void gw_sync_request_clear(gw_sync_request *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nleads; i++)
        mkto_lead_clear(&r->leads[i]);
    free(r->leads);
    memset(r, 0, sizeof(*r));
}
