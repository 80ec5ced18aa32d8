/*  actor.c - one chat answer: begin, stream, checkpoint, finish. See actor.h. */
#include "actor.h"
#include "clock.h"
#include "echo.h"
#include "mp.h"
#include "slog.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define S_RETRY_FIRST_MS 250 /* a begin or finish refused with 5xx is tried again after this, */
#define S_RETRY_MAX_MS 2000  /* doubling up to this, for up to S_URGENT_WAIT_MS */
/* A CANCEL this close to the request's deadline is the broker's deadline CANCEL */
#define S_DEADLINE_SLACK_MS 250
#define S_LIST_LIMIT_MAX 1000               /* the largest page chat.message.list gives */
#define S_URGENT_WAIT_MS ACTOR_BEGIN_MAX_MS /* budget of begin and finish (s_call_send_long) */

/* S_REPLAY: the begin returned what an earlier request with the same Idempotency-Key
   made; the actor only reads that answer back and replies with it */
typedef enum { S_BEGIN, S_REPLAY, S_CONTEXT, S_STREAMING, S_FINISHING, S_DONE } s_state_t;

typedef struct {
    const char *status; /* stored: "complete", "failed" or "cancelled" */
    int reply_status;   /* 200, 499, 502, 503 or 504 */
    char code[48];      /* error code ("" when complete) */
    char message[300];
} s_outcome_t;

struct actor_t {
    const actor_env_t *env;
    worker_request_t *req; /* until the final REPLY */
    s_state_t state;
    int64_t user_id;
    int64_t device_id;
    int64_t conversation_id;
    char *content; /* the user's message */
    size_t content_len;
    int64_t message_id;           /* the assistant message, once begun */
    msgpack_sbuffer user_message; /* packed user_message from begin, sent back as is */
    provider_t *provider;
    char *text; /* the answer so far */
    size_t text_len;
    size_t text_cap;
    size_t checkpointed_len;  /* text_len the database has */
    uint64_t call;            /* begin, list or finish in flight (0: none) */
    uint64_t checkpoint_call; /* checkpoint in flight */
    size_t checkpoint_len;    /* the text_len that checkpoint carries */
    timers_entry_t checkpoint_timer;
    timers_entry_t deadline_timer;
    timers_entry_t retry_timer;
    int finish_attempts;     /* finishes sent */
    int64_t finish_first_ms; /* when the first was sent */
    char begin_idem[136];    /* the begin's idempotency key, the same for every try */
    bool client_key;         /* begin_idem is the client's Idempotency-Key */
    int64_t nonce;           /* > 0, sent with every begin try, stored with the row */
    int begin_attempts;      /* begins sent */
    int64_t begin_first_ms;  /* when the first was sent */
    bool begin_unknown;      /* a begin may have committed without our hearing of it */
    bool stop_pending;       /* a stop came while begin or list was in flight */
    s_outcome_t outcome;     /* decided when streaming ends (or stop_pending) */
    void *handle;            /* the owner's, e.g. its place in a list */
};

static void s_log(actor_t *self, slog_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_log(actor_t *self, slog_level_t level, const char *fmt, ...)
{
    if (!slog_enabled(level))
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    const smp_bytes_t *rid = self->req ? &self->req->msg.request_id : NULL;
    slog_write(level, rid ? rid->data : NULL, rid ? rid->size : 0, "chat: message %lld: %s",
               (long long)self->message_id, line);
}

static void s_outcome(s_outcome_t *o, const char *status, int reply_status, const char *code,
                      const char *message)
{
    o->status = status;
    o->reply_status = reply_status;
    snprintf(o->code, sizeof o->code, "%s", code ? code : "");
    snprintf(o->message, sizeof o->message, "%s", message ? message : "");
}

/* ------------------------------------------------------------ replying */

static void s_reply(actor_t *self, const msgpack_sbuffer *buf)
{
    if (self->req)
        worker_reply(self->env->worker, &self->req, buf->data, buf->size);
}

static void s_reply_error(actor_t *self, int status, const char *code, const char *message)
{
    msgpack_sbuffer *buf = self->env->scratch;
    mp_error_body(buf, status, code, message);
    s_reply(self, buf);
}

/* A db error answered to our requester as it came (status and error as the db said). */
static void s_reply_passthrough(actor_t *self, const msgpack_object *body)
{
    msgpack_sbuffer *buf = self->env->scratch;
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *body);
    s_reply(self, buf);
}

