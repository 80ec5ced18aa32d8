/*  worker.h - the worker side of SMP/1, shared by every worker process (db, stream).

    One DEALER per broker ("link"). On start each link sends READY with the
    service and the worker's credit; from then on:
      - HEARTBEAT every 1000 ms on every link, with an optional status body that
        the worker fills in (on_status);
      - a link that heard nothing from its broker for 3 intervals is dead: its
        socket is closed, a new one connects and sends READY again;
      - REQUEST hands a worker_request_t to on_request; the worker answers it later
        with worker_partial() and exactly one worker_reply();
      - CANCEL calls on_cancel for a request still in flight (the worker may stop
        early; it still replies, and the broker drops that reply);
      - DISCONNECT from a broker resets the link (new socket, READY again).

    Credit: READY and CREDIT carry the worker's total capacity - how many requests
    it can hold at once. The broker subtracts the requests it has in flight at this
    worker, so a CREDIT is never "more on top" and can also lower the total (a DB
    worker whose database went away advertises what its live connections can take).

    Loop integration: the sockets are exposed (worker_link_socket) for a poll set
    built by the caller, with worker_handle() when one is readable and worker_tick()
    at least every worker_tick() milliseconds; or worker_attach() registers all of
    that with a czmq zloop. Socket pointers change when a link is reset, so a caller
    with its own poll set fetches them again each iteration.
*/
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include "curve.h"
#include "smp.h"

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WORKER_HEARTBEAT_MS 1000
#define WORKER_LIVENESS 3 /* silent intervals before a broker is taken for dead */

typedef struct worker_t worker_t;

/* One request in flight. Public fields are read-only for the owner. */
typedef struct worker_request_t {
    smp_msg_t msg;       /* the parsed REQUEST: route, request_id, deadline_ms, body_obj, op */
    int64_t received_ms; /* clock_now_ms() when it arrived */
    int64_t deadline_ms; /* absolute monotonic deadline (received + budget or the default) */
    bool cancelled;      /* a CANCEL arrived for it */
    void *user;          /* the owner's per-request state */
    /* private */
    size_t link;         /* which broker it came from */
    uint64_t link_epoch; /* the link's socket generation when it arrived */
    zmsg_t *zmsg;        /* owns the frames msg points into */
    msgpack_zone zone;   /* owns body_obj */
    void *handle;        /* position in the worker's in-flight list */
} worker_request_t;

typedef struct {
    /* A request arrived: the callee owns req until it passes it to worker_reply(). */
    void (*on_request)(void *arg, worker_request_t *req);
    /* The client gave up on req (still owned by the callee, which must still reply). */
    void (*on_cancel)(void *arg, worker_request_t *req);
    /* Packs the heartbeat status body: exactly one MessagePack map. NULL: no body. */
    void (*on_status)(void *arg, msgpack_packer *pk);
} worker_callbacks_t;

/*  A worker for service, connecting to each of the n broker backend endpoints.
    Nothing is sent until worker_start. Returns NULL on a bad argument. */
worker_t *worker_new(const char *service, const char *const *endpoints, size_t n,
                     const worker_callbacks_t *callbacks, void *arg);

/*  Sends DISCONNECT to every broker (if started) and frees everything. Requests
    still in flight are dropped without a reply (call worker_stop and drain first). */
void worker_destroy(worker_t **self_p);

/* CurveZMQ keys for every link (kept by pointer; set before worker_start). */
void worker_set_curve(worker_t *self, const curve_t *curve);

/* Connects every link and sends READY with credit. */
int worker_start(worker_t *self, uint32_t credit);

/* Sets the total credit (see above); sends CREDIT on every link when it changed. */
void worker_set_credit(worker_t *self, uint32_t credit);
uint32_t worker_credit(const worker_t *self);

/*  Stop taking work: credit 0 on every link. Requests still in flight get their
    replies; worker_destroy then says DISCONNECT. */
void worker_stop(worker_t *self);

size_t worker_link_count(const worker_t *self);
zsock_t *worker_link_socket(const worker_t *self, size_t link);

/* Reads and handles every message waiting on link (never blocks). */
void worker_handle(worker_t *self, size_t link);

/*  Heartbeats and broker-death checks; returns the milliseconds until it wants to
    be called again. Cheap to call more often. */
int64_t worker_tick(worker_t *self);

/*  Registers the links and a tick timer with loop (the worker keeps them current
    across link resets). Use either this or the poll-set functions above. */
int worker_attach(worker_t *self, zloop_t *loop);

/* Sends a PARTIAL body (one MessagePack map {"data": ...}) for req. */
int worker_partial(worker_t *self, worker_request_t *req, const void *body, size_t size);

/*  Sends the final REPLY body (one MessagePack map with "status") and frees the
    request; *req_p is set to NULL. */
void worker_reply(worker_t *self, worker_request_t **req_p, const void *body, size_t size);

/* Requests received and not yet replied to. */
size_t worker_in_flight(const worker_t *self);

#endif
