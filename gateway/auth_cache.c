/*  auth_cache.c - token cache. See auth_cache.h.

    A token check races a revocation when its database read comes before the
    revoke's commit and its answer reaches the gateway after the revoke's event:
    the answer says the device is valid and would be cached (and a WebSocket
    admitted) for a device already revoked. Two rules make that impossible:

    - A device.revoked event seen here bumps an epoch and remembers the device
      (revoked, for longer than any check can take). A check that answers "valid"
      for a device remembered as revoked is refused: revocation is final, so such
      an answer can only be older than the revoke. A check sent before the
      remembered revocations were forgotten (the table overflowed) is asked again.
    - That only works for users whose events reach this gateway. A check sent
      when the user's subscription was not yet settled (no token or socket of the
      user here, the usual case for a user's first request) could have missed the
      event. Its "valid" answer subscribes, waits for the subscription to settle
      (subscribe_settle_ms) and asks once more; that second answer is final,
      because any revoke committed after its read reaches us as an event. The
      waiters for a socket get only the final answer; the one request whose
      check it was takes the first answer at once (it was under way while the
      revoke was: either order is true). Whoever joined the check (it may have
      come after the revoke) waits for the final answer. Cost: other requests of
      such a user within one settle period of the first wait for the rest of it,
      and a second auth.verify.
*/
#include "auth_cache.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"
#include "validate.h"

#include <czmq.h>
#include <inttypes.h>
#include <sodium.h>

#define S_KEY_SIZE (crypto_hash_sha256_BYTES * 2 + 1)
#define S_CONFIRM_TICK_MS 5
/* beyond a check's deadline: the upstream's grace and more */
#define S_REVOKED_MARGIN_MS 10000

typedef enum { S_PENDING, S_OK, S_DENIED } s_state_t;

typedef struct s_entry_t s_entry_t;

struct auth_wait_t {
    auth_fn *fn;
    void *arg;
    auth_for_t for_;  /* AUTH_FOR_REQUEST: takes the first "valid" answer */
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
    char *request;         /* S_PENDING: the auth.verify body (it holds the token), to ask again */
    size_t request_len;
    uint64_t sent_epoch;   /* S_PENDING: the cache's epoch when auth.verify was sent */
    int64_t sent_ms;       /* ... and the time */
    int64_t confirm_at_ms; /* S_PENDING, no call: ask again from then (0: not waiting) */
    s_entry_t *cnext;      /* the entries waiting to ask again */
    auth_cache_t *cache;
};

/* A device revoked lately, as device.revoked told this gateway. */
typedef struct {
    uint64_t epoch; /* the cache's epoch the revocation made */
    int64_t at_ms;  /* when it was seen */
} s_revoked_t;

struct auth_cache_t {
    upstream_t *upstream;
    events_t *events;
    auth_cache_config_t cfg;
    zhashx_t *entries;   /* key -> s_entry_t (owned) */
    uint64_t epoch;      /* revocations seen */
    uint64_t forgotten;  /* revocations up to this epoch were dropped from revoked */
    zhashx_t *revoked;   /* "<device_id>" -> s_revoked_t (owned) */
    s_entry_t *confirms; /* entries waiting for their user's subscription to settle */
    uv_timer_t timer;    /* runs while confirms is not empty */
    bool timer_running;
};

/* The token leaves memory as soon as no more asking is needed. */
static void s_forget_request(s_entry_t *e)
{
    if (e->request)
        sodium_memzero(e->request, e->request_len);
    free(e->request);
    e->request = NULL;
    e->request_len = 0;
}

static void s_confirm_unlink(auth_cache_t *self, s_entry_t *e)
{
    for (s_entry_t **p = &self->confirms; *p; p = &(*p)->cnext) {
        if (*p == e) {
            *p = e->cnext;
            break;
        }
    }
    e->cnext = NULL;
    e->confirm_at_ms = 0;
}