/* The final REPLY: status, the error unless complete, and both messages. */
static void s_reply_final(actor_t *self, const msgpack_object *message)
{
    msgpack_sbuffer *buf = self->env->scratch;
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    bool error = self->outcome.reply_status != 200;
    msgpack_pack_map(&pk, error ? 3 : 2);
    mp_pack_kv_int(&pk, "status", self->outcome.reply_status);
    if (error) {
        mp_pack_cstr(&pk, "error");
        msgpack_pack_map(&pk, 2);
        mp_pack_kv_str(&pk, "code", self->outcome.code);
        mp_pack_kv_str(&pk, "message", self->outcome.message);
    }
    mp_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "user_message");
    msgpack_sbuffer_write(buf, self->user_message.data, self->user_message.size);
    mp_pack_cstr(&pk, "assistant_message");
    msgpack_pack_object(&pk, *message);
    s_reply(self, buf);
}

static void s_partial(actor_t *self, const msgpack_sbuffer *buf)
{
    if (self->req)
        worker_partial(self->env->worker, self->req, buf->data, buf->size);
}

/*  Starts the PARTIAL {"data": {"event": event, ...}} in the scratch buffer, leaving
    the packer inside "data" where the caller packs exactly nfields more pairs. */
static msgpack_packer s_event_start(actor_t *self, const char *event, uint32_t nfields)
{
    msgpack_sbuffer *buf = self->env->scratch;
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "data");
    msgpack_pack_map(&pk, 1 + nfields);
    mp_pack_kv_str(&pk, "event", event);
    return pk;
}

/* The message with id in the "messages" of a chat.message.list reply, or NULL. */
static const msgpack_object *s_find_message(int status, const msgpack_object *body, int64_t id)
{
    const msgpack_object *list = mp_get(mp_get(body, "data"), "messages");
    for (uint32_t i = 0;
         status == 200 && list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size;
         i++) {
        int64_t got;
        if (mp_get_int(&list->via.array.ptr[i], "id", &got) && got == id)
            return &list->via.array.ptr[i];
    }
    return NULL;
}

/* Replied: stop everything and let the owner free us at a safe point. */
static void s_end(actor_t *self)
{
    const actor_env_t *env = self->env;
    self->state = S_DONE;
    timers_clear(env->timers, &self->checkpoint_timer);
    timers_clear(env->timers, &self->deadline_timer);
    timers_clear(env->timers, &self->retry_timer);
    client_forget(env->db, self->call);
    client_forget(env->db, self->checkpoint_call);
    self->call = self->checkpoint_call = 0;
    env->on_end(env->arg, self);
}

/* ------------------------------------------------------------ db calls */

static msgpack_packer s_call_start(actor_t *self, const char *op, uint32_t nargs)
{
    return client_request_start(self->env->scratch, op, self->user_id, self->device_id, nargs);
}

/*  chat.message.list of just the message with this id: the page that starts right
    before it, one message long. Reading the whole conversation and searching it
    would miss a message beyond the first page of a long one. */
static msgpack_packer s_list_one_start(actor_t *self, int64_t message_id)
{
    msgpack_packer pk = s_call_start(self, "chat.message.list", 3);
    mp_pack_kv_int(&pk, "conversation_id", self->conversation_id);
    mp_pack_kv_int(&pk, "after", message_id - 1);
    mp_pack_kv_int(&pk, "limit", 1);
    return pk;
}

static uint64_t s_call_send(actor_t *self, client_priority_t priority, client_reply_fn *fn)
{
    const actor_env_t *env = self->env;
    return client_call(env->db, "db", env->scratch->data, env->scratch->size,
                       env->settings->db_timeout_ms, priority, fn, self);
}

/*  Begin and finish may wait longer than other db calls. A burst of new streams
    queues begins here (client.h) faster than a small pool commits them, and the
    requester is waiting for its first event anyway; a finish must be recorded even
    when the database is slow. The begin gets what is left of the request's
    deadline, the finish S_URGENT_WAIT_MS, both at least db_timeout_ms. */
static uint64_t s_call_send_long(actor_t *self, client_reply_fn *fn)
{
    const actor_env_t *env = self->env;
    int64_t budget = S_URGENT_WAIT_MS;
    if (self->req && self->state == S_BEGIN) {
        int64_t left = self->req->deadline_ms - clock_now_ms();
        budget = left < budget ? left : budget;
    }
    if (budget < (int64_t)env->settings->db_timeout_ms)
        budget = env->settings->db_timeout_ms;
    return client_call(env->db, "db", env->scratch->data, env->scratch->size, (uint32_t)budget,
                       CLIENT_URGENT, fn, self);
}

/* ------------------------------------------------------------ finishing */

