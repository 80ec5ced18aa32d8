/*  wire.c - receiving into reusable zmq_msg_t parts. See wire.h. */
#include "wire.h"

#include <stdbool.h>
#include <stdlib.h>

/* Longer than any valid SMP/1 message (7 frames after the routing id). */
#define S_FRAMES 16

struct wire_t {
    zmq_msg_t identity; /* the routing id of the last message */
    zmq_msg_t parts[S_FRAMES];
    smp_bytes_t frames[S_FRAMES];
    bool taken[S_FRAMES]; /* sent on with wire_take: the part is empty now */
    size_t count;
    zmq_msg_t junk; /* frames past S_FRAMES, received and dropped */
};

wire_t *wire_new(void)
{
    wire_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    zmq_msg_init(&self->identity);
    for (size_t i = 0; i < S_FRAMES; i++)
        zmq_msg_init(&self->parts[i]);
    zmq_msg_init(&self->junk);
    return self;
}

void wire_destroy(wire_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wire_t *self = *self_p;
    zmq_msg_close(&self->identity);
    for (size_t i = 0; i < S_FRAMES; i++)
        zmq_msg_close(&self->parts[i]);
    zmq_msg_close(&self->junk);
    free(self);
    *self_p = NULL;
}

int wire_recv(wire_t *self, void *sock)
{
    /* zmq_msg_recv releases what a part held before refilling it */
    if (zmq_msg_recv(&self->identity, sock, ZMQ_DONTWAIT) < 0)
        return 0; /* EAGAIN, or the context is ending */
    size_t n = 0;
    bool more = zmq_msg_more(&self->identity);
    /* the rest of a message is already here once its first frame is */
    while (more) {
        zmq_msg_t *part = n < S_FRAMES ? &self->parts[n] : &self->junk;
        if (zmq_msg_recv(part, sock, 0) < 0)
            break;
        more = zmq_msg_more(part);
        if (n < S_FRAMES) {
            self->frames[n].data = zmq_msg_data(part);
            self->frames[n].size = zmq_msg_size(part);
            self->taken[n] = false;
            n++;
        }
    }
    self->count = n;
    return 1;
}

smp_bytes_t wire_identity(const wire_t *self)
{
    smp_bytes_t b = {zmq_msg_data((zmq_msg_t *)&self->identity),
                     zmq_msg_size((zmq_msg_t *)&self->identity)};
    return b;
}

const smp_bytes_t *wire_frames(const wire_t *self, size_t *count)
{
    *count = self->count;
    return self->frames;
}

zmq_msg_t *wire_take(wire_t *self, size_t index)
{
    if (index >= self->count || self->taken[index])
        return NULL;
    self->taken[index] = true;
    return &self->parts[index];
}
