/*  chat.c - the chat service of one stream worker process. See chat.h. */
#include "chat.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_JANITOR_MS 100
/* After the grace period, interrupted streams get this long to record their end. */
#define S_FINISH_WAIT_MS 3000

/* A message left `streaming` by a worker that is gone, or by a finish that could not
   be recorded: found again with chat.message.list and, while still streaming,
   finished - as the actor had decided when it knew, else as failed with the text of
   the last checkpoint. */
typedef struct {
    journal_entry_t entry;
    char *status;  /* the actor's outcome; NULL: unknown (its worker died) */
    char *content; /* with status: the whole answer */
    size_t content_len;
    char *error;        /* stored with the message; NULL when complete */
    uint64_t call;      /* find, list or finish in flight */
    int64_t next_try;   /* clock_now_ms() of the next attempt */
    int64_t give_up_at; /* a begin journaled as in flight (message_id < 0): when it can
                           no longer commit (its deadline is at most 30 s) */
    void *handle;       /* in chat->orphans */
    chat_t *chat;
} s_orphan_t;

struct chat_t {
    const chat_settings_t *settings;
    uint32_t max_streams; /* the credit: settings' at start, then chat_set_max_streams */
    zloop_t *loop;
    timers_t *timers;
    http_t *http;
    client_t *db;
    worker_t *worker;
    journal_t *journal;
    actor_env_t env; /* what every actor shares */
    actor_stats_t stats;
    msgpack_sbuffer scratch;
    zlistx_t *actors;  /* every actor not yet freed */
    zlistx_t *zombies; /* actors that replied, freed by the janitor */
    size_t active;     /* actors that have not replied */
    zlistx_t *orphans; /* s_orphan_t */
    int janitor_id;
    int64_t next_scan;      /* journal scan */
    bool draining;          /* SIGTERM seen */
    bool interrupted;       /* streams told to stop */
    int64_t drain_deadline; /* interrupt what still runs at this time */
    int64_t exit_deadline;  /* leave even if some finish is still unrecorded */
};

/* ------------------------------------------------------------ actors */

static void s_on_actor_end(void *arg, actor_t *actor)
{
    chat_t *self = arg;
    self->active--;
    zlistx_add_end(self->zombies, actor);
}

static void s_reap(chat_t *self)
{
    actor_t *actor;
    while ((actor = zlistx_detach(self->zombies, NULL))) {
        zlistx_delete(self->actors, actor_handle(actor));
        actor_destroy(&actor);
    }
}

static void s_interrupt_all(chat_t *self, const char *why)
{
    if (self->interrupted)
        return;
    self->interrupted = true;
    if (self->active)
        slog_info("chat: %s: interrupting %zu stream(s)", why, self->active);
    for (actor_t *a = zlistx_first(self->actors); a; a = zlistx_next(self->actors))
        if (!actor_done(a))
            actor_interrupt(a);
}

static void s_on_request(void *arg, worker_request_t *req)
{
    chat_t *self = arg;
    if (self->draining || self->active >= self->max_streams) {
        mp_error_body(&self->scratch, 503, "unavailable",
                      self->draining ? "the stream worker is shutting down"
                                     : "the stream worker is at max_streams");
        worker_reply(self->worker, &req, self->scratch.data, self->scratch.size);
        return;
    }
    actor_t *actor = actor_new(&self->env, req);
    if (!actor)
        return;
    self->active++;
    actor_set_handle(actor, zlistx_add_end(self->actors, actor));
}

static void s_on_cancel(void *arg, worker_request_t *req)
{
    (void)arg;
    if (req->user)
        actor_cancel(req->user);
}

static void s_on_status(void *arg, msgpack_packer *pk)
{
    chat_t *self = arg;
    msgpack_pack_map(pk, 11);
    mp_pack_kv_str(pk, "worker", self->settings->worker_name);
    mp_pack_kv_str(pk, "service", self->settings->service);
    mp_pack_kv_int(pk, "streams", (int64_t)self->active);
    mp_pack_kv_int(pk, "max_streams", self->max_streams);
    mp_pack_kv_int(pk, "db_in_flight", (int64_t)client_in_flight(self->db));
    mp_pack_kv_int(pk, "db_waiting", (int64_t)client_waiting(self->db));
    mp_pack_kv_int(pk, "completed", (int64_t)self->stats.completed);
    mp_pack_kv_int(pk, "failed", (int64_t)self->stats.failed);
    mp_pack_kv_int(pk, "cancelled", (int64_t)self->stats.cancelled);
    mp_pack_kv_int(pk, "orphans", (int64_t)zlistx_size(self->orphans));
    mp_pack_kv_bool(pk, "draining", self->draining);
}