static void s_send_finish(actor_t *self);

/* The error text stored with a message: "<code>: <message>". */
static void s_stored_error(const s_outcome_t *o, char *out, size_t size)
{
    snprintf(out, size, "%s: %s", o->code, o->message);
}

static void s_on_retry(void *arg)
{
    s_send_finish(arg);
}

/* 250 ms doubling to 2 s: the wait before try number attempts + 1 */
static int64_t s_backoff_ms(int attempts)
{
    int shift = attempts > 1 ? attempts - 1 : 0;
    int64_t backoff = shift > 4 ? S_RETRY_MAX_MS : (int64_t)S_RETRY_FIRST_MS << shift;
    return backoff < S_RETRY_MAX_MS ? backoff : S_RETRY_MAX_MS;
}

static void s_finished(actor_t *self, const msgpack_object *message)
{
    const actor_env_t *env = self->env;
    if (env->journal)
        journal_end(env->journal, self->message_id);
    if (strcmp(self->outcome.status, "complete") == 0)
        env->stats->completed++;
    else if (strcmp(self->outcome.status, "cancelled") == 0)
        env->stats->cancelled++;
    else
        env->stats->failed++;
    s_log(self, SLOG_DEBUG, "finished %s", self->outcome.status);
    s_reply_final(self, message);
    s_end(self);
}

/*  A finish retried after a timeout was refused as "no longer streaming": the first
    attempt most likely committed after all. The stored message says. */
static void s_on_confirm(void *arg, int status, const msgpack_object *body)
{
    actor_t *self = arg;
    self->call = 0;
    const msgpack_object *found = s_find_message(status, body, self->message_id);
    if (found && mp_str_eq(mp_get(found, "status"), self->outcome.status)) {
        s_finished(self, found);
        return;
    }
    self->env->stats->failed++;
    if (self->env->journal)
        journal_end(self->env->journal, self->message_id);
    s_log(self, SLOG_WARN, "finish refused: the message was finished otherwise");
    s_reply_error(self, 409, "conflict", "the message was finished by something else");
    s_end(self);
}

static void s_on_finish(void *arg, int status, const msgpack_object *body)
{
    actor_t *self = arg;
    const actor_env_t *env = self->env;
    self->call = 0;
    const msgpack_object *message = mp_get(mp_get(body, "data"), "message");
    if (status == 200 && message && message->type == MSGPACK_OBJECT_MAP) {
        s_finished(self, message);
        return;
    }
    env->stats->db_errors++;
    if (status == 409 && self->finish_attempts > 1) {
        s_list_one_start(self, self->message_id);
        self->call = s_call_send_long(self, s_on_confirm);
        if (self->call)
            return;
    }
    int64_t waited = clock_now_ms() - self->finish_first_ms;
    if (status >= 500 && waited < S_URGENT_WAIT_MS) {
        /* no db worker, or one that timed out: a restarting database or worker is
           worth waiting for (a 504 may have committed: see s_on_confirm) */
        int64_t backoff = s_backoff_ms(self->finish_attempts);
        s_log(self, SLOG_WARN, "finish refused (%d), trying again in %lld ms", status,
              (long long)backoff);
        timers_set(env->timers, &self->retry_timer, clock_now_ms() + backoff, s_on_retry, self);
        return;
    }
    env->stats->failed++;
    if (status >= 500) {
        /* the row stays `streaming`: the journal entry stays open and the owner keeps
           trying with what we know */
        char error[sizeof self->outcome.code + sizeof self->outcome.message + 2];
        s_stored_error(&self->outcome, error, sizeof error);
        actor_orphan_t orphan = {
            .entry = {self->message_id, self->conversation_id, self->user_id, self->device_id},
            .status = self->outcome.status,
            .content = self->text ? self->text : "",
            .content_len = self->text_len,
            .error = *self->outcome.code ? error : NULL};
        if (env->journal)
            env->on_orphan(env->arg, &orphan);
        s_log(self, SLOG_ERROR, "finish could not be recorded (%d); left for recovery", status);
    } else {
        /* 404/409: deleted or already finished - nothing left to record */
        if (env->journal)
            journal_end(env->journal, self->message_id);
        s_log(self, SLOG_WARN, "finish refused by the database (%d)", status);
    }
    s_reply_passthrough(self, body);
    s_end(self);
}

