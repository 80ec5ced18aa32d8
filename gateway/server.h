/*  server.h - libwebsockets on the gateway's libuv loop: the context, the one vhost
    (without a listener of its own: the listener module hands it accepted sockets),
    and the protocol callback that routes each event to the HTTP or the WebSocket
    actor of the connection. */
#ifndef SLUICE_GATEWAY_SERVER_H
#define SLUICE_GATEWAY_SERVER_H

#include "gateway.h"

typedef struct http_req_t http_req_t;
typedef struct notify_conn_t notify_conn_t;

/* libwebsockets' per-connection user space: which actor owns the connection now. */
typedef struct {
    http_req_t *req;     /* the HTTP transaction in progress, if any */
    notify_conn_t *conn; /* the WebSocket actor, once upgraded */
} session_t;

/* Creates gw->lws and gw->vhost on gw->loop. Returns 0 or -1 (logged). */
int server_start(gw_t *gw);

/* Destroys the context; the loop must run afterwards for its handles to close. */
void server_stop(gw_t *gw);

/* After the loop ran down: frees what server_stop could not. */
void server_finish(gw_t *gw);

#endif
