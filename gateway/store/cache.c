/* gateway/store/cache.c - the in-process lookup cache.
 *
 * Layout: a hash table of key nodes, one per (key type, key value), each
 * holding a short list of entries, one per field set. Every entry sits on
 * one global LRU list (most recent first), bounded by max_entries, and is
 * linked from the reverse index: a hash table of lead ids, each holding the
 * list of entries whose JSON contains that lead. An entry is one allocation
 * (struct, id links, field set and JSON text together), so a put costs one
 * malloc per entry plus the index nodes it creates, and a hit costs the hash
 * lookup and the copy handed to the caller.
 *
 * One mutex guards everything. The epoch starts at 1 and moves on every
 * invalidate(); put_many() with an older epoch stores nothing.
 *
 * The hash is seeded per cache from OpenSSL's random generator, so that
 * crafted key values cannot all land in one bucket of a long-lived cache.
 */
#include "gateway/store/cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

typedef struct cache_entry cache_entry;
typedef struct key_node key_node;
typedef struct id_node id_node;

/* Membership of one entry in one lead id's list. */
typedef struct id_link {
    struct id_link *prev; /* previous link of the same id */
    struct id_link *next; /* next link of the same id */
    id_node *node;        /* the id this link hangs on */
    cache_entry *entry;   /* the entry holding the id */
} id_link;

/* One lead id of the reverse index. */
struct id_node {
    id_node *hnext; /* next node in the hash bucket */
    int64_t id;     /* lead id */
    id_link *head;  /* entries holding this id; never empty while the node exists */
};

/* One cached JSON text for one key and one field set. */
struct cache_entry {
    cache_entry *lru_prev; /* more recently used neighbour, NULL at the head */
    cache_entry *lru_next; /* less recently used neighbour, NULL at the tail */
    cache_entry *vnext;    /* next field-set variant of the same key */
    key_node *key;         /* the key this entry belongs to */
    int64_t expires_at;    /* monotonic ms after which the entry is dead */
    size_t json_len;       /* strlen(json) */
    size_t nlinks;         /* entries in links */
    id_link *links;        /* one link per distinct lead id (same allocation) */
    char *fieldset;        /* field-set key (same allocation) */
    char *json;            /* JSON text (same allocation) */
};

/* One (key type, key value) with its field-set variants. */
struct key_node {
    key_node *hnext;         /* next node in the hash bucket */
    uint64_t hash;           /* hash of (type, value) */
    mkto_key_type type;      /* key type */
    cache_entry *variants;   /* entries of this key; never empty while the node exists */
    size_t len;              /* strlen(value) */
    char value[];            /* key value, NUL-terminated */
};

/* The in-process cache. */
typedef struct local_cache {
    gw_cache base;              /* ops; must stay first */
    pthread_mutex_t mu;         /* guards every field below */
    int64_t max_entries;        /* LRU bound */
    int64_t ttl_ms;             /* lifetime of a positive entry; 0 stores none */
    int64_t neg_ttl_ms;         /* lifetime of a "[]" entry; 0 stores none */
    int64_t (*clock)(void);     /* test clock, or NULL for CLOCK_MONOTONIC */
    uint64_t seed;              /* hash seed */
    uint64_t epoch;             /* invalidation epoch, starts at 1 */
    key_node **keys;            /* key hash table */
    size_t nkey_buckets;        /* buckets in keys (power of two) */
    size_t nkeys;               /* key nodes */
    id_node **ids;              /* reverse index hash table */
    size_t nid_buckets;         /* buckets in ids (power of two) */
    size_t nids;                /* id nodes */
    cache_entry *lru_head;      /* most recently used entry */
    cache_entry *lru_tail;      /* least recently used entry */
    size_t count;               /* entries */
} local_cache;

static const gw_cache_ops local_ops;

#define INITIAL_BUCKETS 64
#define MAX_TTL_S (10LL * 365 * 86400)

/* ---- helpers ---------------------------------------------------------------- */

/* The cache's clock: the test hook, or CLOCK_MONOTONIC, in ms. */
static int64_t now_ms(const local_cache *c)
{
    if (c->clock != NULL)
        return c->clock();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Final avalanche of MurmurHash3. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Seeded FNV-1a over the key type and the value, then mixed. */
static uint64_t hash_key(const local_cache *c, mkto_key_type t, const char *v, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ c->seed;
    h = (h ^ (uint64_t)t) * 0x100000001b3ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)v[i]) * 0x100000001b3ULL;
    return mix64(h ^ len);
}

/* Seeded hash of a lead id for the reverse index. */
static uint64_t hash_id(const local_cache *c, int64_t id)
{
    return mix64((uint64_t)id ^ c->seed);
}