static void s_send_finish(actor_t *self)
{
    const s_outcome_t *o = &self->outcome;
    bool error = *o->code != 0;
    msgpack_packer pk = s_call_start(self, "chat.message.finish", error ? 4 : 3);
    mp_pack_kv_int(&pk, "message_id", self->message_id);
    mp_pack_cstr(&pk, "content");
    mp_pack_strn(&pk, self->text ? self->text : "", self->text_len);
    mp_pack_kv_str(&pk, "status", o->status);
    if (error) {
        char stored[sizeof o->code + sizeof o->message + 2];
        s_stored_error(o, stored, sizeof stored);
        mp_pack_kv_str(&pk, "error", stored);
    }
    if (self->finish_attempts++ == 0)
        self->finish_first_ms = clock_now_ms();
    self->call = s_call_send_long(self, s_on_finish);
    if (!self->call) {
        s_reply_error(self, 503, "unavailable", "out of memory in the stream worker");
        s_end(self);
    }
}

/*  The outcome is decided: persist it. Never frees the provider (we may be inside
    one of its callbacks); a provider that ended or was told to stop makes no more
    calls, and actor_destroy frees it. */
static void s_finish(actor_t *self)
{
    const actor_env_t *env = self->env;
    self->state = S_FINISHING;
    timers_clear(env->timers, &self->checkpoint_timer);
    timers_clear(env->timers, &self->deadline_timer);
    /* a checkpoint still in flight cannot undo the finish: the database takes a
       checkpoint only while the row is `streaming` */
    client_forget(env->db, self->checkpoint_call);
    self->checkpoint_call = 0;
    s_send_finish(self);
}

/* A stop decided outside the provider (cancel, deadline, shutdown). */
static void s_stop(actor_t *self, const char *status, int reply_status, const char *code,
                   const char *message)
{
    switch (self->state) {
    case S_BEGIN:
    case S_REPLAY:
    case S_CONTEXT:
        if (!self->stop_pending) {
            self->stop_pending = true;
            s_outcome(&self->outcome, status, reply_status, code, message);
        }
        break;
    case S_STREAMING:
        provider_destroy(&self->provider);
        s_outcome(&self->outcome, status, reply_status, code, message);
        s_finish(self);
        break;
    case S_FINISHING:
    case S_DONE:
        break;
    }
}

/* ------------------------------------------------------------ streaming */

static int s_on_delta(void *arg, const char *text, size_t len)
{
    actor_t *self = arg;
    const actor_env_t *env = self->env;
    if (self->state != S_STREAMING)
        return -1;
    if (self->text_len + len > env->settings->max_answer_bytes) {
        char msg[120];
        snprintf(msg, sizeof msg, "the answer grew past %zu bytes",
                 env->settings->max_answer_bytes);
        s_outcome(&self->outcome, "failed", 502, "answer_too_long", msg);
        s_finish(self);
        return -1;
    }
    if (self->text_len + len > self->text_cap) {
        size_t cap = self->text_cap ? self->text_cap : 256;
        while (cap < self->text_len + len)
            cap *= 2;
        char *grown = realloc(self->text, cap);
        if (!grown) {
            s_outcome(&self->outcome, "failed", 502, "internal", "out of memory");
            s_finish(self);
            return -1;
        }
        self->text = grown;
        self->text_cap = cap;
    }
    memcpy(self->text + self->text_len, text, len);
    self->text_len += len;
    env->stats->deltas++;
    msgpack_packer pk = s_event_start(self, "delta", 1);
    mp_pack_cstr(&pk, "text");
    mp_pack_strn(&pk, text, len);
    s_partial(self, env->scratch);
    return 0;
}

static void s_on_done(void *arg)
{
    actor_t *self = arg;
    if (self->state != S_STREAMING)
        return;
    s_outcome(&self->outcome, "complete", 200, NULL, NULL);
    s_finish(self);
}

static void s_on_error(void *arg, const char *code, const char *message)
{
    actor_t *self = arg;
    if (self->state != S_STREAMING)
        return;
    s_log(self, SLOG_WARN, "provider failed: %s: %s", code, message);
    s_outcome(&self->outcome, "failed", strcmp(code, "provider_timeout") == 0 ? 504 : 502, code,
              message);
    s_finish(self);
}

static const provider_events_t s_events = {s_on_delta, s_on_done, s_on_error};

static void s_on_checkpoint(void *arg, int status, const msgpack_object *body)
{
    (void)body;
    actor_t *self = arg;
    self->checkpoint_call = 0;
    if (status == 204) {
        self->checkpointed_len = self->checkpoint_len;
        self->env->stats->checkpoints++;
        return;
    }
    self->env->stats->db_errors++;
    s_log(self, status >= 500 ? SLOG_DEBUG : SLOG_WARN,
          "checkpoint refused (%d); the next one carries the whole text", status);
}

