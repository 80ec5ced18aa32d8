/*  actor.h - one chat answer being generated: a small state machine that owns no
    database resource.

        BEGIN ──► (CONTEXT) ──► STREAMING ──► FINISHING ──► DONE
          │ db chat.message.begin      │ provider deltas     │ db chat.message.finish
          │                            │ + checkpoints       │ then the final REPLY
          └ CONTEXT only for openai: db chat.message.list, the earlier messages
          └ REPLAY instead of all that when the begin returned what an earlier
            request with the same Idempotency-Key stored: that answer is read back
            (chat.message.list) and replied as it is, or 409 while it still streams

    Every step that touches the database is one `db` request through the broker
    (client.h); between them the actor holds only its text so far. The requester
    gets PARTIALs {"data":{"event":"message",...}} once the rows exist, then
    {"data":{"event":"delta","text":...}} per provider delta, and one final REPLY:
      complete  200 {"data":{"user_message","assistant_message"}}
      cancelled 499 cancelled (the broker already told the client; the reply only
                returns the credit)
      failed    502 (provider_*), 504 (provider_timeout, timeout) or 503
                (worker_shutdown), with "error" {code, message} and the same "data"
    The message's `error` column keeps "<code>: <message>".

    A stop (client CANCEL, deadline, shutdown) that arrives while a db call is in
    flight is remembered and applied when that call answers: the row is always
    either never created or finished.
*/
#ifndef SLUICE_ACTOR_H
#define SLUICE_ACTOR_H

#include "client.h"
#include "http.h"
#include "journal.h"
#include "openai.h"
#include "timers.h"
#include "worker.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct actor_t actor_t;

/*  The longest a begin may take (and so the latest it can commit): its budget. A
    begin is journaled before it is sent, as message id -nonce, and that line is
    ended once it answered: a worker that dies in between leaves the nonce, and
    whoever adopts the journal finds the row by it (chat.message.find). */
#define ACTOR_BEGIN_MAX_MS 30000

/* Counters of one process's actors, for its heartbeat status and logs. */
typedef struct {
    uint64_t started;
    uint64_t completed;
    uint64_t failed;
    uint64_t cancelled;
    uint64_t rejected;    /* never began: bad request, begin refused */
    uint64_t deltas;      /* PARTIAL deltas sent */
    uint64_t checkpoints; /* checkpoints recorded */
    uint64_t db_errors;   /* db calls that failed, checkpoints included */
} actor_stats_t;

typedef enum { ACTOR_PROVIDER_ECHO, ACTOR_PROVIDER_OPENAI } actor_provider_t;

typedef struct {
    actor_provider_t provider;
    int64_t checkpoint_ms;       /* at most one checkpoint per this, while text changes */
    int64_t token_delay_ms;      /* echo: between words */
    uint32_t db_timeout_ms;      /* budget of each db call */
    int64_t max_stream_ms;       /* longest answer, whatever the request's deadline */
    size_t max_answer_bytes;     /* longer answers fail with answer_too_long */
    size_t max_content_bytes;    /* longest user message accepted */
    size_t max_context_messages; /* openai: earlier messages sent along */
    size_t max_context_bytes;    /* openai: and their bytes, the newest kept */
    openai_settings_t openai;
} actor_settings_t;

/*  A message whose finish could not be recorded in time (no db worker answered for
    S_URGENT_WAIT_MS): its journal entry stays open, and the owner keeps trying with
    the outcome the actor had decided. Strings are valid during the call only. */
typedef struct {
    journal_entry_t entry;
    const char *status;  /* complete, failed or cancelled */
    const char *content; /* the whole answer */
    size_t content_len;
    const char *error; /* "<code>: <message>", NULL when complete */
} actor_orphan_t;

/* What an actor may use: all owned by the process (chat.c), shared by all actors. */
typedef struct {
    worker_t *worker;
    client_t *db;
    timers_t *timers;
    http_t *http;       /* NULL unless the provider is openai */
    journal_t *journal; /* NULL: no crash journal */
    const actor_settings_t *settings;
    msgpack_sbuffer *scratch; /* packing buffer: filled and sent in one go, never kept */
    actor_stats_t *stats;
    /* The actor replied and is done; free it later, never from inside this call. */
    void (*on_end)(void *arg, actor_t *actor);
    /* Its finish could not be recorded: the journal entry stays open for recovery. */
    void (*on_orphan)(void *arg, const actor_orphan_t *orphan);
    void *arg;
} actor_env_t;

/*  Takes req (a REQUEST for service chat). A request that is not a valid
    chat.generate is answered at once (400/401) and NULL is returned. */
actor_t *actor_new(const actor_env_t *env, worker_request_t *req);

/* The client went away (SMP CANCEL): finish as cancelled with the text so far. */
void actor_cancel(actor_t *self);

/* The worker is stopping: finish as failed (worker_shutdown) with the text so far. */
void actor_interrupt(actor_t *self);

/*  Frees the actor. One that has not replied yet replies 503 first (only at process
    exit); its db calls in flight are forgotten. */
void actor_destroy(actor_t **self_p);

bool actor_done(const actor_t *self);

/* A pointer the owner keeps with the actor (e.g. its place in the owner's list). */
void actor_set_handle(actor_t *self, void *handle);
void *actor_handle(const actor_t *self);
int64_t actor_message_id(const actor_t *self);

#endif
