/* marketo/leadkey.h - lead-key identity: the key types a lead can be looked up
 * by, their names and the attribute that carries each in a lead record.
 *
 * Protocol-neutral: SOAP (soap/) and the gateway read these; nothing here
 * knows a wire format.
 */
#ifndef MARKETO_LEADKEY_H
#define MARKETO_LEADKEY_H

#include <stdbool.h>

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

/* Whether two key values of type t name the same key: case-insensitive for
 * EMAIL and LEADOWNEREMAIL, byte for byte otherwise. */
bool mkto_key_eq(mkto_key_type t, const char *a, const char *b);

struct mkto_lead;
/* Whether lead l carries key value key (normalised as the gateway does) of
 * key type t: IDNUM by Id, EMAIL by Email (case-insensitive), other types by
 * their mapping attribute mkto_key_type_attr(t) (case-insensitive for
 * LEADOWNEREMAIL). False when the lead lacks the field. */
bool mkto_lead_matches_key(const struct mkto_lead *l, mkto_key_type t, const char *key);

#endif /* MARKETO_LEADKEY_H */