static void s_on_checkpoint_timer(void *arg)
{
    actor_t *self = arg;
    const actor_env_t *env = self->env;
    if (self->state != S_STREAMING)
        return;
    if (self->text_len != self->checkpointed_len && !self->checkpoint_call) {
        msgpack_packer pk = s_call_start(self, "chat.message.checkpoint", 2);
        mp_pack_kv_int(&pk, "message_id", self->message_id);
        mp_pack_cstr(&pk, "content");
        mp_pack_strn(&pk, self->text, self->text_len);
        self->checkpoint_len = self->text_len;
        self->checkpoint_call = s_call_send(self, CLIENT_BACKGROUND, s_on_checkpoint);
    }
    timers_set(env->timers, &self->checkpoint_timer, clock_now_ms() + env->settings->checkpoint_ms,
               s_on_checkpoint_timer, self);
}

static void s_start_provider(actor_t *self, const provider_message_t *messages, size_t count)
{
    const actor_env_t *env = self->env;
    const actor_settings_t *s = env->settings;
    char why[200] = "cannot start the provider";
    if (s->provider == ACTOR_PROVIDER_ECHO)
        self->provider = echo_start(env->timers, s->token_delay_ms, self->content,
                                    self->content_len, &s_events, self);
    else
        self->provider = openai_start(env->http, env->timers, &s->openai, messages, count,
                                      &s_events, self, why, sizeof why);
    self->state = S_STREAMING;
    if (!self->provider) {
        s_outcome(&self->outcome, "failed", 502, "provider_error", why);
        s_finish(self);
    }
}

/*  chat.message.list answered, newest first: the earlier messages become the
    provider's context, oldest first. The newest is the user's new message: the
    worker always returns a page's first row, whatever the byte budget. */
static void s_on_context(void *arg, int status, const msgpack_object *body)
{
    actor_t *self = arg;
    const actor_env_t *env = self->env;
    self->call = 0;
    if (self->stop_pending) {
        s_finish(self);
        return;
    }
    const msgpack_object *list = mp_get(mp_get(body, "data"), "messages");
    size_t n =
        (status == 200 && list && list->type == MSGPACK_OBJECT_ARRAY) ? list->via.array.size : 0;
    provider_message_t *msgs = calloc(n + 1, sizeof *msgs);
    if (!msgs) {
        s_outcome(&self->outcome, "failed", 502, "internal", "out of memory");
        s_finish(self);
        return;
    }
    size_t count = 0;
    for (size_t i = n; i-- > 0;) {
        const msgpack_object *m = &list->via.array.ptr[i];
        int64_t id = 0;
        const char *role, *content, *state;
        size_t role_len, content_len, state_len;
        if (!mp_get_int(m, "id", &id) || id == self->message_id ||
            !mp_get_str(m, "role", &role, &role_len) ||
            !mp_get_str(m, "content", &content, &content_len) ||
            !mp_get_str(m, "status", &state, &state_len) || content_len == 0)
            continue;
        bool user = role_len == 4 && memcmp(role, "user", 4) == 0;
        bool assistant = role_len == 9 && memcmp(role, "assistant", 9) == 0;
        /* failed and still-streaming answers are not what the assistant said */
        bool usable = state_len == 8 && memcmp(state, "complete", 8) == 0;
        usable = usable || (state_len == 9 && memcmp(state, "cancelled", 9) == 0);
        if (!(user || (assistant && usable)))
            continue;
        msgs[count++] = (provider_message_t){user ? "user" : "assistant", content, content_len};
    }
    if (count == 0) {
        /* the list failed: answer the new message alone rather than not at all */
        s_log(self, SLOG_WARN, "no conversation context (chat.message.list answered %d)", status);
        msgs[count++] = (provider_message_t){"user", self->content, self->content_len};
    }
    size_t keep = env->settings->max_context_messages;
    size_t first = count > keep && keep > 0 ? count - keep : 0;
    s_start_provider(self, msgs + first, count - first);
    free(msgs);
}

static void s_on_begin(void *arg, int status, const msgpack_object *body);

/* PARTIAL {"event": "message", user_message, assistant_message_id} */
static void s_partial_message(actor_t *self)
{
    msgpack_packer pk = s_event_start(self, "message", 2);
    mp_pack_cstr(&pk, "user_message");
    msgpack_sbuffer_write(self->env->scratch, self->user_message.data, self->user_message.size);
    mp_pack_kv_int(&pk, "assistant_message_id", self->message_id);
    s_partial(self, self->env->scratch);
}

