/* marketo/model.h - Marketo's lead database as the gateway sees it, whichever
 * API carries it: lead records, the parameters of a lead query, a page of
 * leads, sync statuses and a fault.
 *
 * Every protocol library (soap/) parses its wire format into these structs
 * and builds its requests from them; the gateway only ever handles these.
 *
 * Ownership: strings and arrays inside a filled struct are malloc'd and
 * belong to it; the matching mkto_*_clear() frees them and zeroes the
 * struct (it accepts NULL and zeroed or half-filled structs). mkto_query
 * only borrows its pointers.
 */
#ifndef MARKETO_MODEL_H
#define MARKETO_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "marketo/leadkey.h"

/* ---- lead records ---------------------------------------------------------- */

/* One leadAttributeList/attribute. */
typedef struct mkto_attr {
    char *name;   /* attrName, never NULL */
    char *type;   /* attrType ("string", "integer", ...); NULL when absent or nil */
    char *value;  /* attrValue; NULL when xsi:nil */
} mkto_attr;

/* One LeadRecord, as parsed from a response or given to a sync builder. */
typedef struct mkto_lead {
    bool has_id;                  /* Id present and not nil */
    int64_t id;                   /* Id (xs:int on the wire) */
    char *email;                  /* Email; NULL when absent or nil */
    char *foreign_sys_person_id;  /* ForeignSysPersonId; NULL when absent or nil */
    char *foreign_sys_type;       /* ForeignSysType (CUSTOM, SFDC, NETSUITE); NULL when absent/nil */
    mkto_attr *attrs;             /* leadAttributeList, in document order */
    size_t nattrs;                /* entries in attrs */
} mkto_lead;

/* Frees the members of one lead (not the struct itself). */
void mkto_lead_clear(mkto_lead *l);
/* Deep-copies src into dst. Returns 0, or -1 out of memory (dst zeroed). */
int mkto_lead_copy(mkto_lead *dst, const mkto_lead *src);

/* ---- a lead query (one getMultipleLeads call) ------------------------------ */

typedef enum mkto_selector_kind {
    MKTO_SEL_KEYS = 0,     /* LeadKeySelector */
    MKTO_SEL_STATIC_LIST,  /* StaticListSelector */
    MKTO_SEL_UPDATED_AT,   /* LastUpdateAtSelector */
} mkto_selector_kind;

/* Parameters of one getMultipleLeads call. */
typedef struct mkto_query {
    mkto_selector_kind kind;       /* which leadSelector */
    mkto_key_type key_type;        /* SEL_KEYS: keyType */
    const char *const *keys;       /* SEL_KEYS: keyValues (1..100; more is SOAP_ERR_INVALID) */
    size_t nkeys;                  /* SEL_KEYS: entries in keys */
    const char *list_name;         /* SEL_STATIC_LIST: staticListName, or NULL */
    int64_t list_id;               /* SEL_STATIC_LIST: staticListId when > 0 (name or id, not both needed) */
    const char *oldest_updated_at; /* SEL_UPDATED_AT: W3C, required */
    const char *latest_updated_at; /* SEL_UPDATED_AT: W3C, or NULL (open end) */
    const char *stream_position;   /* streamPosition from the previous page, or NULL */
    int batch_size;                /* batchSize; 0 omits it */
    const char *const *attrs;      /* includeAttributes, or NULL for all */
    size_t nattrs;                 /* entries in attrs */
} mkto_query;

/* ---- answers ---------------------------------------------------------------- */

/* A fault Marketo answered with (SOAP: a SOAP Fault with serviceException). */
typedef struct mkto_fault {
    int code;           /* serviceException/code, else the leading number of faultstring, else 0 */
    bool retryable;     /* mkto_code_retryable(code) (marketo/codes.h) */
    char *faultcode;    /* "SOAP-ENV:Client", or NULL */
    char *faultstring;  /* "20014 - Authentication failed", or NULL */
    char *message;      /* serviceException/message, or NULL */
} mkto_fault;
void mkto_fault_clear(mkto_fault *f);
/* Deep-copies src into dst. Returns 0, or -1 out of memory: dst then keeps
 * the code and the retryable flag (what the mapping needs) and no text. */
int mkto_fault_copy(mkto_fault *dst, const mkto_fault *src);

/* getLead (count -> return_count) and getMultipleLeads. */
typedef struct mkto_leads {
    int return_count;           /* returnCount (getLead: count) */
    int remaining_count;        /* remainingCount (getLead: 0) */
    char *new_stream_position;  /* newStreamPosition; "" when empty/last page; NULL for getLead */
    mkto_lead *leads;           /* leadRecordList, in document order */
    size_t nleads;              /* entries in leads */
} mkto_leads;
void mkto_leads_clear(mkto_leads *r);

typedef enum mkto_sync_state {
    MKTO_SYNC_CREATED = 0,
    MKTO_SYNC_UPDATED,
    MKTO_SYNC_FAILED,
} mkto_sync_state;

/* One SyncStatus. */
typedef struct mkto_sync_status {
    int64_t lead_id;       /* leadId (0 when Marketo gives none, e.g. some FAILED) */
    mkto_sync_state state; /* status */
    char *error;           /* error text; NULL when nil/absent */
} mkto_sync_status;

/* syncLead (one status) and syncMultipleLeads (one per record, in order). */
typedef struct mkto_sync_result {
    mkto_sync_status *statuses;  /* in document order */
    size_t nstatuses;            /* entries in statuses */
} mkto_sync_result;
void mkto_sync_result_clear(mkto_sync_result *r);

#endif /* MARKETO_MODEL_H */
