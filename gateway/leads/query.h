/* gateway/leads/query.h - GET /leads query parameters -> one validated selector.
 *
 * Pure: strings in, struct out, no HTTP. Distrusts everything: unknown
 * parameters, two selectors at once, empty or over-long values, invalid
 * UTF-8, control characters, bad RFC 3339, limit out of range are all
 * rejected with a message fit for a 400 problem "detail" (never echoing a
 * key value).
 */
#ifndef GW_QUERY_H
#define GW_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "marketo/leadkey.h"
#include "gateway/err.h"
#include "soap/soap.h"

/* Longest single key value or list name, bytes: the longest key lead-key
 * identity handles (marketo/leadkey.h). */
#define GW_QUERY_MAX_VALUE MKTO_KEY_MAX_LEN

typedef struct gw_query_limits {
    size_t max_keys;        /* keys in one lookup (gateway.max_keys) */
    int max_page_size;      /* largest limit= (gateway.max_page_size) */
    int default_page_size;  /* limit when none is given */
} gw_query_limits;

typedef struct gw_selector {
    mkto_selector_kind kind;  /* keys, static list, or updated-at */
    mkto_key_type key_type;   /* SEL_KEYS: which of the nine */
    char **keys;              /* SEL_KEYS: values, in request order, duplicates removed */
    size_t nkeys;             /* SEL_KEYS: entries in keys */
    char *list_name;          /* SEL_STATIC_LIST by name, or NULL */
    int64_t list_id;          /* SEL_STATIC_LIST by id (> 0), or 0 */
    int64_t updated_since;    /* SEL_UPDATED_AT: epoch s (inclusive) */
    int64_t updated_until;    /* SEL_UPDATED_AT: epoch s; 0 when open (= now) */
    char **fields;            /* fields=, sorted, duplicates removed; NULL: all */
    size_t nfields;           /* entries in fields */
    char *fieldset;           /* fields joined by ',' ("" for all): the cache's field-set key */
    int limit;                /* limit= or the default */
    bool has_limit;           /* limit= was given */
    char *cursor;             /* cursor= token, or NULL */
    bool has_selector;        /* a selector parameter was given (false: cursor only) */
} gw_selector;

/* Parses n URL-decoded name/value pairs (repeated names allowed for key
 * parameters; "email=a,b" and "email=a&email=b" are the same). Returns 0, or
 * -1 with a message in err. out must be zeroed; clear it after either. */
int gw_query_parse(const char *const *names, const char *const *values, size_t n,
                   const gw_query_limits *lim, gw_selector *out, gw_err *err);

/* Parses a raw query string ("a=b&c=d", percent-encoded) the same way. */
int gw_query_parse_string(const char *qs, const gw_query_limits *lim, gw_selector *out,
                          gw_err *err);

/* The canonical query string of a selector's list/updated-at selector,
 * fields and limit, without the cursor: what a cursor is bound to, and what
 * gw_query_parse_string() turns back into the same selector. malloc'd. */
char *gw_selector_binding(const gw_selector *s);

/* Query parameter name of a key type ("email", "id", "cookie",
 * "leadOwnerEmail", "sfdcAccountId", ...). Static storage. */
const char *gw_key_param_name(mkto_key_type t);

/* Whether a request carrying a cursor is compatible with the selector the
 * cursor was bound to (bound: gw_query_parse_string() of the cursor's
 * binding): every parameter the request gives besides cursor= (selector,
 * fields=, limit=) must equal the bound one; absent ones are taken from the
 * cursor. */
bool gw_selector_cursor_compatible(const gw_selector *req, const gw_selector *bound);

/* Whether s[0..len) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF). Shared with leadjson.c. */
bool gw_utf8_valid(const char *s, size_t len);

/* Frees everything; leaves s zeroed. */
void gw_selector_clear(gw_selector *s);

#endif /* GW_QUERY_H */