/*  The stored answer of the earlier request with this Idempotency-Key, as it is
    now: finished, it is the result (the same messages, whatever their status); still
    `streaming`, that request is in progress (or its stream worker was lost and the
    journal has not finished it yet). A stop that came meanwhile changes nothing:
    the answer is not ours to finish. */
static void s_on_replayed(void *arg, int status, const msgpack_object *body)
{
    actor_t *self = arg;
    self->call = 0;
    self->env->stats->rejected++;
    const msgpack_object *found = s_find_message(status, body, self->message_id);
    if (status != 200) {
        s_reply_passthrough(self, body);
    } else if (!found) {
        s_reply_error(self, 404, "not_found", "the answer of this Idempotency-Key was deleted");
    } else if (mp_str_eq(mp_get(found, "status"), "streaming")) {
        s_reply_error(self, 409, "conflict", "a request with this Idempotency-Key is in progress");
    } else {
        s_log(self, SLOG_DEBUG, "replayed the answer of an earlier request with this key");
        s_partial_message(self);
        s_outcome(&self->outcome, "complete", 200, NULL, NULL);
        s_reply_final(self, found);
    }
    s_end(self);
}

static void s_replay(actor_t *self)
{
    self->state = S_REPLAY;
    s_list_one_start(self, self->message_id);
    self->call = s_call_send(self, CLIENT_URGENT, s_on_replayed);
    if (!self->call) {
        s_reply_error(self, 503, "unavailable", "out of memory in the stream worker");
        s_end(self);
    }
}

/*  Sends chat.message.begin, with the same idempotency key on every try: a begin
    whose DB worker died after the commit is resent by the broker, and one whose
    broker went away is resent by s_on_begin; either way the stored result comes
    back, never a second pair of rows. Returns the call id (0: out of memory). */
static uint64_t s_send_begin(actor_t *self)
{
    msgpack_packer pk =
        client_request_start_idem(self->env->scratch, "chat.message.begin", self->user_id,
                                  self->device_id, 3, self->begin_idem);
    mp_pack_kv_int(&pk, "conversation_id", self->conversation_id);
    mp_pack_kv_int(&pk, "nonce", self->nonce);
    mp_pack_cstr(&pk, "content");
    mp_pack_strn(&pk, self->content, self->content_len);
    if (self->begin_attempts++ == 0)
        self->begin_first_ms = clock_now_ms();
    self->call = s_call_send_long(self, s_on_begin);
    return self->call;
}

/* The begin answered for good: its "in flight" journal line is not needed any more
   (after the message's own line when it began). */
static void s_begin_journaled(actor_t *self, bool began)
{
    const actor_env_t *env = self->env;
    if (!env->journal)
        return;
    if (began) {
        journal_entry_t entry = {self->message_id, self->conversation_id, self->user_id,
                                 self->device_id};
        journal_begin(env->journal, &entry);
    }
    journal_end(env->journal, -self->nonce);
}

static void s_on_begin_retry(void *arg)
{
    actor_t *self = arg;
    if (!s_send_begin(self)) {
        s_reply_error(self, 503, "unavailable", "out of memory in the stream worker");
        s_end(self);
    }
}

/*  A begin answered this way may have committed with its reply lost: the broker
    (or its connection) went away with it, the broker's idempotent resend after a
    lost DB worker failed too, or the deadline passed. A 409 on a retry is the
    first try still running. The rows may exist, and only a begin with the same key
    can say. */
static bool s_begin_outcome_unknown(const actor_t *self, int status, const msgpack_object *body)
{
    if (status == 409)
        return self->begin_attempts > 1;
    if (status == 504)
        return true;
    const msgpack_object *code = mp_get(mp_get(body, "error"), "code");
    return status == 503 && (mp_str_eq(code, "broker_lost") || mp_str_eq(code, "worker_lost"));
}

