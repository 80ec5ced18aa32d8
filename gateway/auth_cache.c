/*  auth_cache.c - token cache. See auth_cache.h. */
#include "auth_cache.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"
#include "validate.h"

#include <czmq.h>
#include <sodium.h>

#define S_KEY_SIZE (crypto_hash_sha256_BYTES * 2 + 1)

typedef enum { S_PENDING, S_OK, S_DENIED } s_state_t;

typedef struct s_entry_t s_entry_t;

struct auth_wait_t {
    auth_fn *fn;
    void *arg;
    s_entry_t *entry; /* while pending; NULL once the answer is being delivered */
    bool cancelled;   /* cancelled while its answer was being delivered */
    auth_wait_t *next;
};

struct s_entry_t {
    char key[S_KEY_SIZE];
    s_state_t state;
    int64_t user_id;
    int64_t device_id;
    int64_t expires_ms;
    bool subscribed;       /* holds events_subscribe(user_id) */
    upstream_call_t *call; /* S_PENDING */
    auth_wait_t *waiters;  /* S_PENDING */
    auth_cache_t *cache;
};

struct auth_cache_t {
    upstream_t *upstream;
    events_t *events;
    auth_cache_config_t cfg;
    zhashx_t *entries; /* key -> s_entry_t (owned) */
};

static void s_entry_free(void **item_p)
{
    s_entry_t *e = *item_p;
    if (!e)
        return;
    if (e->subscribed)
        events_unsubscribe(e->cache->events, e->user_id);
    if (e->call)
        upstream_cancel(e->cache->upstream, &e->call, false);
    /* a pending entry is only freed at destroy: its waiters get no answer */
    for (auth_wait_t *w = e->waiters, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    free(e);
    *item_p = NULL;
}

auth_cache_t *auth_cache_new(upstream_t *upstream, events_t *events,
                             const auth_cache_config_t *config)
{
    if (sodium_init() < 0)
        return NULL;
    auth_cache_t *self = calloc(1, sizeof *self);
    self->upstream = upstream;
    self->events = events;
    self->cfg = *config;
    self->entries = zhashx_new();
    zhashx_set_destructor(self->entries, s_entry_free);
    return self;
}

void auth_cache_destroy(auth_cache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    auth_cache_t *self = *self_p;
    zhashx_destroy(&self->entries);
    free(self);
    *self_p = NULL;
}

static void s_key(const char *token, size_t len, char key[S_KEY_SIZE])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)token, len);
    sodium_bin2hex(key, S_KEY_SIZE, digest, sizeof digest);
}

auth_result_t auth_cache_lookup(auth_cache_t *self, const char *token, size_t len, int64_t *user_id,
                                int64_t *device_id)
{
    char key[S_KEY_SIZE];
    s_key(token, len, key);
    s_entry_t *e = zhashx_lookup(self->entries, key);
    if (!e || e->state == S_PENDING || e->expires_ms <= clock_now_ms())
        return AUTH_MISS;
    if (e->state == S_DENIED)
        return AUTH_DENIED;
    *user_id = e->user_id;
    *device_id = e->device_id;
    return AUTH_OK;
}

/* Room for one more entry: expired ones go first, then any settled one. */
static void s_make_room(auth_cache_t *self)
{
    if (zhashx_size(self->entries) < self->cfg.max_entries)
        return;
    auth_cache_janitor(self, clock_now_ms());
    while (zhashx_size(self->entries) >= self->cfg.max_entries) {
        s_entry_t *victim = NULL;
        for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries))
            if (e->state != S_PENDING) {
                victim = e;
                break;
            }
        if (!victim)
            return; /* all pending: let it grow past the bound for a moment */
        zhashx_delete(self->entries, victim->key);
    }
}

/* Delivers the answer to every waiter of e (already detached from e). */
static void s_deliver(auth_wait_t *waiters, const auth_answer_t *answer)
{
    for (auth_wait_t *w = waiters; w; w = w->next)
        w->entry = NULL;
    for (auth_wait_t *w = waiters, *next; w; w = next) {
        next = w->next;
        if (!w->cancelled)
            w->fn(w->arg, answer);
        free(w);
    }
}

