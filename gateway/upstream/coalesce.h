/* gateway/upstream/coalesce.h - which jobs may share one call, and how a
 * shared call's answer is split among them.
 *
 * A batch is the set of jobs one call serves: its starter (members[0], the
 * job that took the limiter slot) and the jobs that joined it. For a key
 * call the batch also holds the union of the members' keys (strings
 * borrowed from the members' jobs), which is what goes on the wire. The
 * rules (see upstream.h for the whole story):
 * - only first-page key lookups of 1..max_keys keys that were not set apart
 *   (solo) take part (gw_is_key_job);
 * - they must ask the same of each lead: key type, batch size, the same set
 *   of fields (same shape);
 * - batching: a waiting job joins a call being started while the union
 *   stays within max_keys; when the call's leads cannot be matched back to
 *   keys (gw_batch_start sets attributable), only jobs with the very same
 *   key set join;
 * - single flight: a job rides on a call already in flight when the call
 *   asks for all its keys (exactly its keys, unattributable) and its
 *   answer is as fresh as the job's cache epoch (gw_batch_can_carry);
 * - an OK answer goes whole to members whose key set is the call's, and as
 *   copies of the matching leads to the others; a paged answer is not
 *   split: partial members are set apart (solo) to run alone. A failure
 *   goes to every member as a copy.
 *
 * Nothing here knows time, threads or sockets: the engine decides when a
 * job is ready and which calls are in flight, and asks these functions
 * what may merge. Not thread-safe: the engine thread owns its batches.
 */
#ifndef GW_UPSTREAM_COALESCE_H
#define GW_UPSTREAM_COALESCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/upstream/upstream.h"

typedef struct gw_batch {
    gw_job **members;       /* members[0] is the starter (owned array) */
    size_t nmembers;        /* entries in members */
    size_t capmembers;      /* allocated entries of members */
    mkto_query get;         /* GET_LEADS: the query sent (key calls: keys -> keys below) */
    const char **keys;      /* key calls: distinct keys of all members (borrowed strings) */
    size_t nkeys;           /* entries in keys; 0: not a key call built from the union */
    size_t max_keys;        /* capacity of keys: the protocol's keys per call */
    bool shareable;         /* later key jobs may ride on this call */
    bool attributable;      /* its leads can be matched back to keys */
    uint64_t sent_seq;      /* engine's take sequence when sent (gw_batch_stamp) */
    uint64_t epoch;         /* cache epoch a member read before the send; 0: none */
} gw_batch;

/* Whether job may share a call: a first-page key lookup of 1..max_keys keys
 * that has not been set apart. */
bool gw_is_key_job(const gw_job *job, size_t max_keys);

/* Prepares an empty batch for calls of up to max_keys keys. Returns 0 or
 * -1 out of memory. gw_batch_free releases its arrays (not the jobs). */
int gw_batch_init(gw_batch *b, size_t max_keys);
void gw_batch_free(gw_batch *b);

/* Empties b (keeps its arrays) and makes starter its first member: a key
 * job's keys become the call's key set, and the batch is shareable and
 * attributable as its shape allows; any other job's query is taken as is.
 * Returns 0 or -1 out of memory. */
int gw_batch_start(gw_batch *b, gw_job *starter);

/* Batching: whether waiting job j may join b before it is sent (same shape;
 * its new keys fit; unattributable: exactly the call's keys). */
bool gw_batch_can_merge(const gw_batch *b, const gw_job *j);

/* Single flight: whether b, already sent, can serve j as is (shareable,
 * same shape, all of j's keys asked, fresh enough for j's epoch). */
bool gw_batch_can_carry(const gw_batch *b, const gw_job *j);

/* Adds j to the members and its new keys to the key set (the caller checked
 * gw_batch_can_merge or gw_batch_can_carry). Returns 0 or -1 out of memory. */
int gw_batch_add(gw_batch *b, gw_job *j);

/* Whether the key set is full. */
bool gw_batch_full(const gw_batch *b);

/* Whether job's key set is the call's whole key set. */
bool gw_batch_covers(const gw_batch *b, const gw_job *job);

/* Notes, as the call is sent, what its answer is as fresh as: take_seq (the
 * engine's count of jobs taken so far: each read its epoch before now) and
 * the epoch of its most recently taken member that has one. */
void gw_batch_stamp(gw_batch *b, uint64_t take_seq);

/* Sets every member but the starter apart (solo), hands each to requeue,
 * and shrinks the batch to its starter and its keys. */
void gw_batch_unmerge(gw_batch *b, void (*requeue)(gw_job *job, void *arg), void *arg);

/* Splits the OK answer in the starter's fields among the members: sets each
 * member's outcome (OK, or BAD_RESPONSE when a copy ran out of memory) and
 * sets apart (solo) the members to run again alone. */
void gw_batch_distribute_ok(gw_batch *b);

/* Gives every member a copy of the starter's failure (fault, detail,
 * retry_after_s). */
void gw_batch_distribute_failure(gw_batch *b);

#endif /* GW_UPSTREAM_COALESCE_H */