/* chat.message.begin answered: the rows exist (or the request ends here). */
static void s_on_begin(void *arg, int status, const msgpack_object *body)
{
    actor_t *self = arg;
    const actor_env_t *env = self->env;
    self->call = 0;
    if (status != 201 && (status >= 500 || status == 409)) {
        /* once a try's outcome is unknown, any 5xx (no broker connected yet, no DB
           worker registered yet) is a reason to try again, not an answer */
        self->begin_unknown = self->begin_unknown || s_begin_outcome_unknown(self, status, body);
        int64_t waited = clock_now_ms() - self->begin_first_ms;
        if (self->begin_unknown && waited < S_URGENT_WAIT_MS) {
            int64_t backoff = s_backoff_ms(self->begin_attempts);
            s_log(self, SLOG_WARN,
                  "begin answered %d, its outcome unknown: trying again with "
                  "the same key in %lld ms",
                  status, (long long)backoff);
            timers_set(env->timers, &self->retry_timer, clock_now_ms() + backoff, s_on_begin_retry,
                       self);
            return;
        }
        if (self->begin_unknown)
            s_log(self, SLOG_ERROR,
                  "begin still unanswered after %lld ms (%d): if it committed, "
                  "its message stays `streaming`",
                  (long long)waited, status);
    }
    const msgpack_object *data = mp_get(body, "data");
    const msgpack_object *user_message = mp_get(data, "user_message");
    const msgpack_object *assistant = mp_get(data, "assistant_message");
    if (status != 201 || !user_message || user_message->type != MSGPACK_OBJECT_MAP ||
        !mp_get_int(assistant, "id", &self->message_id)) {
        env->stats->rejected++;
        /* refused for good: nothing was made. Still unknown after all the tries: the
           "in flight" line stays, for whoever adopts this journal to look again */
        if (!self->begin_unknown)
            s_begin_journaled(self, false);
        if (status == 201 || status < 400) {
            s_reply_error(self, 500, "internal", "chat.message.begin answered without messages");
        } else {
            s_reply_passthrough(self, body);
        }
        s_end(self);
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->user_message, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *user_message);
    int64_t nonce = 0;
    if (self->client_key && !(mp_get_int(data, "nonce", &nonce) && nonce == self->nonce)) {
        s_begin_journaled(self, false);
        s_replay(self);
        return;
    }
    s_begin_journaled(self, true);
    if (self->stop_pending) {
        s_finish(self);
        return;
    }
    s_partial_message(self); /* the requester learns the ids before the first word */

    timers_set(env->timers, &self->checkpoint_timer, clock_now_ms() + env->settings->checkpoint_ms,
               s_on_checkpoint_timer, self);
    if (env->settings->provider == ACTOR_PROVIDER_ECHO) {
        s_start_provider(self, NULL, 0);
        return;
    }
    self->state = S_CONTEXT;
    /* the newest messages before the answer, within the context budget; twice the
       count, since failed answers are left out of the context */
    size_t want = 2 * env->settings->max_context_messages;
    msgpack_packer lp = s_call_start(self, "chat.message.list", 4);
    mp_pack_kv_int(&lp, "conversation_id", self->conversation_id);
    mp_pack_kv_int(&lp, "before", self->message_id);
    mp_pack_kv_int(&lp, "limit", want < S_LIST_LIMIT_MAX ? (int64_t)want : S_LIST_LIMIT_MAX);
    mp_pack_kv_int(&lp, "max_bytes", (int64_t)env->settings->max_context_bytes);
    self->call = s_call_send(self, CLIENT_URGENT, s_on_context);
    if (!self->call)
        s_on_context(self, 503, NULL);
}

static void s_on_deadline(void *arg)
{
    actor_t *self = arg;
    s_stop(self, "failed", 504, "timeout", "the answer did not finish within its deadline");
}

/* A positive 63-bit random number: unique enough across workers and hosts. */
static int64_t s_new_nonce(const actor_t *self)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) /* no entropy yet: still unique here */
        v = ((uint64_t)getpid() << 40) ^ (uint64_t)clock_now_us() ^ (uintptr_t)self;
    v &= (uint64_t)INT64_MAX;
    return v ? (int64_t)v : 1;
}

/* ------------------------------------------------------------ public */

