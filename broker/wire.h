/*  wire.h - receiving from a ROUTER socket into one reusable message.

    smp_parse reads a czmq zmsg_t. Receiving a fresh zmsg per message costs two
    allocations per frame (the frame and its list node) plus freeing them all
    again, which measured more than the broker's routing work. A wire_t keeps one
    zmsg whose frames are refilled in place (zframe_reset: small frames need no
    allocation at all), and the peer's routing id beside it.
*/
#ifndef SLUICE_BROKER_WIRE_H
#define SLUICE_BROKER_WIRE_H

#include "smp.h"

#include <czmq.h>

typedef struct wire_t wire_t;

wire_t *wire_new(void);
void wire_destroy(wire_t **self_p);

/*  Receives one message from sock (a libzmq ROUTER handle) without blocking.
    Returns 1 with *identity (the routing id) and *msg (the frames after it, for
    smp_parse) set, both valid until the next call; 0 when nothing is waiting. */
int wire_recv(wire_t *self, void *sock, smp_bytes_t *identity, zmsg_t **msg);

#endif
