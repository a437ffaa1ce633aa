/* gateway/leadjson.c - lead records between SOAP structs and the gateway's JSON.
 *
 * Output (gw_lead_to_json): every string that goes into jansson is checked
 * for UTF-8 first; a value Marketo sent that is not UTF-8 (libxml2 should
 * never let one through) gets U+FFFD for each bad byte rather than breaking
 * the response.
 *
 * Input (gw_sync_request_parse): jansson rejects invalid JSON, invalid
 * UTF-8, \u0000 and duplicate member names; this file checks the shape and
 * every string. Messages name the lead index and member, never a value.
 */
#include "gateway/leadjson.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/query.h"

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

json_t *gw_attr_to_json(const soap_attr *a)
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

json_t *gw_lead_to_json(const soap_lead *l)
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
        const soap_attr *a = &l->attrs[i];
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

/* Formats the 400 detail into err. Always returns -1. */
__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen,
                                                      const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

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
static int attr_value(json_t *v, size_t li, const char *name, soap_attr *a, char *err,
                      size_t errlen)
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
            return fail(err, errlen, "leads[%zu].attributes.%s: %s", li, name, prob);
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
        return fail(err, errlen,
                    "leads[%zu].attributes.%s: must be a string, number, boolean or null", li,
                    name);
    }
    a->value = strndup(s, slen);
    if (a->value == NULL)
        return fail(err, errlen, "out of memory");
    return 0;
}

/* Copies a key string member (email, foreignSysPersonId) into *dst after
 * checking it. null leaves *dst NULL. Returns 0, or -1 with err filled. */
static int key_string(json_t *v, size_t li, const char *member, char **dst, char *err,
                      size_t errlen)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(err, errlen, "leads[%zu].%s: must be a string", li, member);
    size_t len = json_string_length(v);
    if (len == 0)
        return fail(err, errlen, "leads[%zu].%s: must not be empty", li, member);
    const char *prob = string_problem(json_string_value(v), len);
    if (prob != NULL)
        return fail(err, errlen, "leads[%zu].%s: %s", li, member, prob);
    *dst = strndup(json_string_value(v), len);
    if (*dst == NULL)
        return fail(err, errlen, "out of memory");
    return 0;
}

/* Validates lead li of the body into l. Returns 0, or -1 with err filled. */
static int parse_lead(json_t *jl, size_t li, soap_lead *l, char *err, size_t errlen)
{
    if (!json_is_object(jl))
        return fail(err, errlen, "leads[%zu]: must be an object", li);
    const char *member;
    json_t *v;
    json_t *attrs = NULL;
    json_object_foreach(jl, member, v) {
        if (strcmp(member, "id") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > 2147483647)
                return fail(err, errlen, "leads[%zu].id: must be an integer from 1 to 2147483647",
                            li);
            l->has_id = true;
            l->id = (int64_t)json_integer_value(v);
        } else if (strcmp(member, "email") == 0) {
            if (key_string(v, li, "email", &l->email, err, errlen) != 0)
                return -1;
        } else if (strcmp(member, "foreignSysPersonId") == 0) {
            if (key_string(v, li, "foreignSysPersonId", &l->foreign_sys_person_id, err,
                           errlen) != 0)
                return -1;
        } else if (strcmp(member, "foreignSysType") == 0) {
            if (json_is_null(v))
                continue;
            const char *t = json_string_value(v);
            if (t == NULL || (strcmp(t, "CUSTOM") != 0 && strcmp(t, "SFDC") != 0 &&
                              strcmp(t, "NETSUITE") != 0))
                return fail(err, errlen,
                            "leads[%zu].foreignSysType: must be CUSTOM, SFDC or NETSUITE", li);
            l->foreign_sys_type = strdup(t);
            if (l->foreign_sys_type == NULL)
                return fail(err, errlen, "out of memory");
        } else if (strcmp(member, "attributes") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_object(v))
                return fail(err, errlen, "leads[%zu].attributes: must be an object", li);
            attrs = v;
        } else if (name_ok(member) && strlen(member) <= 32) {
            return fail(err, errlen, "leads[%zu]: unknown member '%s'", li, member);
        } else {
            return fail(err, errlen, "leads[%zu]: unknown member", li);
        }
    }
    if (!l->has_id && l->email == NULL && l->foreign_sys_person_id == NULL)
        return fail(err, errlen, "leads[%zu]: needs id, email or foreignSysPersonId", li);

    if (attrs != NULL && json_object_size(attrs) > 0) {
        l->attrs = calloc(json_object_size(attrs), sizeof(*l->attrs));
        if (l->attrs == NULL)
            return fail(err, errlen, "out of memory");
        const char *name;
        json_object_foreach(attrs, name, v) {
            if (!name_ok(name))
                return fail(err, errlen,
                            "leads[%zu].attributes: invalid attribute name (letters, digits "
                            "and _ only, 1 to 64)",
                            li);
            soap_attr *a = &l->attrs[l->nattrs];
            a->name = strdup(name);
            if (a->name == NULL)
                return fail(err, errlen, "out of memory");
            l->nattrs++;
            if (attr_value(v, li, name, a, err, errlen) != 0)
                return -1;
        }
    }
    return 0;
}

