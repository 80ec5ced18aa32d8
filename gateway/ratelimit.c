/*  ratelimit.c - token buckets by key, bounded and expiring. See ratelimit.h.

    The buckets are in a hash for lookup and in a list ordered by last use, most
    recent first. Since a bucket untouched for burst/rate seconds is full, the
    expiry walks from the old end and stops at the first bucket used more
    recently than that: it costs only what it removes. The same old end is what a
    full table evicts.
*/
#include "ratelimit.h"

#include <czmq.h>
#include <math.h>

typedef struct s_bucket_t s_bucket_t;

struct s_bucket_t {
    char key[RATELIMIT_KEY_MAX + 1]; /* also the hash's key (not copied by the hash) */
    double tokens;                   /* tokens left at last_ms */
    int64_t last_ms;                 /* last take */
    s_bucket_t *newer, *older;       /* the use list */
};

struct ratelimit_t {
    double rate;     /* tokens per millisecond */
    double burst;    /* bucket size */
    int64_t full_ms; /* an empty bucket is full again after this */
    size_t max_entries;
    zhashx_t *buckets; /* key -> s_bucket_t (owned; freed here, not by the hash) */
    s_bucket_t *newest, *oldest;
    uint64_t evicted;
};

ratelimit_t *ratelimit_new(double rate, double burst, size_t max_entries)
{
    if (!(rate > 0) || !(burst >= 1) || max_entries < 1)
        return NULL;
    ratelimit_t *self = calloc(1, sizeof *self);
    self->rate = rate / 1000.0;
    self->burst = burst;
    self->full_ms = (int64_t)ceil(burst / self->rate);
    self->max_entries = max_entries;
    self->buckets = zhashx_new();
    /* keys live in the buckets themselves */
    zhashx_set_key_duplicator(self->buckets, NULL);
    zhashx_set_key_destructor(self->buckets, NULL);
    return self;
}

static void s_unlink(ratelimit_t *self, s_bucket_t *b)
{
    if (b->newer)
        b->newer->older = b->older;
    else
        self->newest = b->older;
    if (b->older)
        b->older->newer = b->newer;
    else
        self->oldest = b->newer;
    b->newer = b->older = NULL;
}

static void s_push_newest(ratelimit_t *self, s_bucket_t *b)
{
    b->older = self->newest;
    b->newer = NULL;
    if (self->newest)
        self->newest->newer = b;
    self->newest = b;
    if (!self->oldest)
        self->oldest = b;
}

static void s_remove(ratelimit_t *self, s_bucket_t *b)
{
    s_unlink(self, b);
    zhashx_delete(self->buckets, b->key);
    free(b);
}

void ratelimit_destroy(ratelimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ratelimit_t *self = *self_p;
    while (self->oldest)
        s_remove(self, self->oldest);
    zhashx_destroy(&self->buckets);
    free(self);
    *self_p = NULL;
}

/* key's bucket, NULL when not held; key is cut to RATELIMIT_KEY_MAX into k. */
static s_bucket_t *s_find(ratelimit_t *self, const char *key, char k[RATELIMIT_KEY_MAX + 1])
{
    snprintf(k, RATELIMIT_KEY_MAX + 1, "%s", key);
    return zhashx_lookup(self->buckets, k);
}

/* Brings b's tokens up to now_ms and makes it the most recently used. */
static void s_refill(ratelimit_t *self, s_bucket_t *b, int64_t now_ms)
{
    int64_t elapsed = now_ms > b->last_ms ? now_ms - b->last_ms : 0;
    b->tokens += (double)elapsed * self->rate;
    if (b->tokens > self->burst)
        b->tokens = self->burst;
    s_unlink(self, b);
    b->last_ms = now_ms;
    s_push_newest(self, b);
}

int ratelimit_take(ratelimit_t *self, const char *key, int64_t now_ms)
{
    char k[RATELIMIT_KEY_MAX + 1];
    s_bucket_t *b = s_find(self, key, k);
    if (b) {
        s_refill(self, b, now_ms);
    } else {
        if (zhashx_size(self->buckets) >= self->max_entries) {
            s_remove(self, self->oldest);
            self->evicted++;
        }
        b = calloc(1, sizeof *b);
        memcpy(b->key, k, sizeof k);
        b->tokens = self->burst;
        zhashx_insert(self->buckets, b->key, b);
        b->last_ms = now_ms;
        s_push_newest(self, b);
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    double wait_ms = (1.0 - b->tokens) / self->rate;
    int secs = (int)ceil(wait_ms / 1000.0);
    return secs < 1 ? 1 : secs;
}

void ratelimit_give(ratelimit_t *self, const char *key, int64_t now_ms)
{
    char k[RATELIMIT_KEY_MAX + 1];
    s_bucket_t *b = s_find(self, key, k);
    if (!b)
        return;
    s_refill(self, b, now_ms);
    b->tokens += 1.0;
    if (b->tokens > self->burst)
        b->tokens = self->burst;
}

void ratelimit_forget(ratelimit_t *self, const char *key)
{
    char k[RATELIMIT_KEY_MAX + 1];
    s_bucket_t *b = s_find(self, key, k);
    if (b)
        s_remove(self, b);
}

void ratelimit_expire(ratelimit_t *self, int64_t now_ms)
{
    while (self->oldest && now_ms - self->oldest->last_ms >= self->full_ms)
        s_remove(self, self->oldest);
}

size_t ratelimit_size(const ratelimit_t *self)
{
    return zhashx_size(self->buckets);
}

uint64_t ratelimit_evicted(const ratelimit_t *self)
{
    return self->evicted;
}
