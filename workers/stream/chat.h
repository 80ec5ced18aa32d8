/*  chat.h - the `chat` service of one stream worker process: its context (worker
    links to the brokers, the db client, timers, curl, the journal), the stream
    actors it runs, the janitor tick, recovery of messages whose worker died, and
    the drain on SIGTERM.

    Credit: the worker advertises max_streams to the brokers, which count what they
    sent and not yet got a REPLY for, so the broker never hands this process more
    streams than it accepts; a request beyond that (a race with a credit change) is
    answered 503 at once.

    Shutdown (chat_shutdown): credit 0 at once (no new stream); streams running go
    on for up to shutdown_grace_ms so that most answers simply complete; whatever
    is still running then is interrupted: its text so far is stored as `failed`
    (code worker_shutdown) and its requester gets 503. A second chat_shutdown
    interrupts at once. The process then says DISCONNECT and exits 0.
*/
#ifndef SLUICE_CHAT_H
#define SLUICE_CHAT_H

#include "actor.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *worker_name; /* in status and the journal's file name */
    const char *service;     /* "chat" */
    const char *backend;     /* broker backends, comma-separated */
    const char *frontend;    /* broker frontends, comma-separated (db calls) */
    const curve_t *curve;    /* CurveZMQ keys on every socket; NULL: plain TCP */
    uint32_t max_streams;
    size_t db_max_in_flight; /* our db calls at the broker at once */
    const char *journal_dir; /* "" or NULL: no crash journal */
    int64_t journal_scan_ms; /* how often to look for dead workers' journals */
    int64_t shutdown_grace_ms;
    actor_settings_t actor;
} chat_settings_t;

typedef struct chat_t chat_t;

/* settings must outlive the chat. Returns NULL with why filled in. */
chat_t *chat_new(zloop_t *loop, const chat_settings_t *settings, char *why, size_t why_size);
void chat_destroy(chat_t **self_p);

/* READY to the brokers, the janitor on the loop, a first look at dead journals. */
int chat_start(chat_t *self);

/* SIGTERM / SIGINT: see above. The loop ends (a handler returns -1) once drained. */
void chat_shutdown(chat_t *self);

/* SIGHUP: a new max_streams; the credit at the brokers follows at once. Streams
   running beyond a lowered limit go on to their end; new ones wait in the broker. */
void chat_set_max_streams(chat_t *self, uint32_t max_streams);

size_t chat_active(const chat_t *self);

#endif
