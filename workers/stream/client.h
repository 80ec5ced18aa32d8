/*  client.h - an SMP/1 client on the process's loop: one DEALER connected to the
    broker frontend(s), a table of calls waiting for their REPLY keyed by request id,
    and a local cap on calls in flight.

    The stream worker persists through `db` ops like any other client; this is how
    it calls them. Why a cap: thousands of streams checkpointing every second would
    otherwise put thousands of requests in the broker's db queue at once, and every
    other client's request (a clipboard write from the gateway) would wait behind
    them. With the cap, at most max_in_flight of ours are ever queued there; the rest
    wait here, urgent calls (begin, finish) before background ones (checkpoints).
    Waiting here holds no database resource, and a call's deadline counts from
    client_call, so time spent waiting here is part of its budget.

    Every call gets exactly one callback, never from inside client_call: the REPLY,
    or a made-up one - 503 `broker_lost` as soon as the connection to the broker it
    was sent to goes away (killed, restarted, or silent for 3 s: one DEALER per
    broker, watched by a socket monitor; the call may or may not have been applied),
    504 `timeout` when neither a reply nor the broker's own 504 came by the deadline
    plus a grace period, 503 `unavailable` when the request could not be sent (no
    broker connected).
*/
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include "curve.h"
#include "timers.h"

#include <czmq.h>
#include <msgpack.h>
#include <stdint.h>

typedef struct client_t client_t;

/* body is the reply map (always with "status"), valid only during the call. */
typedef void(client_reply_fn)(void *arg, int status, const msgpack_object *body);

typedef enum {
    CLIENT_URGENT,     /* sent before any background call waiting */
    CLIENT_BACKGROUND, /* checkpoints: fine to wait behind begin and finish */
} client_priority_t;

/* endpoints: comma-separated broker frontends (calls go round-robin over them). */
client_t *client_new(zloop_t *loop, timers_t *timers, const char *endpoints, const curve_t *curve,
                     size_t max_in_flight);
/* Calls still waiting are dropped without their callbacks. */
void client_destroy(client_t **self_p);

/*  Sends {body} (one packed request map: op, args, auth...) to service with a
    budget of deadline_ms. Returns the call's id (never 0), or 0 when out of memory
    (then no callback comes). */
uint64_t client_call(client_t *self, const char *service, const void *body, size_t size,
                     uint32_t deadline_ms, client_priority_t priority, client_reply_fn *fn,
                     void *arg);

/* The caller is going away: no callback will come for id (0 is ignored). */
void client_forget(client_t *self, uint64_t id);

/*  Starts a request body in buf (cleared first): {"op": op, "auth": {"user_id",
    "device_id"}, "args": {...}}, leaving the packer inside "args", where the caller
    packs exactly nargs key/value pairs. */
msgpack_packer client_request_start(msgpack_sbuffer *buf, const char *op, int64_t user_id,
                                    int64_t device_id, uint32_t nargs);

/*  The same with an idempotency key: the DB worker stores the result with the
    write, and the broker may resend the request once if the DB worker holding it
    dies ("idempotent": true); the resend returns the stored result. */
msgpack_packer client_request_start_idem(msgpack_sbuffer *buf, const char *op, int64_t user_id,
                                         int64_t device_id, uint32_t nargs, const char *idem);

size_t client_in_flight(const client_t *self);
size_t client_waiting(const client_t *self);

#endif
