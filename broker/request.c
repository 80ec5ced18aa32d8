/*  request.c - a client request's life in the broker. See request.h. */
#include "request.h"

#include <stdlib.h>
#include <string.h>

int request_key_make(request_key_t *key, smp_bytes_t identity, smp_bytes_t request_id)
{
    if (identity.size == 0 || identity.size > REQUEST_IDENTITY_MAX || request_id.size == 0 ||
        request_id.size > SMP_REQUEST_ID_MAX)
        return -1;
    key->data[0] = (uint8_t)identity.size;
    memcpy(key->data + 1, identity.data, identity.size);
    memcpy(key->data + 1 + identity.size, request_id.data, request_id.size);
    key->size = (uint16_t)(1 + identity.size + request_id.size);
    return 0;
}

request_t *request_new(smp_bytes_t identity, const smp_msg_t *m, zmq_msg_t *body_part,
                       int64_t deadline)
{
    request_t *self = malloc(sizeof *self);
    if (!self)
        return NULL;
    if (request_key_make(&self->key, identity, m->request_id) != 0) {
        free(self);
        return NULL;
    }
    zmq_msg_init(&self->body_msg);
    if (body_part) {
        zmq_msg_move(&self->body_msg, body_part);
    } else if (zmq_msg_init_size(&self->body_msg, m->body.size) == 0) {
        memcpy(zmq_msg_data(&self->body_msg), m->body.data, m->body.size);
    } else {
        free(self);
        return NULL;
    }
    /* after the move: a short body lives inside the zmq_msg_t itself */
    self->body.data = zmq_msg_data(&self->body_msg);
    self->body.size = zmq_msg_size(&self->body_msg);
    self->service = NULL;
    self->worker = NULL;
    self->route = 0;
    self->deadline = deadline;
    self->queue_handle = NULL;
    self->idempotent = m->idempotent;
    self->resent = false;
    self->answered = false;
    return self;
}

int request_send_body(request_t *self, void *sock)
{
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &self->body_msg); /* a reference, not a copy of the bytes */
    int rc = zmq_msg_send(&copy, sock, 0);
    if (rc < 0)
        zmq_msg_close(&copy);
    return rc;
}

void request_destroy(request_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zmq_msg_close(&(*self_p)->body_msg);
    free(*self_p);
    *self_p = NULL;
}

smp_bytes_t request_identity(const request_t *self)
{
    smp_bytes_t b = {self->key.data + 1, self->key.data[0]};
    return b;
}

smp_bytes_t request_id(const request_t *self)
{
    size_t skip = 1 + (size_t)self->key.data[0];
    smp_bytes_t b = {self->key.data + skip, self->key.size - skip};
    return b;
}

void request_set_answered(request_t *self)
{
    self->answered = true;
}

/* FNV-1a: short keys, no adversarial collisions worth more than this (a client can
   only slow its own lookups, and only within the queue bound). */
size_t request_key_hash(const void *key)
{
    const request_key_t *k = key;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < k->size; i++) {
        h ^= k->data[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

int request_key_compare(const void *a, const void *b)
{
    const request_key_t *x = a, *y = b;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    return memcmp(x->data, y->data, x->size);
}

/* Routes come from a counter, so a multiplicative mix spreads them well. */
size_t request_route_hash(const void *key)
{
    uint64_t v = (uint64_t)(uintptr_t)key;
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdULL;
    v ^= v >> 33;
    return (size_t)v;
}

int request_route_compare(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y ? -1 : x > y;
}