actor_t *actor_new(const actor_env_t *env, worker_request_t *req)
{
    const msgpack_object *body = &req->msg.body_obj;
    const msgpack_object *auth = mp_get(body, "auth");
    const msgpack_object *args = mp_get(body, "args");
    int64_t user_id = 0, device_id = 0, conversation_id = 0;
    const char *content = NULL, *idem = NULL;
    size_t content_len = 0, idem_len = 0;
    const char *code = NULL, *why = NULL;
    int status = 400;
    if (!smp_bytes_eq(req->msg.op, "chat.generate")) {
        code = "bad_request";
        why = "service chat has one op: chat.generate";
    } else if (!mp_get_int(auth, "user_id", &user_id) || user_id <= 0 ||
               !mp_get_int(auth, "device_id", &device_id) || device_id <= 0) {
        status = 401;
        code = "unauthorized";
        why = "chat.generate needs \"auth\": {\"user_id\", \"device_id\"} (positive integers)";
    } else if (!mp_get_int(args, "conversation_id", &conversation_id) || conversation_id <= 0) {
        code = "bad_request";
        why = "\"conversation_id\" must be a positive integer id";
    } else if (!mp_get_str(args, "content", &content, &content_len) || content_len == 0) {
        code = "bad_request";
        why = "\"content\" must be a non-empty string";
    } else if (content_len > env->settings->max_content_bytes) {
        status = 413;
        code = "payload_too_large";
        why = "\"content\" is too large";
    } else if (mp_get(body, "idem") &&
               (!mp_get_str(body, "idem", &idem, &idem_len) || idem_len < 1 || idem_len > 128)) {
        code = "bad_request";
        why = "\"idem\" must be a string of 1-128 characters";
    }
    actor_t *self = calloc(1, sizeof *self);
    if (self) {
        self->env = env;
        self->req = req;
        msgpack_sbuffer_init(&self->user_message);
    }
    if (code || !self) {
        env->stats->rejected++;
        slog_write(SLOG_DEBUG, req->msg.request_id.data, req->msg.request_id.size,
                   "chat: refused %d: %s", code ? status : 503, why ? why : "out of memory");
        msgpack_sbuffer *buf = env->scratch;
        mp_error_body(buf, code ? status : 503, code ? code : "unavailable",
                      why ? why : "out of memory in the stream worker");
        worker_reply(env->worker, &req, buf->data, buf->size);
        if (self)
            msgpack_sbuffer_destroy(&self->user_message);
        free(self);
        return NULL;
    }
    req->user = self;
    self->state = S_BEGIN;
    self->user_id = user_id;
    self->device_id = device_id;
    self->conversation_id = conversation_id;
    self->content = malloc(content_len);
    if (self->content) {
        memcpy(self->content, content, content_len);
        self->content_len = content_len;
        /* the client's Idempotency-Key (the gateway checked it: 1-128 printable
           characters), or a key of our own (see s_send_begin): without one, rows
           committed by a begin whose reply was lost would have no actor to finish
           them. The nonce tells our begin from an earlier request's. */
        self->nonce = s_new_nonce(self);
        if (idem_len)
            snprintf(self->begin_idem, sizeof self->begin_idem, "%.*s", (int)idem_len, idem);
        else
            snprintf(self->begin_idem, sizeof self->begin_idem, "chat-begin/%" PRId64, self->nonce);
        self->client_key = idem_len > 0;
        if (env->journal) {
            journal_entry_t pending = {-self->nonce, conversation_id, user_id, device_id};
            journal_begin(env->journal, &pending);
        }
        s_send_begin(self);
    }
    if (!self->call) {
        env->stats->rejected++;
        s_reply_error(self, 503, "unavailable", "out of memory in the stream worker");
        msgpack_sbuffer_destroy(&self->user_message);
        free(self->content);
        free(self);
        return NULL;
    }
    env->stats->started++;
    int64_t deadline = req->deadline_ms;
    int64_t cap = clock_now_ms() + env->settings->max_stream_ms;
    timers_set(env->timers, &self->deadline_timer, deadline < cap ? deadline : cap, s_on_deadline,
               self);
    return self;
}

void actor_cancel(actor_t *self)
{
    if (self->req && clock_now_ms() >= self->req->deadline_ms - S_DEADLINE_SLACK_MS)
        s_stop(self, "failed", 504, "timeout", "the answer did not finish within its deadline");
    else
        s_stop(self, "cancelled", 499, "cancelled", "cancelled by the client");
}

void actor_interrupt(actor_t *self)
{
    s_stop(self, "failed", 503, "worker_shutdown",
           "the stream worker stopped before the answer was complete");
}

void actor_destroy(actor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    actor_t *self = *self_p;
    const actor_env_t *env = self->env;
    if (self->req) {
        s_reply_error(self, 503, "unavailable", "the stream worker stopped");
    }
    provider_destroy(&self->provider);
    timers_clear(env->timers, &self->checkpoint_timer);
    timers_clear(env->timers, &self->deadline_timer);
    timers_clear(env->timers, &self->retry_timer);
    client_forget(env->db, self->call);
    client_forget(env->db, self->checkpoint_call);
    msgpack_sbuffer_destroy(&self->user_message);
    free(self->content);
    free(self->text);
    free(self);
    *self_p = NULL;
}

void actor_set_handle(actor_t *self, void *handle)
{
    self->handle = handle;
}

void *actor_handle(const actor_t *self)
{
    return self->handle;
}

bool actor_done(const actor_t *self)
{
    return self->state == S_DONE;
}

int64_t actor_message_id(const actor_t *self)
{
    return self->message_id;
}