/* ------------------------------------------------------------ orphans */

static void s_orphan_free(chat_t *self, s_orphan_t *o)
{
    client_forget(self->db, o->call);
    zlistx_delete(self->orphans, o->handle);
    free(o->status);
    free(o->content);
    free(o->error);
    free(o);
}

/* Nothing more to do for this one: close its journal entry. */
static void s_orphan_done(chat_t *self, s_orphan_t *o, const char *how)
{
    slog_info("chat: message %lld of a lost stream: %s", (long long)o->entry.message_id, how);
    journal_end(self->journal, o->entry.message_id);
    s_orphan_free(self, o);
}

static void s_orphan_later(chat_t *self, s_orphan_t *o)
{
    o->call = 0;
    o->next_try = clock_now_ms() + self->settings->journal_scan_ms;
}

static msgpack_packer s_orphan_call(chat_t *self, s_orphan_t *o, const char *op, uint32_t nargs)
{
    return client_request_start(&self->scratch, op, o->entry.user_id, o->entry.device_id, nargs);
}

static void s_on_orphan_finish(void *arg, int status, const msgpack_object *body)
{
    (void)body;
    s_orphan_t *o = arg;
    chat_t *self = o->chat;
    if (status == 200)
        s_orphan_done(self, o,
                      o->status ? "finished as the stream had ended" : "finished as failed");
    else if (status == 404 || status == 409)
        s_orphan_done(self, o, "already gone or finished");
    else
        s_orphan_later(self, o);
}

static void s_on_orphan_list(void *arg, int status, const msgpack_object *body)
{
    s_orphan_t *o = arg;
    chat_t *self = o->chat;
    if (status == 404) {
        s_orphan_done(self, o, "its conversation is gone");
        return;
    }
    const msgpack_object *list = mp_get(mp_get(body, "data"), "messages");
    if (status != 200 || !list || list->type != MSGPACK_OBJECT_ARRAY) {
        s_orphan_later(self, o);
        return;
    }
    const msgpack_object *found = NULL;
    for (uint32_t i = 0; i < list->via.array.size && !found; i++) {
        int64_t id;
        if (mp_get_int(&list->via.array.ptr[i], "id", &id) && id == o->entry.message_id)
            found = &list->via.array.ptr[i];
    }
    if (!found || !mp_str_eq(mp_get(found, "status"), "streaming")) {
        s_orphan_done(self, o, found ? "already finished" : "no longer exists");
        return;
    }
    const char *content = o->content ? o->content : "";
    size_t len = o->content_len;
    if (!o->status) /* the text of its last checkpoint is all that is left */
        mp_get_str(found, "content", &content, &len);
    msgpack_packer pk = s_orphan_call(self, o, "chat.message.finish", o->error ? 4 : 3);
    mp_pack_kv_int(&pk, "message_id", o->entry.message_id);
    mp_pack_cstr(&pk, "content");
    mp_pack_strn(&pk, content, len);
    mp_pack_kv_str(&pk, "status", o->status ? o->status : "failed");
    if (o->error)
        mp_pack_kv_str(&pk, "error", o->error);
    o->call =
        client_call(self->db, "db", self->scratch.data, self->scratch.size,
                    self->settings->actor.db_timeout_ms, CLIENT_URGENT, s_on_orphan_finish, o);
    if (!o->call)
        s_orphan_later(self, o);
}

static void s_orphan_try(chat_t *self, s_orphan_t *o);

/*  A begin that was in flight when its worker died (journal id -nonce): the row it
    may have made is found by its nonce; once found it is an ordinary orphan (the
    journal line is swapped for the real id first, so a crash now loses nothing).
    Not found: the begin may still be waiting in a DB worker, so look again until it
    can no longer commit. */
static void s_on_orphan_found(void *arg, int status, const msgpack_object *body)
{
    s_orphan_t *o = arg;
    chat_t *self = o->chat;
    o->call = 0;
    int64_t id = 0;
    if (status == 200 && mp_get_int(mp_get(mp_get(body, "data"), "message"), "id", &id) && id > 0) {
        journal_entry_t pending = o->entry;
        o->entry.message_id = id;
        journal_begin(self->journal, &o->entry);
        journal_end(self->journal, pending.message_id);
        s_orphan_try(self, o);
    } else if (status == 404 && clock_now_ms() >= o->give_up_at) {
        s_orphan_done(self, o, "its begin never committed");
    } else {
        s_orphan_later(self, o);
    }
}

