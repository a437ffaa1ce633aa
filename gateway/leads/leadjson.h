/* gateway/leads/leadjson.h - lead records between SOAP structs and the gateway's JSON.
 *
 * Lead object: {"id": 67508, "email": "joe@marketo.com", "foreignSysPersonId":
 * null, "foreignSysType": null, "attributes": {"LeadScore": 11, ...}}.
 * Attribute values keep their attrType: integer -> JSON integer, float and
 * currency -> JSON number, boolean -> true/false, anything else (and a value
 * that does not parse as its type) -> string; xsi:nil -> null.
 */
#ifndef GW_LEADJSON_H
#define GW_LEADJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/err.h"
#include "soap/soap.h"

/* New reference to the JSON object of one lead, or NULL on no memory. */
json_t *gw_lead_to_json(const mkto_lead *l);

/* New reference to one typed attribute value. */
json_t *gw_attr_to_json(const mkto_attr *a);

/* Largest sync body gw_sync_request_parse() accepts, bytes. */
#define GW_SYNC_MAX_BODY (32u * 1024u * 1024u)
/* Largest string (attribute value, e-mail, ...) in a sync body, bytes. */
#define GW_SYNC_MAX_STRING (64u * 1024u)

/* A parsed POST /leads/sync body. */
typedef struct gw_sync_request {
    mkto_lead *leads;  /* in input order; attrs carry string values, type NULL */
    size_t nleads;     /* entries in leads */
    bool dedup;        /* "dedup" (default true) */
} gw_sync_request;

/* Parses and validates a sync body: an object with a non-empty "leads"
 * array of at most max_leads objects, each with an integer "id", a string
 * "email" or a string "foreignSysPersonId"; "attributes" an object of
 * string/number/boolean/null values (null is sent as an empty value);
 * no unknown members; every string valid UTF-8 without control characters.
 * Returns 0, or -1 with a 400 "detail" message in err (naming the index of
 * the offending lead, never its values). out must be zeroed; clear it after. */
int gw_sync_request_parse(const char *body, size_t len, size_t max_leads,
                          gw_sync_request *out, gw_err *err);

/* Frees everything; leaves r zeroed. */
void gw_sync_request_clear(gw_sync_request *r);

/* Where one lead of a sync body is: bytes [off, off + len) of the body. */
typedef struct gw_sync_span {
    size_t off;   /* offset of the lead's object in the body */
    size_t len;   /* its length in bytes */
    int64_t id;   /* its "id", or 0 */
} gw_sync_span;

/* A sync body checked whole, without the leads converted: what
 * gw_sync_body_leads needs to convert any slice of them later. */
typedef struct gw_sync_body {
    gw_sync_span *spans;  /* one per lead, in input order (owned) */
    size_t nleads;        /* entries in spans */
    size_t cap;           /* allocated entries */
    bool dedup;           /* "dedup" (default true) */
} gw_sync_body;

/* Checks a sync body with the same rules and messages as
 * gw_sync_request_parse, holding one lead at a time: the memory it keeps is
 * one gw_sync_span per lead. Returns 0, or -1 with a 400 "detail" in err.
 * Clear out after (also after a failure; it is then empty). */
int gw_sync_body_scan(const char *body, size_t len, size_t max_leads, gw_sync_body *out,
                      gw_err *err);

/* Converts leads [first, first + n) of a scanned body (the same bytes) into
 * out[0..n), which must be zeroed. Returns 0, or -1 (no memory) with
 * out cleared. */
int gw_sync_body_leads(const gw_sync_body *b, const char *body, size_t first, size_t n,
                       mkto_lead *out, gw_err *err);

/* Frees the spans; leaves b empty. */
void gw_sync_body_clear(gw_sync_body *b);

#endif /* GW_LEADJSON_H */