int gw_sync_request_parse(const char *body, size_t len, size_t max_leads,
                          gw_sync_request *out, char *err, size_t errlen)
{
    int rc = -1;
    json_t *root = NULL;
    json_error_t jerr;

    if (body == NULL || len == 0) {
        rc = fail(err, errlen, "request body is empty");
        goto out;
    }
    if (len > GW_SYNC_MAX_BODY) {
        rc = fail(err, errlen, "request body larger than %u bytes", GW_SYNC_MAX_BODY);
        goto out;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        switch (json_error_code(&jerr)) {
        case json_error_invalid_utf8:
            rc = fail(err, errlen, "request body is not valid UTF-8 (line %d, column %d)",
                      jerr.line, jerr.column);
            break;
        case json_error_duplicate_key:
            rc = fail(err, errlen, "request body has a duplicate member (line %d, column %d)",
                      jerr.line, jerr.column);
            break;
        default:
            rc = fail(err, errlen, "request body is not valid JSON (line %d, column %d)",
                      jerr.line, jerr.column);
            break;
        }
        goto out;
    }
    if (!json_is_object(root)) {
        rc = fail(err, errlen, "request body must be a JSON object");
        goto out;
    }
    out->dedup = true;
    json_t *leads = NULL;
    const char *member;
    json_t *v;
    json_object_foreach(root, member, v) {
        if (strcmp(member, "leads") == 0) {
            leads = v;
        } else if (strcmp(member, "dedup") == 0) {
            if (!json_is_boolean(v)) {
                rc = fail(err, errlen, "dedup: must be true or false");
                goto out;
            }
            out->dedup = json_is_true(v);
        } else if (name_ok(member) && strlen(member) <= 32) {
            rc = fail(err, errlen, "unknown member '%s'", member);
            goto out;
        } else {
            rc = fail(err, errlen, "unknown member");
            goto out;
        }
    }
    if (leads == NULL) {
        rc = fail(err, errlen, "leads: required");
        goto out;
    }
    if (!json_is_array(leads)) {
        rc = fail(err, errlen, "leads: must be an array");
        goto out;
    }
    size_t n = json_array_size(leads);
    if (n == 0) {
        rc = fail(err, errlen, "leads: must not be empty");
        goto out;
    }
    if (n > max_leads) {
        rc = fail(err, errlen, "leads: at most %zu leads per request", max_leads);
        goto out;
    }
    out->leads = calloc(n, sizeof(*out->leads));
    if (out->leads == NULL) {
        rc = fail(err, errlen, "out of memory");
        goto out;
    }
    out->nleads = n;
    for (size_t i = 0; i < n; i++) {
        if (parse_lead(json_array_get(leads, i), i, &out->leads[i], err, errlen) != 0)
            goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0)
        gw_sync_request_clear(out);
    return rc;
}

void gw_sync_request_clear(gw_sync_request *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nleads; i++)
        soap_lead_clear(&r->leads[i]);
    free(r->leads);
    memset(r, 0, sizeof(*r));
}
