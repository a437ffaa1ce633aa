/* marketo/leadkey.h - lead-key identity: the key types a lead can be looked up
 * by, their names, the attribute that carries each in a lead record, the
 * normal form of a key value, when two keys are the same key, when a lead
 * answers a key, and how many keys one call of each upstream API may carry.
 *
 * Protocol-neutral: SOAP (soap/) and the gateway read these; nothing here
 * knows a wire format. No I/O, no state: every function may be called from
 * any thread.
 */
#ifndef MARKETO_LEADKEY_H
#define MARKETO_LEADKEY_H

#include <stdbool.h>
#include <stddef.h>

#include "marketo/codes.h"

struct mkto_lead; /* marketo/model.h */

/* The nine lead key types of Marketo's SOAP LeadKeyRef, in WSDL order. The
 * names are the SOAP ones; each upstream maps them to what it can search. */
typedef enum mkto_key_type {
    MKTO_KEY_IDNUM = 0,
    MKTO_KEY_COOKIE,
    MKTO_KEY_EMAIL,
    MKTO_KEY_LEADOWNEREMAIL,
    MKTO_KEY_SFDCACCOUNTID,
    MKTO_KEY_SFDCCONTACTID,
    MKTO_KEY_SFDCLEADID,
    MKTO_KEY_SFDCLEADOWNERID,
    MKTO_KEY_SFDCOPPTYID,
    MKTO_KEY__COUNT
} mkto_key_type;

/* "IDNUM", "EMAIL", ...; NULL for an out-of-range value. Static storage. */
const char *mkto_key_type_name(mkto_key_type t);
/* Parses a key type name ("EMAIL"); returns 0, or -1 for an unknown name. */
int mkto_key_type_parse(const char *name, mkto_key_type *out);
/* The lead attribute that carries this key in a LeadRecord, so that leads of
 * a many-key response can be matched back to their keys: "Cookies",
 * "LeadOwnerEmail", "SFDCAccountId", "SFDCContactId", "SFDCLeadId",
 * "SFDCLeadOwnerId", "SFDCOpptyId". NULL for IDNUM and EMAIL, which are the
 * record's own Id and Email elements. Static storage. */
const char *mkto_key_type_attr(mkto_key_type t);

/* ---- key values --------------------------------------------------------------- */

/* Longest key value, in bytes without the NUL, that lead-key identity
 * handles: what a lookup accepts (GW_QUERY_MAX_VALUE is this), hence the
 * longest key a cache entry can have. Normalisation keeps the length, so a
 * buffer of MKTO_KEY_MAX_LEN + 1 bytes holds the normal form of any key
 * that long; a longer value can never have been looked up or cached. */
#define MKTO_KEY_MAX_LEN 512

/* Writes the normal form of a key value of type t into out (size outlen):
 * e-mail key types (EMAIL, LEADOWNEREMAIL) with ASCII letters lower-cased
 * (Marketo matches them case-insensitively), every other type byte for byte.
 * Nothing else changes: no trimming, bytes above 0x7F left alone, the
 * length kept. Idempotent. Returns 0, or -1 when value or out is NULL or the
 * value does not fit (strlen(value) >= outlen). */
int mkto_key_normalize(mkto_key_type t, const char *value, char *out, size_t outlen);

/* Whether key values a and b of type t are the same key: byte equality,
 * except that e-mail key types compare ASCII letters case-insensitively (so
 * it also holds for values not normalised yet). For two normalised values
 * this is strcmp(a, b) == 0. */
bool mkto_key_eq(mkto_key_type t, const char *a, const char *b);

/* Whether lead l carries key value key (normalised) of type t: IDNUM by its
 * Id (key a decimal integer), EMAIL by its Email (case-insensitive), the
 * other types by their mapping attribute mkto_key_type_attr(t), the first
 * one with a value (case-insensitive for LEADOWNEREMAIL). False when the
 * lead lacks the field, or l or key is NULL. How the leads of a many-key
 * answer are filed back under their keys. */
bool mkto_lead_matches_key(const struct mkto_lead *l, mkto_key_type t, const char *key);

/* ---- keys per call ------------------------------------------------------------ */

/* Keys one call may carry, per API (constants, for array bounds). */
#define MKTO_SOAP_KEYS_PER_CALL 100 /* getMultipleLeads LeadKeySelector keyValues;
                                     * more are ignored */
#define MKTO_REST_KEYS_PER_CALL 300 /* filterValues of Get Leads by Filter Type */

/* The most keys one lead lookup call of api (one API, mkto_api of
 * marketo/codes.h) may carry: 100 for MKTO_API_SOAP, 300 for MKTO_API_REST;
 * 0 for anything else (no API, or a set of several). */
size_t mkto_keys_per_call(mkto_api api);

#endif /* MARKETO_LEADKEY_H */