/* Doubles a bucket array of key nodes when it is fuller than one per bucket.
 * Failure to grow is harmless (chains get longer). */
static void keys_maybe_grow(local_cache *c)
{
    if (c->nkeys < c->nkey_buckets)
        return;
    size_t nb = c->nkey_buckets * 2;
    key_node **nt = calloc(nb, sizeof(*nt));
    if (nt == NULL)
        return;
    for (size_t i = 0; i < c->nkey_buckets; i++) {
        key_node *k = c->keys[i];
        while (k != NULL) {
            key_node *next = k->hnext;
            size_t b = k->hash & (nb - 1);
            k->hnext = nt[b];
            nt[b] = k;
            k = next;
        }
    }
    free(c->keys);
    c->keys = nt;
    c->nkey_buckets = nb;
}

/* Same for the id index. */
static void ids_maybe_grow(local_cache *c)
{
    if (c->nids < c->nid_buckets)
        return;
    size_t nb = c->nid_buckets * 2;
    id_node **nt = calloc(nb, sizeof(*nt));
    if (nt == NULL)
        return;
    for (size_t i = 0; i < c->nid_buckets; i++) {
        id_node *n = c->ids[i];
        while (n != NULL) {
            id_node *next = n->hnext;
            size_t b = hash_id(c, n->id) & (nb - 1);
            n->hnext = nt[b];
            nt[b] = n;
            n = next;
        }
    }
    free(c->ids);
    c->ids = nt;
    c->nid_buckets = nb;
}

/* The key node of (t, v), or NULL; h is hash_key() of it. */
static key_node *key_find(const local_cache *c, mkto_key_type t, const char *v, size_t len,
                          uint64_t h)
{
    for (key_node *k = c->keys[h & (c->nkey_buckets - 1)]; k != NULL; k = k->hnext) {
        if (k->hash == h && k->type == t && k->len == len && memcmp(k->value, v, len) == 0)
            return k;
    }
    return NULL;
}

/* Unlinks a key node (whose variants are gone) from its bucket and frees it. */
static void key_remove(local_cache *c, key_node *k)
{
    key_node **pp = &c->keys[k->hash & (c->nkey_buckets - 1)];
    while (*pp != NULL && *pp != k)
        pp = &(*pp)->hnext;
    if (*pp == k)
        *pp = k->hnext;
    c->nkeys--;
    free(k);
}

/* The reverse-index node of a lead id, or NULL. */
static id_node *id_find(const local_cache *c, int64_t id)
{
    for (id_node *n = c->ids[hash_id(c, id) & (c->nid_buckets - 1)]; n != NULL; n = n->hnext) {
        if (n->id == id)
            return n;
    }
    return NULL;
}

/* Unlinks an id node (whose list is empty) from its bucket and frees it. */
static void id_remove(local_cache *c, id_node *n)
{
    id_node **pp = &c->ids[hash_id(c, n->id) & (c->nid_buckets - 1)];
    while (*pp != NULL && *pp != n)
        pp = &(*pp)->hnext;
    if (*pp == n)
        *pp = n->hnext;
    c->nids--;
    free(n);
}

/* Takes e off the LRU list. */
static void lru_unlink(local_cache *c, cache_entry *e)
{
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

/* Puts e at the most recently used end of the LRU list. */
static void lru_push_front(local_cache *c, cache_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head != NULL)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (c->lru_tail == NULL)
        c->lru_tail = e;
}

/* Removes an entry from every structure (LRU, its key, the id index),
 * dropping key and id nodes left empty, and frees it. */
static void entry_remove(local_cache *c, cache_entry *e)
{
    lru_unlink(c, e);

    key_node *k = e->key;
    cache_entry **pp = &k->variants;
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->vnext;
    if (*pp == e)
        *pp = e->vnext;
    if (k->variants == NULL)
        key_remove(c, k);

    for (size_t i = 0; i < e->nlinks; i++) {
        id_link *l = &e->links[i];
        if (l->prev != NULL)
            l->prev->next = l->next;
        else
            l->node->head = l->next;
        if (l->next != NULL)
            l->next->prev = l->prev;
        if (l->node->head == NULL)
            id_remove(c, l->node);
    }
    c->count--;
    free(e);
}

/* Hangs link l (of entry e) on the list of lead id; returns 0 or -1 (no memory). */
static int link_id(local_cache *c, id_link *l, int64_t id)
{
    id_node *n = id_find(c, id);
    if (n == NULL) {
        n = calloc(1, sizeof(*n));
        if (n == NULL)
            return -1;
        n->id = id;
        size_t b = hash_id(c, id) & (c->nid_buckets - 1);
        n->hnext = c->ids[b];
        c->ids[b] = n;
        c->nids++;
        ids_maybe_grow(c);
    }
    l->node = n;
    l->prev = NULL;
    l->next = n->head;
    if (n->head != NULL)
        n->head->prev = l;
    n->head = l;
    return 0;
}

