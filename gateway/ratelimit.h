/*  ratelimit.h - token buckets by key, in a table that cannot grow without limit.

    Each key (a client address, a token's hash) has a bucket of `burst` tokens
    that refills at `rate` tokens a second; a request takes one. A key whose
    bucket has filled up again carries no information (it behaves exactly like a
    new key), so ratelimit_expire forgets it. The table holds at most max_entries
    keys: a new key beyond that evicts the one used least recently (counted), so a
    flood of distinct keys costs bounded memory. Pure: no I/O, time is passed in.
*/
#ifndef SLUICE_GATEWAY_RATELIMIT_H
#define SLUICE_GATEWAY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_MAX 64 /* longer keys are cut (a username is at most 64) */

typedef struct ratelimit_t ratelimit_t;

/* rate > 0 (tokens per second), burst >= 1, max_entries >= 1. NULL on bad values. */
ratelimit_t *ratelimit_new(double rate, double burst, size_t max_entries);
void ratelimit_destroy(ratelimit_t **self_p);

/* Takes one token from key's bucket at now_ms. Returns 0 when it was there,
   else the whole seconds (at least 1) until one will be: the Retry-After. */
int ratelimit_take(ratelimit_t *self, const char *key, int64_t now_ms);

/* Puts back one token taken from key's bucket (never above burst): what was
   taken for something that turned out not to count. A key not held is full. */
void ratelimit_give(ratelimit_t *self, const char *key, int64_t now_ms);

/* Forgets key: its bucket is full again. */
void ratelimit_forget(ratelimit_t *self, const char *key);

/* Forgets the keys whose bucket is full again by now_ms. */
void ratelimit_expire(ratelimit_t *self, int64_t now_ms);

/* Keys held now. */
size_t ratelimit_size(const ratelimit_t *self);

/* Keys evicted because the table was full (since ratelimit_new). */
uint64_t ratelimit_evicted(const ratelimit_t *self);

#endif
