/* gateway/upstream/coalesce.c - merging jobs into calls and splitting the
 * answers (see coalesce.h). */
#include "gateway/upstream/coalesce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marketo/leadkey.h"

bool gw_is_key_job(const gw_job *job, size_t max_keys)
{
    return job->kind == GW_CALL_GET_MULTIPLE && job->get.kind == MKTO_SEL_KEYS && !job->solo &&
           !job->get.stream_position && job->get.keys && job->get.nkeys >= 1 &&
           job->get.nkeys <= max_keys;
}

/* Whether the leads answering p can be matched back to its keys: always for
 * IDNUM and EMAIL, else when the mapping attribute comes back (all fields,
 * or the attribute among the fields asked). */
static bool shape_attributable(const mkto_query *p)
{
    if (p->key_type == MKTO_KEY_IDNUM || p->key_type == MKTO_KEY_EMAIL)
        return true;
    const char *an = mkto_key_type_attr(p->key_type);
    if (!an)
        return false;
    if (!p->attrs || p->nattrs == 0)
        return true;
    for (size_t i = 0; i < p->nattrs; i++)
        if (p->attrs[i] && strcmp(p->attrs[i], an) == 0)
            return true;
    return false;
}

/* Whether attribute name a is among attrs[0..n). */
static bool has_attr(const char *const *attrs, size_t n, const char *a)
{
    for (size_t i = 0; i < n; i++)
        if (attrs[i] && strcmp(attrs[i], a) == 0)
            return true;
    return false;
}

/* Whether two key queries ask the same of each lead: key type, batch size
 * and the same set of fields. */
static bool same_shape(const mkto_query *a, const mkto_query *b)
{
    if (a->key_type != b->key_type || a->batch_size != b->batch_size)
        return false;
    size_t na = a->attrs ? a->nattrs : 0, nb = b->attrs ? b->nattrs : 0;
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!a->attrs[i] || !has_attr(b->attrs, nb, a->attrs[i]))
            return false;
    for (size_t i = 0; i < nb; i++)
        if (!b->attrs[i] || !has_attr(a->attrs, na, b->attrs[i]))
            return false;
    return true;
}

/* Whether key k is among the batch's keys. */
static bool has_key(const gw_batch *b, const char *k)
{
    for (size_t i = 0; i < b->nkeys; i++)
        if (mkto_key_eq(b->get.key_type, b->keys[i], k))
            return true;
    return false;
}

/* Whether job keys[0..i) already hold a key equal to keys[i]. */
static bool earlier_dup(const gw_job *job, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (mkto_key_eq(job->get.key_type, job->get.keys[j], job->get.keys[i]))
            return true;
    return false;
}

/* Distinct keys of job not yet in the batch. */
static size_t new_keys(const gw_batch *b, const gw_job *job)
{
    size_t n = 0;
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (!has_key(b, job->get.keys[i]) && !earlier_dup(job, i))
            n++;
    return n;
}

/* Distinct keys of job. */
static size_t distinct_keys(const gw_job *job)
{
    size_t n = 0;
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (!earlier_dup(job, i))
            n++;
    return n;
}

bool gw_batch_covers(const gw_batch *b, const gw_job *job)
{
    return new_keys(b, job) == 0 && distinct_keys(job) == b->nkeys;
}

bool gw_batch_full(const gw_batch *b)
{
    return b->nkeys >= b->max_keys;
}

int gw_batch_init(gw_batch *b, size_t max_keys)
{
    memset(b, 0, sizeof *b);
    b->max_keys = max_keys;
    b->keys = calloc(max_keys > 0 ? max_keys : 1, sizeof *b->keys);
    return b->keys ? 0 : -1;
}

void gw_batch_free(gw_batch *b)
{
    if (!b)
        return;
    free(b->members);
    free(b->keys);
    memset(b, 0, sizeof *b);
}

/* Adds job's keys that are new to the key set, while it has room. */
static void add_keys(gw_batch *b, const gw_job *job)
{
    for (size_t i = 0; i < job->get.nkeys && b->nkeys < b->max_keys; i++)
        if (!has_key(b, job->get.keys[i]))
            b->keys[b->nkeys++] = job->get.keys[i];
    b->get.nkeys = b->nkeys;
}

int gw_batch_add(gw_batch *b, gw_job *j)
{
    if (b->nmembers == b->capmembers) {
        size_t ncap = b->capmembers ? b->capmembers * 2 : 8;
        gw_job **nm = realloc(b->members, ncap * sizeof *nm);
        if (!nm)
            return -1;
        b->members = nm;
        b->capmembers = ncap;
    }
    b->members[b->nmembers++] = j;
    if (b->shareable)
        add_keys(b, j);
    return 0;
}

int gw_batch_start(gw_batch *b, gw_job *starter)
{
    b->nmembers = 0;
    b->nkeys = 0;
    b->shareable = false;
    b->attributable = false;
    b->sent_seq = 0;
    b->epoch = 0;
    memset(&b->get, 0, sizeof b->get);
    bool keyed = gw_is_key_job(starter, b->max_keys);
    if (starter->kind == GW_CALL_GET_MULTIPLE)
        b->get = starter->get;
    if (keyed) {
        b->get.keys = b->keys;
        b->get.nkeys = 0;
        b->shareable = true;
        b->attributable = shape_attributable(&starter->get);
    }
    return gw_batch_add(b, starter);
}

bool gw_batch_can_merge(const gw_batch *b, const gw_job *j)
{
    if (!b->shareable || gw_batch_full(b) || !gw_is_key_job(j, b->max_keys) ||
        !same_shape(&b->get, &j->get))
        return false;
    if (b->attributable)
        return b->nkeys + new_keys(b, j) <= b->max_keys;
    return gw_batch_covers(b, j);
}

