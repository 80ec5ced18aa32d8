/*  wire.c - receiving into a reusable message. See wire.h. */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>

/* Longer messages are never valid; after one, the frames are given back rather
   than kept (and trimming them one by one would be quadratic). */
#define S_KEEP_FRAMES 16

struct wire_t {
    zmsg_t *msg;        /* frames after the routing id, refilled by each receive */
    zmq_msg_t identity; /* the routing id of the last message */
    zmq_msg_t part;     /* receive buffer for one frame */
};

wire_t *wire_new(void)
{
    wire_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->msg = zmsg_new();
    zmq_msg_init(&self->identity);
    zmq_msg_init(&self->part);
    return self;
}

void wire_destroy(wire_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wire_t *self = *self_p;
    zmsg_destroy(&self->msg);
    zmq_msg_close(&self->identity);
    zmq_msg_close(&self->part);
    free(self);
    *self_p = NULL;
}

int wire_recv(wire_t *self, void *sock, smp_bytes_t *identity, zmsg_t **msg)
{
    if (zmsg_size(self->msg) > S_KEEP_FRAMES) {
        zmsg_destroy(&self->msg);
        self->msg = zmsg_new();
    }
    if (zmq_msg_recv(&self->identity, sock, ZMQ_DONTWAIT) < 0)
        return 0; /* EAGAIN, or the context is ending */
    size_t kept = zmsg_size(self->msg), n = 0;
    zframe_t *frame = zmsg_first(self->msg);
    bool more = zmq_msg_more(&self->identity);
    /* the rest of a message is already here once its first frame is */
    while (more && zmq_msg_recv(&self->part, sock, 0) >= 0) {
        more = zmq_msg_more(&self->part);
        const void *data = zmq_msg_data(&self->part);
        size_t size = zmq_msg_size(&self->part);
        if (n < kept) {
            zframe_reset(frame, data, size);
            frame = zmsg_next(self->msg);
        } else {
            zmsg_addmem(self->msg, data, size);
        }
        n++;
    }
    while (zmsg_size(self->msg) > n) {
        zframe_t *last = zmsg_last(self->msg);
        zmsg_remove(self->msg, last);
        zframe_destroy(&last);
    }
    identity->data = zmq_msg_data(&self->identity);
    identity->size = zmq_msg_size(&self->identity);
    *msg = self->msg;
    return 1;
}
