/*  sluice/client.h - the client library for internal services: call Sluice services
    over SMP/1 (docs/protocol.md) through one or more brokers, and subscribe to the
    event bus. Installed with `cmake --install`; link with `pkg-config sluice-client`.
    See docs/clients.md for examples.

    A client has one DEALER per broker frontend. Each call goes to the next broker
    (round robin) that has a live connection; a broker that is down or cut off is
    skipped (ZMQ_IMMEDIATE plus ZeroMQ heartbeats), so traffic continues through the
    others. A call whose broker dies is answered by the library itself at its
    deadline: every call gets exactly one reply, always.

    Bodies are raw MessagePack, as on the wire: a request body is one map with an
    "op" string (and "args", ...); a reply body is one map with "status" and "data"
    or "error"; a partial body is {"data": ...}. Unpack them with msgpack-c.

    Replies the library makes itself (same shape as the broker's):
      503 "unavailable"  no broker connection came up before the deadline
      504 "timeout"      no reply within the deadline (plus SL_CLIENT_GRACE_MS)
      499 "cancelled"    sl_client_cancel on a call not yet sent

    Threads: a client belongs to one thread (as ZeroMQ sockets do). It owns its own
    ZeroMQ context and installs no signal handler. Callbacks may start and cancel
    calls, but must not call sl_client_call, sl_client_dispatch or
    sl_client_destroy.

    Use from an existing event loop: poll the descriptors of sl_client_fd() for
    reading (they are edge-triggered ZMQ_FDs: after any readiness, and whenever
    sl_client_timeout_ms() says 0, call sl_client_dispatch(), which handles
    everything waiting without blocking and calls the callbacks).
*/
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SL_MUSTCHECK __attribute__((warn_unused_result))
#else
#define SL_MUSTCHECK
#endif

#define SL_CLIENT_DEFAULT_DEADLINE_MS 5000
/* Time the broker gets, after a deadline, to send its own 504 before the library
   answers the call itself (the broker's janitor runs every 50 ms). */
#define SL_CLIENT_GRACE_MS 1000

typedef struct sl_client_t sl_client_t;

/* The final reply of a call: body is one MessagePack map, valid during the callback
   (or, for sl_client_call, until sl_reply_free). */
typedef struct {
    int status;    /* the body's "status" */
    uint8_t *body; /* MessagePack */
    size_t size;
    int local; /* 1: made by the library (no broker answered), 0: from a broker */
} sl_reply_t;

typedef struct {
    /* A PARTIAL arrived (zero or more, before the reply). May be NULL. */
    void (*on_partial)(void *arg, uint64_t call, const uint8_t *body, size_t size);
    /* The one final reply. After it, call is forgotten. */
    void (*on_reply)(void *arg, uint64_t call, const sl_reply_t *reply);
} sl_call_handlers_t;

/* An event: topic (e.g. "user/42/", not NUL-terminated) and its MessagePack body. */
typedef void(sl_event_fn)(void *arg, const char *topic, size_t topic_size, const uint8_t *body,
                          size_t size);

/*  A client connected to every broker frontend in endpoints, comma-separated
    ("tcp://10.0.0.1:5550,tcp://10.0.0.2:5550"). Returns NULL (errno set) when an
    endpoint is malformed or resources run out. */
sl_client_t *sl_client_new(const char *endpoints) SL_MUSTCHECK;

/*  The same over CurveZMQ, for brokers that run with curve_cert (docs/security.md):
    cert_path is this client's key pair as `sluicectl keygen PATH` wrote it (PATH,
    and PATH_secret), broker_cert_path the brokers' public certificate; the broker
    must list this client's public certificate in its curve_allow folder. Both NULL
    or "": the same as sl_client_new. Returns NULL with errno EINVAL when a file is
    missing or holds no key, and the reason in why (why_size bytes; may be NULL). */
sl_client_t *sl_client_new_curve(const char *endpoints, const char *cert_path,
                                 const char *broker_cert_path, char *why,
                                 size_t why_size) SL_MUSTCHECK;

/* Closes every socket and frees everything; calls in progress are dropped without
   a callback. Accepts NULL and a pointer to NULL. */
void sl_client_destroy(sl_client_t **self_p);

/*  Sends one REQUEST to service with body (a MessagePack map with "op"). deadline_ms
    0 means SL_CLIENT_DEFAULT_DEADLINE_MS. If no broker is connected yet, the call
    waits in the client (and is sent by sl_client_dispatch) until one is, or until
    its deadline. Returns 0 with *call set, or -1 (errno EINVAL: bad service or
    body, no callback). handlers and arg must stay valid until the reply. */
int sl_client_send(sl_client_t *self, const char *service, const void *body, size_t size,
                   uint32_t deadline_ms, const sl_call_handlers_t *handlers, void *arg,
                   uint64_t *call) SL_MUSTCHECK;

/*  The caller no longer wants the answer: the broker is sent CANCEL (it answers 499
    "cancelled" at once, and tells the worker). The reply still comes, through
    on_reply. Returns -1 when call is not in progress. */
int sl_client_cancel(sl_client_t *self, uint64_t call);

/*  Blocking: sends the call and waits for its reply, calling on_partial (may be
    NULL) for each PARTIAL. Other calls' callbacks and events may run meanwhile.
    Returns 0 with *reply filled (free it with sl_reply_free), -1 on a bad argument. */
int sl_client_call(sl_client_t *self, const char *service, const void *body, size_t size,
                   uint32_t deadline_ms,
                   void (*on_partial)(void *arg, const uint8_t *body, size_t size), void *arg,
                   sl_reply_t *reply) SL_MUSTCHECK;
void sl_reply_free(sl_reply_t *reply);

/*  Subscribes to events whose topic starts with prefix ("" for all, "user/42/" for
    one user) on every broker events output in endpoints (comma-separated). May be
    called again for more prefixes (the endpoints of the first call stay); fn and
    arg are those of the last call. A worker publishes each event to every broker,
    so with several brokers each event arrives once per broker: the copies (same
    topic and body within 2 s) are dropped here. Returns 0 or -1. */
int sl_client_subscribe(sl_client_t *self, const char *endpoints, const char *prefix,
                        sl_event_fn *fn, void *arg) SL_MUSTCHECK;

/* ---- use from an existing loop ---- */

/* How many descriptors to poll (one per broker, one more once subscribed). */
size_t sl_client_fd_count(const sl_client_t *self);
/* The i-th descriptor (an edge-triggered ZMQ_FD), or -1. */
int sl_client_fd(const sl_client_t *self, size_t i);

/*  Handles everything waiting, without blocking: replies, partials, events, calls
    waiting for a broker, deadlines. Callbacks run from here. Returns how many
    messages it handled. */
int sl_client_dispatch(sl_client_t *self);

/*  Milliseconds until sl_client_dispatch must run again even with no readiness
    (a deadline, a call waiting for a broker); 0 means now; -1 means no limit. */
int64_t sl_client_timeout_ms(const sl_client_t *self);

/* Calls in progress (sent or waiting for a broker). */
size_t sl_client_pending(const sl_client_t *self);

#ifdef __cplusplus
}
#endif

#endif
