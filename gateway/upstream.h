/*  upstream.h - the gateway's SMP client: one DEALER per broker (common/
    brokerlink.h; calls go round robin over the brokers with a live connection),
    polled on the gateway's libuv loop, and the table of requests awaiting a reply.

    Every call gets exactly one final callback: the broker's REPLY, or a reply made
    here when the request could not be sent (503 unavailable), when the connection
    to the broker it was sent to dropped (503 unavailable, at once: that broker
    will never answer it), or when no reply came by its deadline plus a grace
    period (504 timeout). PARTIALs (stream chunks) are delivered to the same
    callback before the final.
*/
#ifndef SLUICE_GATEWAY_UPSTREAM_H
#define SLUICE_GATEWAY_UPSTREAM_H

#include "curve.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct upstream_t upstream_t;
typedef struct upstream_call_t upstream_call_t;

/*  final: false for a PARTIAL (status 0, body {"data":...}), true for the REPLY
    (status 100-599, body {"status","data"|"error"}). body lives only during the
    call. After the final callback the call is gone: forget its handle. */
typedef void(upstream_fn)(void *arg, bool final, int status, const msgpack_object *body);

/* endpoints: comma-separated broker frontends. NULL on failure (logged). */
upstream_t *upstream_new(uv_loop_t *loop, const char *endpoints, const curve_t *curve);
void upstream_destroy(upstream_t **self_p);

/*  Sends one REQUEST (body: a packed request map) to service with deadline_ms.
    Returns the call, or NULL when the request could not be queued to any broker
    (no broker connected, or the send queue is full): the caller answers 503. */
upstream_call_t *upstream_call(upstream_t *self, const char *service, const void *body, size_t size,
                               uint32_t deadline_ms, upstream_fn *fn, void *arg);

/*  The caller no longer wants the answer (its client went away). No callback will
    come; a late reply is dropped. When tell_broker is set, a CANCEL is sent so a
    streaming worker can stop. Sets *call_p to NULL. */
void upstream_cancel(upstream_t *self, upstream_call_t **call_p, bool tell_broker);

/* Reads every message the DEALER has (ZMQ_FD is edge-triggered: call this after
   sends too; the loop's before-poll hook does). */
void upstream_drain(upstream_t *self);

/* Fails calls whose deadline passed more than a grace period ago. */
void upstream_janitor(upstream_t *self, int64_t now_ms);

/*  Fails every pending call now with status/code/message (the end of a drain:
    each caller still answers its client). Returns how many there were. */
size_t upstream_fail_all(upstream_t *self, int status, const char *code, const char *message);

size_t upstream_pending(const upstream_t *self);

#endif