/* Builds and links one entry; replaces an existing variant of the same
 * field set. Returns 0 or -1 (no memory; nothing half-linked remains). */
static int store_one(local_cache *c, mkto_key_type t, const char *fieldset,
                     const gw_cache_put *it, int64_t now)
{
    int64_t ttl = strcmp(it->json, "[]") == 0 ? c->neg_ttl_ms : c->ttl_ms;
    if (ttl <= 0)
        return 0;

    size_t vlen = strlen(it->value);
    uint64_t h = hash_key(c, t, it->value, vlen);
    key_node *k = key_find(c, t, it->value, vlen, h);
    if (k != NULL) {
        for (cache_entry *e = k->variants; e != NULL; e = e->vnext) {
            if (strcmp(e->fieldset, fieldset) == 0) {
                int last = k->variants == e && e->vnext == NULL;
                entry_remove(c, e);
                if (last)
                    k = NULL; /* freed with its last variant */
                break;
            }
        }
    }

    /* Distinct ids only, so that every link of an entry hangs on a different node. */
    size_t nlinks = 0;
    for (size_t i = 0; i < it->nids; i++) {
        size_t j = 0;
        while (j < i && it->ids[j] != it->ids[i])
            j++;
        if (j == i)
            nlinks++;
    }
    size_t flen = strlen(fieldset);
    size_t jlen = strlen(it->json);
    size_t size = sizeof(cache_entry) + nlinks * sizeof(id_link) + flen + 1 + jlen + 1;
    cache_entry *e = malloc(size);
    if (e == NULL)
        return -1;
    memset(e, 0, sizeof(*e));
    e->links = (id_link *)(e + 1);
    e->fieldset = (char *)(e->links + nlinks);
    memcpy(e->fieldset, fieldset, flen + 1);
    e->json = e->fieldset + flen + 1;
    memcpy(e->json, it->json, jlen + 1);
    e->json_len = jlen;
    e->expires_at = now > INT64_MAX - ttl ? INT64_MAX : now + ttl;

    if (k == NULL) {
        k = malloc(sizeof(*k) + vlen + 1);
        if (k == NULL) {
            free(e);
            return -1;
        }
        k->hash = h;
        k->type = t;
        k->variants = NULL;
        k->len = vlen;
        memcpy(k->value, it->value, vlen + 1);
        size_t b = h & (c->nkey_buckets - 1);
        k->hnext = c->keys[b];
        c->keys[b] = k;
        c->nkeys++;
        keys_maybe_grow(c);
    }
    e->key = k;
    e->vnext = k->variants;
    k->variants = e;
    lru_push_front(c, e);
    c->count++;

    for (size_t i = 0; i < it->nids; i++) {
        size_t j = 0;
        while (j < i && it->ids[j] != it->ids[i])
            j++;
        if (j != i)
            continue;
        if (link_id(c, &e->links[e->nlinks], it->ids[i]) != 0) {
            entry_remove(c, e); /* unlinks the e->nlinks links made so far */
            return -1;
        }
        e->links[e->nlinks].entry = e;
        e->nlinks++;
    }

    while (c->count > (size_t)c->max_entries && c->lru_tail != NULL && c->lru_tail != e)
        entry_remove(c, c->lru_tail);
    return 0;
}

/* ---- operations --------------------------------------------------------------- */