static void s_entry_free(void **item_p)
{
    s_entry_t *e = *item_p;
    if (!e)
        return;
    if (e->confirm_at_ms)
        s_confirm_unlink(e->cache, e);
    s_forget_request(e);
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

static void s_free(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

auth_cache_t *auth_cache_new(uv_loop_t *loop, upstream_t *upstream, events_t *events,
                             const auth_cache_config_t *config)
{
    if (sodium_init() < 0)
        return NULL;
    auth_cache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->upstream = upstream;
    self->events = events;
    self->cfg = *config;
    self->entries = zhashx_new();
    self->revoked = zhashx_new();
    zhashx_set_destructor(self->entries, s_entry_free);
    zhashx_set_destructor(self->revoked, s_free);
    uv_timer_init(loop, &self->timer);
    self->timer.data = self;
    return self;
}

static void s_timer_closed(uv_handle_t *handle)
{
    free(handle->data);
}

void auth_cache_destroy(auth_cache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    auth_cache_t *self = *self_p;
    /* the entries now: they cancel their calls and subscriptions, which go next */
    zhashx_destroy(&self->entries);
    zhashx_destroy(&self->revoked);
    uv_timer_stop(&self->timer);
    uv_close((uv_handle_t *)&self->timer, s_timer_closed);
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

static void s_on_verify(void *arg, bool final, int status, const msgpack_object *body);

/* Sends e's auth.verify (again); -1 when it could not be sent. */
static int s_send(auth_cache_t *self, s_entry_t *e)
{
    e->sent_epoch = self->epoch;
    e->sent_ms = clock_now_ms();
    e->call = upstream_call(self->upstream, "db", e->request, e->request_len, self->cfg.deadline_ms,
                            s_on_verify, e);
    return e->call ? 0 : -1;
}

typedef enum {
    S_FINAL,     /* the answer holds */
    S_STALE,     /* older than the device's revoke: a refusal */
    S_ASK_AGAIN, /* e waits (confirms) or was asked again */
} s_verdict_t;

static void s_confirm_tick(uv_timer_t *timer);

/*  A "valid" answer for (user, device): does it hold? See the top of this file.
    S_ASK_AGAIN: e waits in confirms until the user's subscription has settled
    (at once when it already has: the next tick asks). */
static s_verdict_t s_judge(auth_cache_t *self, s_entry_t *e, int64_t user, int64_t device)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, device);
    if (zhashx_lookup(self->revoked, key)) {
        slog_info("auth: a token check of device %" PRId64 " answered after the device was "
                  "revoked: refused",
                  device);
        return S_STALE;
    }
    int64_t ready = events_ready_at(self->events, user);
    bool heard = ready > 0 && ready <= e->sent_ms; /* the user's revokes reached us throughout */
    if (e->sent_epoch >= self->forgotten && heard)
        return S_FINAL;
    if (!e->subscribed) {
        events_subscribe(self->events, user);
        e->subscribed = true;
        e->user_id = user;
    }
    e->confirm_at_ms = events_ready_at(self->events, user);
    e->cnext = self->confirms;
    self->confirms = e;
    if (!self->timer_running) {
        uv_timer_start(&self->timer, s_confirm_tick, S_CONFIRM_TICK_MS, S_CONFIRM_TICK_MS);
        self->timer_running = true;
    }
    return S_ASK_AGAIN;
}

/* Answers every waiter of e with an error about the check, and forgets e (nothing
   cached). */
static void s_fail(auth_cache_t *self, s_entry_t *e, auth_wait_t *waiters, int status)
{
    auth_answer_t answer = {0};
    answer.result = AUTH_ERROR;
    answer.status = status >= 500 ? status : 500;
    answer.code = answer.status == 503   ? "unavailable"
                  : answer.status == 504 ? "timeout"
                                         : "internal";
    answer.message = answer.status == 503   ? "cannot check the token now, try again"
                     : answer.status == 504 ? "checking the token took too long"
                                            : "checking the token failed";
    zhashx_delete(self->entries, e->key);
    s_deliver(waiters, &answer);
}

static void s_confirm_tick(uv_timer_t *timer)
{
    auth_cache_t *self = timer->data;
    int64_t now = clock_now_ms();
    for (s_entry_t **p = &self->confirms; *p;) {
        s_entry_t *e = *p;
        if (e->confirm_at_ms > now) {
            p = &e->cnext;
            continue;
        }
        *p = e->cnext;
        e->cnext = NULL;
        e->confirm_at_ms = 0;
        if (s_send(self, e) != 0) {
            auth_wait_t *waiters = e->waiters;
            e->waiters = NULL;
            s_fail(self, e, waiters, 503);
        }
    }
    if (!self->confirms) {
        uv_timer_stop(&self->timer);
        self->timer_running = false;
    }
}

/* Splits waiters: those for one request into *requests, the others returned. */
static auth_wait_t *s_take_requests(auth_wait_t *waiters, auth_wait_t **requests)
{
    auth_wait_t *rest = NULL, *taken = NULL;
    for (auth_wait_t *w = waiters, *next; w; w = next) {
        next = w->next;
        auth_wait_t **list = w->for_ == AUTH_FOR_REQUEST ? &taken : &rest;
        w->next = *list;
        *list = w;
    }
    *requests = taken;
    return rest;
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
    bool valid = status == 200 && mp_get_int(data, "user_id", &user) &&
                 mp_get_int(data, "device_id", &device) && user > 0 && device > 0;
    if (valid) {
        switch (s_judge(self, e, user, device)) {
        case S_STALE:
            status = 401; /* older than the device's revoke: refused below */
            valid = false;
            break;
        case S_ASK_AGAIN:
            e->waiters = s_take_requests(waiters, &waiters); /* sockets wait on */
            answer.result = AUTH_OK;
            answer.user_id = user;
            answer.device_id = device;
            s_deliver(waiters, &answer);
            return;
        case S_FINAL:
            break;
        }
    }
    if (valid || status == 401)
        s_forget_request(e);
    if (valid) {
        e->state = S_OK;
        e->user_id = user;
        e->device_id = device;
        e->expires_ms = clock_now_ms() + self->cfg.ttl_ms;
        if (!e->subscribed)
            events_subscribe(self->events, user);
        e->subscribed = true;
        answer.result = AUTH_OK;
        answer.user_id = user;
        answer.device_id = device;
        s_deliver(waiters, &answer);
        return;
    }
    if (status == 401) {
        if (e->subscribed) {
            events_unsubscribe(self->events, e->user_id);
            e->subscribed = false;
        }
        e->state = S_DENIED;
        e->expires_ms = clock_now_ms() + self->cfg.negative_ttl_ms;
        answer.result = AUTH_DENIED;
        s_deliver(waiters, &answer);
        return;
    }
    /* not an answer about the token: nothing is cached */
    if (status == 200)
        slog_error("auth: auth.verify answered 200 without user_id and device_id");
    s_fail(self, e, waiters, status);
}

auth_wait_t *auth_cache_verify(auth_cache_t *self, const char *token, size_t len, auth_for_t for_,
                               auth_fn *fn, void *arg)
{
    char key[S_KEY_SIZE];
    s_key(token, len, key);
    s_entry_t *e = zhashx_lookup(self->entries, key);
    bool created = false;
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
        e->request = buf.data; /* kept while pending: a racing answer asks again */
        e->request_len = buf.size;
        if (s_send(self, e) != 0) {
            s_forget_request(e);
            free(e);
            return NULL;
        }
        zhashx_insert(self->entries, e->key, e);
        created = true;
    }
    auth_wait_t *w = calloc(1, sizeof *w);
    w->fn = fn;
    w->arg = arg;
    /* only the request that asked: one that joins may have come after the revoke */
    w->for_ = created ? for_ : AUTH_FOR_SOCKET;
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
    int64_t now = clock_now_ms();
    int64_t until = now + self->cfg.negative_ttl_ms;
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
    /* remembered for the checks in flight now (s_judge); bounded like the cache:
       when full, forgetting every one makes the checks sent before ask again */
    if (zhashx_size(self->revoked) >= self->cfg.max_entries) {
        zhashx_purge(self->revoked);
        self->forgotten = self->epoch + 1;
    }
    self->epoch++;
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, device_id);
    s_revoked_t *r = zhashx_lookup(self->revoked, key);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) {
            self->forgotten = self->epoch + 1;
            return;
        }
        zhashx_insert(self->revoked, key, r);
    }
    r->epoch = self->epoch;
    r->at_ms = now;
}

/* A revocation must be remembered while a check sent before it can still be
   answered: its deadline, the upstream's grace, and a margin. */
static void s_prune_revoked(auth_cache_t *self, int64_t now_ms)
{
    int64_t keep_ms = (int64_t)self->cfg.deadline_ms + S_REVOKED_MARGIN_MS;
    zlist_t *gone = NULL;
    for (s_revoked_t *r = zhashx_first(self->revoked); r; r = zhashx_next(self->revoked)) {
        if (now_ms - r->at_ms > keep_ms) {
            if (!gone) {
                gone = zlist_new();
                zlist_autofree(gone);
            }
            zlist_append(gone, (void *)zhashx_cursor(self->revoked));
        }
    }
    if (!gone)
        return;
    for (char *key = zlist_first(gone); key; key = zlist_next(gone))
        zhashx_delete(self->revoked, key);
    zlist_destroy(&gone);
}

void auth_cache_janitor(auth_cache_t *self, int64_t now_ms)
{
    s_prune_revoked(self, now_ms);
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
