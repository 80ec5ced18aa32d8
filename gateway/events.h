/*  events.h - the gateway's SUB socket to every broker's event output.

    Subscriptions are reference-counted per user: topic "user/<id>/" is subscribed
    while anything here wants that user's events (an open WebSocket, a cached
    token) and unsubscribed when the last one lets go.

    A new subscription travels SUB -> broker XPUB -> XSUB -> each worker's PUB
    before it filters anything, so events published in that short window are not
    seen. events_ready_at() tells a caller when a topic has been subscribed long
    enough (settle_ms) to trust that every later publish arrives; the WebSocket
    actor waits for it before it reads the database, which closes the gap between
    its replay and live events.
*/
#ifndef SLUICE_GATEWAY_EVENTS_H
#define SLUICE_GATEWAY_EVENTS_H

#include "curve.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct events_t events_t;

/* One event for user_id; body is the event map, valid only during the call. */
typedef void(events_fn)(void *arg, int64_t user_id, const msgpack_object *body);

events_t *events_new(uv_loop_t *loop, const char *endpoints, const curve_t *curve, int64_t settle_ms, events_fn *fn,
                     void *arg);
void events_destroy(events_t **self_p);

void events_subscribe(events_t *self, int64_t user_id);
void events_unsubscribe(events_t *self, int64_t user_id);

/* Monotonic ms from which user_id's subscription is trusted (0 if not subscribed). */
int64_t events_ready_at(events_t *self, int64_t user_id);

void events_drain(events_t *self);

size_t events_topics(const events_t *self);
uint64_t events_received(const events_t *self);

#endif