static int local_get_many(gw_cache *gc, mkto_key_type t, const char *fieldset,
                          const char *const *values, size_t n, char **out, uint64_t *epoch)
{
    local_cache *c = (local_cache *)gc;
    if (fieldset == NULL)
        fieldset = "";
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c);
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        size_t len = strlen(values[i]);
        key_node *k = key_find(c, t, values[i], len, hash_key(c, t, values[i], len));
        if (k == NULL)
            continue;
        cache_entry *e = k->variants;
        while (e != NULL && strcmp(e->fieldset, fieldset) != 0)
            e = e->vnext;
        if (e == NULL)
            continue;
        if (e->expires_at <= now) {
            entry_remove(c, e);
            continue;
        }
        if (c->lru_head != e) {
            lru_unlink(c, e);
            lru_push_front(c, e);
        }
        out[i] = malloc(e->json_len + 1);
        if (out[i] != NULL)
            memcpy(out[i], e->json, e->json_len + 1);
    }
    if (epoch != NULL)
        *epoch = c->epoch;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int local_put_many(gw_cache *gc, mkto_key_type t, const char *fieldset,
                          const gw_cache_put *items, size_t n, uint64_t epoch)
{
    local_cache *c = (local_cache *)gc;
    int rc = 0;
    if (fieldset == NULL)
        fieldset = "";
    pthread_mutex_lock(&c->mu);
    if (epoch != c->epoch) {
        rc = 1;
        goto out;
    }
    int64_t now = now_ms(c);
    for (size_t i = 0; i < n; i++) {
        if (items[i].value == NULL || items[i].json == NULL ||
            (items[i].nids > 0 && items[i].ids == NULL)) {
            rc = -1;
            continue;
        }
        if (store_one(c, t, fieldset, &items[i], now) != 0)
            rc = -1;
    }
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int local_invalidate(gw_cache *gc, const gw_cache_key *keys, size_t nkeys,
                            const int64_t *ids, size_t nids)
{
    local_cache *c = (local_cache *)gc;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].value == NULL)
            continue;
        size_t len = strlen(keys[i].value);
        key_node *k = key_find(c, keys[i].type, keys[i].value, len,
                               hash_key(c, keys[i].type, keys[i].value, len));
        /* Removing the last variant frees k: re-find after each removal. */
        while (k != NULL) {
            int last = k->variants->vnext == NULL;
            entry_remove(c, k->variants);
            if (last)
                k = NULL;
        }
    }
    for (size_t i = 0; i < nids; i++) {
        id_node *node;
        while ((node = id_find(c, ids[i])) != NULL)
            entry_remove(c, node->head->entry);
    }
    c->epoch++;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void local_destroy(gw_cache *gc)
{
    local_cache *c = (local_cache *)gc;
    if (c == NULL)
        return;
    cache_entry *e = c->lru_head;
    while (e != NULL) {
        cache_entry *next = e->lru_next;
        free(e);
        e = next;
    }
    for (size_t i = 0; c->keys != NULL && i < c->nkey_buckets; i++) {
        key_node *k = c->keys[i];
        while (k != NULL) {
            key_node *next = k->hnext;
            free(k);
            k = next;
        }
    }
    for (size_t i = 0; c->ids != NULL && i < c->nid_buckets; i++) {
        id_node *n = c->ids[i];
        while (n != NULL) {
            id_node *next = n->hnext;
            free(n);
            n = next;
        }
    }
    free(c->keys);
    free(c->ids);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static const gw_cache_ops local_ops = {
    .name = "local",
    .get_many = local_get_many,
    .put_many = local_put_many,
    .invalidate = local_invalidate,
    .destroy = local_destroy,
};

gw_cache *gw_cache_local_new(int64_t max_entries, int64_t ttl_s, int64_t negative_ttl_s)
{
    if (max_entries < 1 || ttl_s < 0 || negative_ttl_s < 0)
        return NULL;
    local_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->base.ops = &local_ops;
    c->max_entries = max_entries;
    c->ttl_ms = (ttl_s > MAX_TTL_S ? MAX_TTL_S : ttl_s) * 1000;
    c->neg_ttl_ms = (negative_ttl_s > MAX_TTL_S ? MAX_TTL_S : negative_ttl_s) * 1000;
    c->epoch = 1;
    if (RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1)
        c->seed = (uint64_t)(uintptr_t)c ^ (uint64_t)time(NULL);
    c->nkey_buckets = INITIAL_BUCKETS;
    c->nid_buckets = INITIAL_BUCKETS;
    c->keys = calloc(c->nkey_buckets, sizeof(*c->keys));
    c->ids = calloc(c->nid_buckets, sizeof(*c->ids));
    if (c->keys == NULL || c->ids == NULL) {
        local_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}

void gw_cache_local_set_clock(gw_cache *gc, int64_t (*clock)(void))
{
    if (gc == NULL || gc->ops != &local_ops)
        return;
    local_cache *c = (local_cache *)gc;
    pthread_mutex_lock(&c->mu);
    c->clock = clock;
    pthread_mutex_unlock(&c->mu);
}

size_t gw_cache_local_size(gw_cache *gc)
{
    if (gc == NULL || gc->ops != &local_ops)
        return 0;
    local_cache *c = (local_cache *)gc;
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}

uint64_t gw_cache_local_epoch(gw_cache *gc)
{
    if (gc == NULL || gc->ops != &local_ops)
        return 0;
    local_cache *c = (local_cache *)gc;
    pthread_mutex_lock(&c->mu);
    uint64_t e = c->epoch;
    pthread_mutex_unlock(&c->mu);
    return e;
}
