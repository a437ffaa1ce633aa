/* sim/store.h - marketo-sim's lead database: the field catalogue, leads,
 * static lists, seed data, key lookups and the upsert of syncLead /
 * syncMultipleLeads.
 *
 * One store per process, guarded by one rwlock: readers (lookups, response
 * writing) take sim_store_rdlock(), writers (sync, reset) sim_store_wrlock().
 * Every query function below must be called with the lock held; the leads
 * it returns stay valid until the lock is released.
 */
#ifndef SIM_STORE_H
#define SIM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "soap/soap.h"

/* Number of attributes in the field catalogue (sim_fields). */
#define SIM_NFIELDS 25

/* One entry of the field catalogue. */
typedef struct sim_field {
    const char *name;  /* attrName, case-sensitive */
    const char *type;  /* attrType sent in responses ("string", "integer", ...) */
} sim_field;

/* The catalogue, sorted by name (responses list attributes in this order). */
extern const sim_field sim_fields[SIM_NFIELDS];

/* Index of the catalogue field called name, or -1. */
int sim_field_index(const char *name);

/* One lead. Strings are owned by the store; NULL means absent. */
typedef struct sim_lead {
    int64_t id;                 /* Marketo id */
    char *email;                /* Email */
    char *fsp_id;               /* ForeignSysPersonId */
    char *fsp_type;             /* ForeignSysType */
    time_t updated_at;          /* last write, seconds since the epoch */
    char *vals[SIM_NFIELDS];    /* attribute values, indexed like sim_fields */
} sim_lead;

/* One static list. */
typedef struct sim_list {
    int64_t id;       /* staticListId */
    char *name;       /* staticListName */
    int64_t *ids;     /* member lead ids, ascending */
    size_t n;         /* entries in ids */
} sim_list;

typedef struct sim_store sim_store;

/* Builds the seed data (the two leads of the docs, list 6926, nleads
 * generated leads in list "Demo.All" id 1) from seed. NULL on OOM. */
sim_store *sim_store_new(size_t nleads, uint64_t seed);
/* Frees the store (NULL is fine). */
void sim_store_free(sim_store *st);
/* Replaces the data with a fresh copy of the seed data; takes the write
 * lock itself. Returns 0, or -1 on OOM (the store is then empty). */
int sim_store_reset(sim_store *st);

void sim_store_rdlock(sim_store *st);
void sim_store_wrlock(sim_store *st);
void sim_store_unlock(sim_store *st);

/* Number of leads. */
size_t sim_store_count(const sim_store *st);

/* The lead with this id, or NULL. */
const sim_lead *sim_store_by_id(const sim_store *st, int64_t id);

/* Leads matching any of keys (of type t), deduplicated, ascending by id, in
 * a malloc'd array (*out, caller frees; NULL when none). E-mail keys match
 * case-insensitively, as do LEADOWNEREMAIL keys. Returns the count, or -1 on
 * OOM. */
long sim_store_match_keys(const sim_store *st, mkto_key_type t, const char *const *keys,
                          size_t nkeys, const sim_lead ***out);

/* The static list with this id (when id > 0) or else this name; NULL if none. */
const sim_list *sim_store_find_list(const sim_store *st, const char *name, int64_t id);

/* Members of list that exist, ascending by id; same conventions as
 * sim_store_match_keys. */
long sim_store_list_leads(const sim_store *st, const sim_list *list, const sim_lead ***out);

/* Leads with oldest <= updated_at <= latest, ascending by (updated_at, id);
 * same conventions as sim_store_match_keys. */
long sim_store_updated_between(const sim_store *st, time_t oldest, time_t latest,
                               const sim_lead ***out);

/* One attribute of a record to sync. */
typedef struct sim_sync_attr {
    const char *name;   /* attrName */
    const char *value;  /* attrValue; "" clears the attribute */
} sim_sync_attr;

/* One LeadRecord of a sync request (pointers are borrowed). */
typedef struct sim_sync_rec {
    bool has_id;              /* Id given */
    int64_t id;               /* Id */
    const char *email;        /* Email, or NULL */
    const char *fsp_id;       /* ForeignSysPersonId, or NULL */
    const char *fsp_type;     /* ForeignSysType, or NULL */
    const sim_sync_attr *attrs; /* leadAttributeList */
    size_t nattrs;            /* entries in attrs */
} sim_sync_rec;

/* Outcome of one sync. */
typedef enum sim_sync_state {
    SIM_SYNC_CREATED = 0,
    SIM_SYNC_UPDATED,
    SIM_SYNC_FAILED,
} sim_sync_state;

/* Upserts one record (write lock held): key precedence Id, then
 * ForeignSysPersonId, then Email (only with dedup). Sets updated_at to now.
 * Returns the state; *id_out gets the lead id (the given Id or 0 when
 * FAILED); on FAILED *code gets the Marketo code (20101 no key, 20103 Id not
 * found, 20105 unknown attribute, 10001 OOM) and err a short text. */
sim_sync_state sim_store_sync(sim_store *st, const sim_sync_rec *rec, bool dedup, time_t now,
                              int64_t *id_out, int *code, char *err, size_t errlen);

#endif /* SIM_STORE_H */