static void s_on_verify(void *arg, bool final, int status, const msgpack_object *body)
{
    s_entry_t *e = arg;
    if (!final)
        return;
    auth_cache_t *self = e->cache;
    e->call = NULL;
    auth_wait_t *waiters = e->waiters;
    e->waiters = NULL;
    auth_answer_t answer = {0};
    const msgpack_object *data = mp_get(body, "data");
    int64_t user = 0, device = 0;
    if (status == 200 && mp_get_int(data, "user_id", &user) &&
        mp_get_int(data, "device_id", &device) && user > 0 && device > 0) {
        e->state = S_OK;
        e->user_id = user;
        e->device_id = device;
        e->expires_ms = clock_now_ms() + self->cfg.ttl_ms;
        events_subscribe(self->events, user);
        e->subscribed = true;
        answer.result = AUTH_OK;
        answer.user_id = user;
        answer.device_id = device;
        s_deliver(waiters, &answer);
        return;
    }
    if (status == 401) {
        e->state = S_DENIED;
        e->expires_ms = clock_now_ms() + self->cfg.negative_ttl_ms;
        answer.result = AUTH_DENIED;
        s_deliver(waiters, &answer);
        return;
    }
    /* not an answer about the token: nothing is cached */
    answer.result = AUTH_ERROR;
    answer.status = status >= 500 ? status : 500;
    answer.code = answer.status == 503   ? "unavailable"
                  : answer.status == 504 ? "timeout"
                                         : "internal";
    answer.message = answer.status == 503   ? "cannot check the token now, try again"
                     : answer.status == 504 ? "checking the token took too long"
                                            : "checking the token failed";
    if (status == 200)
        slog_error("auth: auth.verify answered 200 without user_id and device_id");
    zhashx_delete(self->entries, e->key);
    s_deliver(waiters, &answer);
}

auth_wait_t *auth_cache_verify(auth_cache_t *self, const char *token, size_t len, auth_fn *fn,
                               void *arg)
{
    char key[S_KEY_SIZE];
    s_key(token, len, key);
    s_entry_t *e = zhashx_lookup(self->entries, key);
    if (e && e->state != S_PENDING) {
        zhashx_delete(self->entries, key); /* expired: ask again */
        e = NULL;
    }
    if (!e) {
        s_make_room(self);
        msgpack_sbuffer buf;
        msgpack_sbuffer_init(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        validate_pack_head(&pk, "auth.verify", 0, 0, NULL, true, NULL);
        msgpack_pack_map(&pk, 1);
        mp_pack_cstr(&pk, "token");
        mp_pack_strn(&pk, token, len);
        e = calloc(1, sizeof *e);
        memcpy(e->key, key, S_KEY_SIZE);
        e->state = S_PENDING;
        e->cache = self;
        e->call = upstream_call(self->upstream, "db", buf.data, buf.size, self->cfg.deadline_ms,
                                s_on_verify, e);
        msgpack_sbuffer_destroy(&buf);
        if (!e->call) {
            free(e);
            return NULL;
        }
        zhashx_insert(self->entries, e->key, e);
    }
    auth_wait_t *w = calloc(1, sizeof *w);
    w->fn = fn;
    w->arg = arg;
    w->entry = e;
    w->next = e->waiters;
    e->waiters = w;
    return w;
}

void auth_cache_cancel(auth_cache_t *self, auth_wait_t **wait_p)
{
    (void)self;
    if (!wait_p || !*wait_p)
        return;
    auth_wait_t *w = *wait_p;
    *wait_p = NULL;
    if (!w->entry) { /* its answer is being delivered right now */
        w->cancelled = true;
        return;
    }
    for (auth_wait_t **p = &w->entry->waiters; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    free(w);
}

void auth_cache_revoke_device(auth_cache_t *self, int64_t device_id)
{
    int64_t until = clock_now_ms() + self->cfg.negative_ttl_ms;
    for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries)) {
        if (e->state == S_OK && e->device_id == device_id) {
            e->state = S_DENIED;
            e->expires_ms = until;
            if (e->subscribed) {
                events_unsubscribe(self->events, e->user_id);
                e->subscribed = false;
            }
        }
    }
}

void auth_cache_janitor(auth_cache_t *self, int64_t now_ms)
{
    zlist_t *gone = NULL;
    for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries)) {
        if (e->state != S_PENDING && e->expires_ms <= now_ms) {
            if (!gone) {
                gone = zlist_new();
                zlist_autofree(gone);
            }
            zlist_append(gone, e->key);
        }
    }
    if (!gone)
        return;
    for (char *key = zlist_first(gone); key; key = zlist_next(gone))
        zhashx_delete(self->entries, key);
    zlist_destroy(&gone);
}

size_t auth_cache_size(const auth_cache_t *self)
{
    return zhashx_size(self->entries);
}
