/* gateway/leads/keylimit.c - token buckets per API key; see keylimit.h. */
#include "gateway/leads/keylimit.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct bucket {
    double tokens;   /* tokens as of last_ms */
    int64_t last_ms; /* monotonic time of the last refill; 0: never used (full) */
} bucket;

struct gw_keylimit {
    pthread_mutex_t lock; /* guards buckets */
    int64_t per_minute;   /* capacity and refill per 60 s */
    double rate;          /* tokens per ms */
    size_t nkeys;         /* entries in buckets */
    bucket *buckets;      /* one per API key index */
};

gw_keylimit *gw_keylimit_new(size_t nkeys, int64_t per_minute)
{
    if (per_minute <= 0)
        return NULL;
    gw_keylimit *kl = calloc(1, sizeof *kl);
    if (!kl)
        return NULL;
    kl->buckets = calloc(nkeys ? nkeys : 1, sizeof *kl->buckets);
    if (!kl->buckets) {
        free(kl);
        return NULL;
    }
    pthread_mutex_init(&kl->lock, NULL);
    kl->per_minute = per_minute;
    kl->rate = (double)per_minute / 60000.0;
    kl->nkeys = nkeys;
    return kl;
}

int gw_keylimit_take(gw_keylimit *kl, size_t key, int64_t now_ms, int64_t *remaining,
                     int64_t *reset_s)
{
    *remaining = 0;
    *reset_s = 0;
    if (!kl || key >= kl->nkeys)
        return 0;
    int refused = 0;
    pthread_mutex_lock(&kl->lock);
    bucket *b = &kl->buckets[key];
    if (b->last_ms == 0) {
        b->tokens = (double)kl->per_minute;
    } else if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * kl->rate;
        if (b->tokens > (double)kl->per_minute)
            b->tokens = (double)kl->per_minute;
    }
    b->last_ms = now_ms;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        refused = 1;
    }
    *remaining = (int64_t)b->tokens;
    if (b->tokens < 1.0) {
        double ms = (1.0 - b->tokens) / kl->rate;
        *reset_s = (int64_t)(ms / 1000.0) + 1;
    }
    pthread_mutex_unlock(&kl->lock);
    return refused;
}

int64_t gw_keylimit_quota(const gw_keylimit *kl)
{
    return kl ? kl->per_minute : 0;
}

void gw_keylimit_free(gw_keylimit *kl)
{
    if (!kl)
        return;
    pthread_mutex_destroy(&kl->lock);
    free(kl->buckets);
    free(kl);
}