/* Whether b's answer is at least as fresh as job's cache epoch, so the job
 * may take it and store it under that epoch: the job was taken before the
 * call was sent (it read its epoch before the send), or a member read the
 * job's very epoch before the send (no invalidation between the send and
 * the job's read). A call sent before a sync was applied may answer
 * pre-sync data; a lookup that started after that sync answered has a
 * newer epoch and must not ride on it. */
static bool fresh_for(const gw_batch *b, const gw_job *job)
{
    if (job->taken_seq != 0 && job->taken_seq <= b->sent_seq)
        return true;
    return job->epoch != 0 && job->epoch == b->epoch;
}

bool gw_batch_can_carry(const gw_batch *b, const gw_job *j)
{
    if (!b->shareable || !gw_is_key_job(j, b->max_keys) || !same_shape(&b->get, &j->get))
        return false;
    if (!fresh_for(b, j) || new_keys(b, j) != 0)
        return false;
    return b->attributable || distinct_keys(j) == b->nkeys;
}

void gw_batch_stamp(gw_batch *b, uint64_t take_seq)
{
    uint64_t newest = 0;
    b->sent_seq = take_seq;
    b->epoch = 0;
    for (size_t i = 0; i < b->nmembers; i++) {
        const gw_job *m = b->members[i];
        if (m->epoch != 0 && m->taken_seq >= newest) {
            newest = m->taken_seq;
            b->epoch = m->epoch;
        }
    }
}

void gw_batch_unmerge(gw_batch *b, void (*requeue)(gw_job *job, void *arg), void *arg)
{
    for (size_t i = 1; i < b->nmembers; i++) {
        b->members[i]->solo = true;
        requeue(b->members[i], arg);
    }
    b->nmembers = b->nmembers > 0 ? 1 : 0;
    if (!b->shareable || b->nmembers == 0)
        return;
    b->nkeys = 0;
    add_keys(b, b->members[0]);
}

/* ---- answers ------------------------------------------------------------- */

/* Whether lead l matches one of job's keys. */
static bool lead_is_members(const mkto_lead *l, const gw_job *job)
{
    for (size_t i = 0; i < job->get.nkeys; i++)
        if (mkto_lead_matches_key(l, job->get.key_type, job->get.keys[i]))
            return true;
    return false;
}

/* Fills dst with copies of the leads of src that belong to job: all of them
 * with the paging fields when full, else those matching its keys. Returns 0
 * or -1 out of memory (dst cleared). */
static int leads_for_member(const mkto_leads *src, const gw_job *job, bool full,
                            mkto_leads *dst)
{
    memset(dst, 0, sizeof *dst);
    size_t n = 0;
    for (size_t i = 0; i < src->nleads; i++)
        n += full || lead_is_members(&src->leads[i], job);
    if (full) {
        dst->remaining_count = src->remaining_count;
        if (src->new_stream_position &&
            !(dst->new_stream_position = strdup(src->new_stream_position)))
            goto fail;
    }
    if (n > 0) {
        dst->leads = calloc(n, sizeof *dst->leads);
        if (!dst->leads)
            goto fail;
        for (size_t i = 0; i < src->nleads; i++) {
            if (!full && !lead_is_members(&src->leads[i], job))
                continue;
            if (mkto_lead_copy(&dst->leads[dst->nleads], &src->leads[i]) != 0)
                goto fail;
            dst->nleads++;
        }
    }
    dst->return_count = (int)dst->nleads;
    return 0;
fail:
    mkto_leads_clear(dst);
    return -1;
}

/* Keeps in r only the leads matching job's keys (in place), without paging. */
static void filter_in_place(mkto_leads *r, const gw_job *job)
{
    size_t w = 0;
    for (size_t i = 0; i < r->nleads; i++) {
        if (lead_is_members(&r->leads[i], job))
            r->leads[w++] = r->leads[i];
        else
            mkto_lead_clear(&r->leads[i]);
    }
    r->nleads = w;
    r->return_count = (int)w;
    r->remaining_count = 0;
    free(r->new_stream_position);
    r->new_stream_position = NULL;
}

void gw_batch_distribute_ok(gw_batch *b)
{
    gw_job *starter = b->members[0];
    const mkto_leads *src = &starter->leads;
    bool paged = src->remaining_count > 0 && src->new_stream_position &&
                 src->new_stream_position[0] != '\0';
    for (size_t i = 0; i < b->nmembers; i++) {
        gw_job *m = b->members[i];
        m->outcome = GW_OUT_OK;
        if (m == starter)
            continue;
        mkto_fault_clear(&m->fault); /* a copy from an earlier attempt is stale now */
        bool full = gw_batch_covers(b, m);
        if (!full && paged) {
            m->solo = true;
            continue;
        }
        if (leads_for_member(src, m, full, &m->leads) != 0) {
            m->outcome = GW_OUT_BAD_RESPONSE;
            snprintf(m->detail, sizeof m->detail, "out of memory");
        } else {
            m->detail[0] = '\0';
        }
    }
    if (b->nmembers > 1 && !gw_batch_covers(b, starter)) {
        if (paged) {
            starter->solo = true;
            mkto_leads_clear(&starter->leads);
        } else {
            filter_in_place(&starter->leads, starter);
        }
    }
}

void gw_batch_distribute_failure(gw_batch *b)
{
    const gw_job *starter = b->members[0];
    for (size_t i = 1; i < b->nmembers; i++) {
        gw_job *m = b->members[i];
        mkto_fault_clear(&m->fault);
        /* out of memory keeps the code, which is what the mapping needs */
        (void)mkto_fault_copy(&m->fault, &starter->fault);
        m->retry_after_s = starter->retry_after_s;
        snprintf(m->detail, sizeof m->detail, "%s", starter->detail);
    }
}
