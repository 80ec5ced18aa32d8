/*  brokerlink.c - a DEALER to one broker and its connection monitor. See
    brokerlink.h. */
#include "brokerlink.h"
#include "slog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ZeroMQ-level PINGs to the broker, and how long it may stay silent before the
   connection is taken for cut (which also raises DISCONNECTED) */
#define S_HEARTBEAT_IVL_MS 1000
#define S_HEARTBEAT_TTL_MS 3000
#define S_HWM 100000
#define S_EVENTS (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED)

int brokerlink_open(brokerlink_t *self, const char *endpoint, const curve_t *curve, const char *who)
{
    memset(self, 0, sizeof *self);
    self->endpoint = strdup(endpoint);
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->endpoint || !self->sock) {
        slog_error("%s: out of memory opening the link to %s", who, endpoint);
        return -1;
    }
    void *sock = zsock_resolve(self->sock);
    if (curve_apply_client(curve, sock) != 0) {
        slog_error("%s: cannot set the CurveZMQ keys for %s", who, endpoint);
        return -1;
    }
    zsock_set_linger(self->sock, 0);
    zsock_set_sndhwm(self->sock, S_HWM);
    zsock_set_rcvhwm(self->sock, S_HWM);
    zsock_set_sndtimeo(self->sock, 0); /* never block the caller's loop */
    zsock_set_rcvtimeo(self->sock, 0);
    /* IMMEDIATE: a request only goes out on a live connection (else the DEALER
       queues it for a broker that may never come back) */
    zsock_set_immediate(self->sock, 1);
    zsock_set_heartbeat_ivl(self->sock, S_HEARTBEAT_IVL_MS);
    zsock_set_heartbeat_timeout(self->sock, S_HEARTBEAT_TTL_MS);
    char inproc[96];
    snprintf(inproc, sizeof inproc, "inproc://brokerlink-monitor-%p", (void *)self);
    if (zmq_socket_monitor(sock, inproc, S_EVENTS) != 0) {
        slog_error("%s: cannot monitor the socket for %s: %s", who, endpoint, zmq_strerror(errno));
        return -1;
    }
    self->monitor = zsock_new_pair(inproc); /* '>' is implied: connects */
    if (!self->monitor) {
        slog_error("%s: cannot open the monitor of the socket for %s", who, endpoint);
        return -1;
    }
    if (zsock_connect(self->sock, "%s", endpoint) != 0) {
        slog_error("%s: cannot connect to %s", who, endpoint);
        return -1;
    }
    return 0;
}

void brokerlink_close(brokerlink_t *self)
{
    zsock_destroy(&self->monitor);
    if (self->sock) {
        zmq_socket_monitor(zsock_resolve(self->sock), NULL, 0);
        zsock_destroy(&self->sock);
    }
    free(self->endpoint);
    self->endpoint = NULL;
}

int brokerlink_drops(brokerlink_t *self)
{
    int drops = 0;
    zmsg_t *msg;
    while (self->monitor && (zsock_events(self->monitor) & ZMQ_POLLIN) &&
           (msg = zmsg_recv_nowait(self->monitor))) {
        /* libzmq's event message: 2 bytes event, 4 bytes value; then the address */
        zframe_t *head = zmsg_first(msg);
        uint16_t event = 0;
        if (head && zframe_size(head) == 6)
            memcpy(&event, zframe_data(head), sizeof event);
        zmsg_destroy(&msg);
        if (event == ZMQ_EVENT_DISCONNECTED)
            drops++;
        else if (event == ZMQ_EVENT_CONNECTED)
            slog_debug("connected to the broker at %s", self->endpoint);
    }
    return drops;
}
