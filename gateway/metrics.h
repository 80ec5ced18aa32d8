/*  metrics.h - the gateway's own counters, rendered in the Prometheus text format.

    Requests are counted by route and status, with a latency histogram per route.
    Gauges that other modules own (open sockets, pending requests, pools from the
    broker's sys status) are passed in at render time, so this module holds no
    pointers into the rest of the gateway.
*/
#ifndef SLUICE_GATEWAY_METRICS_H
#define SLUICE_GATEWAY_METRICS_H

#include "routes.h"

#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>

typedef struct metrics_t metrics_t;

metrics_t *metrics_new(void);
void metrics_destroy(metrics_t **self_p);

/* One answered HTTP request (route may be ROUTE_UNMATCHED). */
void metrics_request(metrics_t *self, route_id_t route, int status, int64_t latency_us);

/* Named event counters: refusals and closes with a reason ("ws_close_1009", ...). */
void metrics_count(metrics_t *self, const char *name);

typedef struct {
    size_t connections;      /* client connections held by libwebsockets */
    size_t websockets;       /* open /v1/sync/notify sockets */
    size_t streams;          /* open chat streams (SSE) */
    size_t upstream_pending; /* SMP requests awaiting a reply */
    size_t topics;           /* event subscriptions */
    size_t auth_cache_entries;
    size_t rate_limit_entries;     /* addresses and tokens the rate/connection limits track */
    size_t unfinished;             /* requests whose head or body is still arriving */
    size_t login_throttle_entries; /* usernames and addresses with failed logins counted */
    size_t outbound_bytes;     /* held for clients that have not read them (outbound.h) */
    size_t outbound_budget;    /* outbound_budget_bytes */
    uint64_t events_received;
} metrics_gauges_t;

/* Writes the exposition text to out. sys_status is the broker's sys status data
   map (NULL when the broker did not answer). */
void metrics_render(metrics_t *self, FILE *out, const metrics_gauges_t *gauges,
                    const msgpack_object *sys_status);

#endif