static void s_orphan_try(chat_t *self, s_orphan_t *o)
{
    if (o->entry.message_id < 0) {
        msgpack_packer fp = s_orphan_call(self, o, "chat.message.find", 2);
        mp_pack_kv_int(&fp, "conversation_id", o->entry.conversation_id);
        mp_pack_kv_int(&fp, "nonce", -o->entry.message_id);
        o->call = client_call(self->db, "db", self->scratch.data, self->scratch.size,
                              self->settings->actor.db_timeout_ms, CLIENT_BACKGROUND,
                              s_on_orphan_found, o);
        if (!o->call)
            s_orphan_later(self, o);
        return;
    }
    /* the one message, not the conversation's first page: it may be far beyond */
    msgpack_packer pk = s_orphan_call(self, o, "chat.message.list", 3);
    mp_pack_kv_int(&pk, "conversation_id", o->entry.conversation_id);
    mp_pack_kv_int(&pk, "after", o->entry.message_id - 1);
    mp_pack_kv_int(&pk, "limit", 1);
    o->call =
        client_call(self->db, "db", self->scratch.data, self->scratch.size,
                    self->settings->actor.db_timeout_ms, CLIENT_BACKGROUND, s_on_orphan_list, o);
    if (!o->call)
        s_orphan_later(self, o);
}

static s_orphan_t *s_orphan_add(chat_t *self, const journal_entry_t *entry, const char *error)
{
    s_orphan_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL; /* it stays open in the journal: the next owner tries again */
    o->entry = *entry;
    o->error = error ? strdup(error) : NULL;
    o->chat = self;
    o->next_try = clock_now_ms();
    o->give_up_at = o->next_try + ACTOR_BEGIN_MAX_MS + 5000;
    o->handle = zlistx_add_end(self->orphans, o);
    return o;
}

static void s_on_adopted(void *arg, const journal_entry_t *entry)
{
    s_orphan_add(arg, entry,
                 "worker_lost: the stream worker stopped before the answer was complete");
}

static void s_on_actor_orphan(void *arg, const actor_orphan_t *orphan)
{
    chat_t *self = arg;
    s_orphan_t *o = s_orphan_add(self, &orphan->entry, orphan->error);
    if (!o)
        return;
    o->status = strdup(orphan->status);
    o->content = malloc(orphan->content_len ? orphan->content_len : 1);
    if (!o->status || !o->content) {
        free(o->status); /* fall back to "failed with the last checkpoint" */
        free(o->content);
        o->status = o->content = NULL;
        return;
    }
    memcpy(o->content, orphan->content, orphan->content_len);
    o->content_len = orphan->content_len;
    o->next_try = clock_now_ms() + self->settings->journal_scan_ms;
}

/* ------------------------------------------------------------ janitor */

/* One tick for everything periodic: freeing finished actors, the journal scan,
   orphan retries, and the shutdown steps. Returns -1 to end the loop. */
