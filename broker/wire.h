/*  wire.h - receiving from a ROUTER socket into reusable zmq_msg_t parts.

    A message is received frame by frame into a fixed array of zmq_msg_t and parsed
    in place (smp_parse_frames reads views of them): no czmq frame, no copy, no
    allocation per message. A frame that is forwarded as it came (a reply or
    partial body) can be sent from its part with zmq_msg_send, which hands the
    buffer on to ZeroMQ instead of copying it, as zmq_proxy does.
*/
#ifndef SLUICE_BROKER_WIRE_H
#define SLUICE_BROKER_WIRE_H

#include "smp.h"

#include <zmq.h>

typedef struct wire_t wire_t;

wire_t *wire_new(void);
void wire_destroy(wire_t **self_p);

/*  Receives one message from sock (a libzmq ROUTER handle) without blocking.
    Returns 1 when a message was read, 0 when nothing is waiting. What the getters
    below return stays valid until the next call. */
int wire_recv(wire_t *self, void *sock);

/* The sender's routing id. */
smp_bytes_t wire_identity(const wire_t *self);

/*  The frames after the routing id, as views; *count is how many. A message with
    more frames than any valid one is cut (its extra frames still make it fail). */
const smp_bytes_t *wire_frames(const wire_t *self, size_t *count);

/*  The part holding frame index, or NULL when there is none or it was taken.
    Sending it (zmq_msg_send) takes it: its view must not be read afterwards. */
zmq_msg_t *wire_take(wire_t *self, size_t index);

#endif
