/*  router.h - the broker's routing state: services, their workers and queues, and
    the requests in flight; every SMP/1 message from a client or a worker goes
    through here, and the janitor tick enforces deadlines and heartbeats.

    The router owns no socket: it sends on the frontend and backend ROUTER sockets
    the broker loop gives it, and never blocks. Everything a peer sends is checked;
    nothing a peer sends can make it assert.
*/
#ifndef SLUICE_BROKER_ROUTER_H
#define SLUICE_BROKER_ROUTER_H

#include "smp.h"
#include "wire.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct router_t router_t;

typedef struct {
    int64_t heartbeat_ms;          /* heartbeat interval, both ways */
    int64_t liveness;              /* intervals of silence after which a worker is dead */
    int64_t default_deadline_ms;   /* a REQUEST's deadline_ms 0 means this */
    size_t queue_max;              /* bound of each service's queue */
    const char *service_queue_max; /* "name=n,name=n": per-service bounds, may be NULL */
    const char *pool_service;      /* workers of this service report pools in `sys status` */
} router_config_t;

/* Checks cfg (the per-service list included): 0, or -1 with *reason naming the
   setting out of range. Needs no socket, so a program checks before it binds. */
int router_config_check(const router_config_t *cfg, const char **reason);

/*  Checks cfg as router_config_check does. Returns NULL with *reason set when a
    value is out of range. */
router_t *router_new(const router_config_t *cfg, zsock_t *frontend, zsock_t *backend,
                     const char **reason);
void router_destroy(router_t **self_p);

/* A message from the frontend, as received (borrowed: only used during the call). */
void router_client_message(router_t *self, wire_t *wire);

/* A message from the backend, as received; a reply or partial body is sent on to
   the client from the wire's part, without a copy. */
void router_worker_message(router_t *self, wire_t *wire);

/* The janitor: deadlines, worker liveness, heartbeats to workers. Run it at least
   every router_tick_ms() milliseconds. */
void router_tick(router_t *self, int64_t now_ms);
int64_t router_tick_ms(const router_t *self);

/*  Shutdown, first step: from now on new requests get 503, queued ones are answered
    503 at once, and every worker is sent DISCONNECT (it drains what it holds). */
void router_shutdown(router_t *self);

/* Requests a client still waits for, that a worker holds. */
size_t router_in_flight(const router_t *self);

/* Shutdown, last step: answers every request still unanswered with 503. */
void router_abort(router_t *self);

/* ---- read-only views for the `sys` service (sys.c) ---- */

typedef struct {
    int64_t started_ms;     /* monotonic start time */
    uint64_t requests;      /* REQUESTs accepted (sys included) */
    uint64_t replies;       /* worker REPLYs forwarded to clients */
    uint64_t partials;      /* worker PARTIALs forwarded */
    uint64_t unavailable;   /* 503 unavailable answered by the broker */
    uint64_t timeouts;      /* 504 timeout */
    uint64_t worker_lost;   /* 503 worker_lost */
    uint64_t resent;        /* idempotent requests resent after a worker died */
    uint64_t cancelled;     /* 499 cancelled */
    uint64_t bad_request;   /* 400 bad_request from malformed client frames */
    uint64_t dropped;       /* client frames dropped with no request id to answer */
    uint64_t worker_errors; /* malformed or unexpected worker messages ignored */
    uint64_t late_replies;  /* worker replies dropped: already answered or unknown */
    uint64_t workers_lost;  /* workers declared dead by heartbeat */
    size_t workers;         /* workers known now */
    size_t queued;          /* requests queued now, all services */
    size_t in_flight;       /* requests in flight now (answered or not) */
    bool draining;          /* shutting down */
} router_stats_t;

void router_stats(const router_t *self, router_stats_t *out);

typedef struct {
    const char *name;
    size_t workers;    /* live workers (not draining) */
    size_t queued;     /* requests waiting */
    size_t queue_max;  /* the queue's bound */
    size_t in_flight;  /* requests its workers hold */
    uint64_t capacity; /* sum of the live workers' credit totals */
    uint64_t credit;   /* requests its workers could take right now */
} router_service_info_t;

typedef void(router_service_fn)(const router_service_info_t *info, void *arg);
/* Calls fn for each service with at least one worker. Returns how many. */
size_t router_each_service(const router_t *self, router_service_fn *fn, void *arg);

typedef struct {
    const char *worker; /* printable name of the worker (its routing id) */
    const char *service;
    const uint8_t *status; /* its last heartbeat body: a MessagePack map */
    size_t status_size;
} router_status_info_t;

typedef void(router_status_fn)(const router_status_info_t *info, void *arg);
/* Calls fn for each worker of the pool service that sent a status. Returns how many. */
size_t router_each_status(const router_t *self, router_status_fn *fn, void *arg);

typedef struct {
    const char *worker; /* printable name of the worker (its routing id) */
    const char *service;
    uint32_t capacity;     /* credit total */
    uint32_t in_flight;    /* requests it holds */
    bool draining;         /* gets no new requests (DISCONNECT, shutdown or sys drain) */
    bool held;             /* drained by sys drain: stays registered when empty */
    const uint8_t *status; /* last heartbeat body (MessagePack map), may be empty */
    size_t status_size;
} router_worker_info_t;

typedef void(router_worker_fn)(const router_worker_info_t *info, void *arg);
/* Calls fn for each registered worker. Returns how many. */
size_t router_each_worker(const router_t *self, router_worker_fn *fn, void *arg);

/*  sys drain: the worker named name (router_worker_info_t.worker) gets no new
    requests from now on and stays registered once empty. Returns -1 when no worker
    has that name. */
int router_drain_worker(router_t *self, const char *name);

#endif