static int s_on_janitor(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    chat_t *self = arg;
    int64_t now = clock_now_ms();
    s_reap(self);
    if (self->journal && !self->draining && now >= self->next_scan) {
        journal_adopt(self->journal, s_on_adopted, self);
        self->next_scan = now + self->settings->journal_scan_ms;
    }
    if (!self->draining) {
        for (s_orphan_t *o = zlistx_first(self->orphans); o; o = zlistx_next(self->orphans))
            if (!o->call && now >= o->next_try)
                s_orphan_try(self, o);
    }
    if (self->draining) {
        if (!self->interrupted && now >= self->drain_deadline)
            s_interrupt_all(self, "shutdown grace period over");
        bool orphans_busy = false;
        for (s_orphan_t *o = zlistx_first(self->orphans); o; o = zlistx_next(self->orphans))
            orphans_busy = orphans_busy || o->call;
        if (self->active == 0 && !orphans_busy) {
            slog_info("chat: drained (%llu completed, %llu failed, %llu cancelled)",
                      (unsigned long long)self->stats.completed,
                      (unsigned long long)self->stats.failed,
                      (unsigned long long)self->stats.cancelled);
            return -1;
        }
        if (now >= self->exit_deadline) {
            slog_warn("chat: leaving with %zu stream(s) whose end is not recorded; the "
                      "journal keeps them for another worker",
                      self->active);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ life */

chat_t *chat_new(zloop_t *loop, const chat_settings_t *settings, char *why, size_t why_size)
{
    chat_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    self->settings = settings;
    self->max_streams = settings->max_streams;
    self->loop = loop;
    self->janitor_id = -1;
    msgpack_sbuffer_init(&self->scratch);
    self->actors = zlistx_new();
    self->zombies = zlistx_new();
    self->orphans = zlistx_new();
    self->timers = timers_new(loop);
    if (!self->actors || !self->zombies || !self->orphans || !self->timers) {
        snprintf(why, why_size, "out of memory");
        chat_destroy(&self);
        return NULL;
    }
    if (settings->actor.provider == ACTOR_PROVIDER_OPENAI) {
        self->http = http_new(loop, self->timers);
        if (!self->http) {
            snprintf(why, why_size, "cannot set up libcurl");
            chat_destroy(&self);
            return NULL;
        }
    }
    self->db = client_new(loop, self->timers, settings->frontend, settings->curve,
                          settings->db_max_in_flight);
    if (!self->db) {
        snprintf(why, why_size, "cannot connect to the broker frontend %s", settings->frontend);
        chat_destroy(&self);
        return NULL;
    }
    if (settings->journal_dir && *settings->journal_dir) {
        self->journal = journal_open(settings->journal_dir, settings->worker_name, why, why_size);
        if (!self->journal) {
            chat_destroy(&self);
            return NULL;
        }
    }
    char *list = strdup(settings->backend);
    const char *endpoints[16];
    size_t n = 0;
    for (char *save = NULL, *ep = strtok_r(list, ", ", &save); ep && n < 16;
         ep = strtok_r(NULL, ", ", &save))
        endpoints[n++] = ep;
    worker_callbacks_t callbacks = {s_on_request, s_on_cancel, s_on_status};
    self->worker = worker_new(settings->service, endpoints, n, &callbacks, self);
    if (self->worker)
        worker_set_curve(self->worker, settings->curve);
    free(list);
    if (!self->worker) {
        snprintf(why, why_size, "bad backend list or service name");
        chat_destroy(&self);
        return NULL;
    }
    self->env = (actor_env_t){
        .worker = self->worker,
        .db = self->db,
        .timers = self->timers,
        .http = self->http,
        .journal = self->journal,
        .settings = &settings->actor,
        .scratch = &self->scratch,
        .stats = &self->stats,
        .on_end = s_on_actor_end,
        .on_orphan = s_on_actor_orphan,
        .arg = self,
    };
    return self;
}

int chat_start(chat_t *self)
{
    if (self->journal) {
        journal_adopt(self->journal, s_on_adopted, self);
        self->next_scan = clock_now_ms() + self->settings->journal_scan_ms;
    }
    if (worker_start(self->worker, self->max_streams) != 0 ||
        worker_attach(self->worker, self->loop) != 0)
        return -1;
    self->janitor_id = zloop_timer(self->loop, S_JANITOR_MS, 0, s_on_janitor, self);
    return self->janitor_id >= 0 ? 0 : -1;
}

void chat_set_max_streams(chat_t *self, uint32_t max_streams)
{
    self->max_streams = max_streams;
    if (!self->draining)
        worker_set_credit(self->worker, max_streams);
}

void chat_shutdown(chat_t *self)
{
    int64_t now = clock_now_ms();
    if (self->draining) {
        s_interrupt_all(self, "second signal");
        self->exit_deadline = now + S_FINISH_WAIT_MS;
        return;
    }
    self->draining = true;
    worker_stop(self->worker);
    self->drain_deadline = now + self->settings->shutdown_grace_ms;
    self->exit_deadline = self->drain_deadline + S_FINISH_WAIT_MS;
    slog_info("chat: shutting down: no new streams; %zu running get %lld ms to finish",
              self->active, (long long)self->settings->shutdown_grace_ms);
}

size_t chat_active(const chat_t *self)
{
    return self->active;
}

void chat_destroy(chat_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    chat_t *self = *self_p;
    if (self->janitor_id >= 0)
        zloop_timer_end(self->loop, self->janitor_id);
    if (self->actors) {
        /* only streams whose end could not be recorded in time are left here */
        actor_t *a;
        while ((a = zlistx_detach(self->actors, NULL)))
            actor_destroy(&a);
    }
    if (self->orphans) {
        s_orphan_t *o;
        while ((o = zlistx_first(self->orphans)))
            s_orphan_free(self, o);
    }
    worker_destroy(&self->worker);
    client_destroy(&self->db);
    http_destroy(&self->http);
    journal_close(&self->journal);
    timers_destroy(&self->timers);
    zlistx_destroy(&self->actors);
    zlistx_destroy(&self->zombies);
    zlistx_destroy(&self->orphans);
    msgpack_sbuffer_destroy(&self->scratch);
    free(self);
    *self_p = NULL;
}
