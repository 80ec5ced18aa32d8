/*  queue.c - bounded request FIFO over a czmq zlistx. See queue.h. */
#include "queue.h"

#include <assert.h>
#include <stdlib.h>

struct queue_t {
    zlistx_t *list; /* request_t *, oldest first; each request keeps its handle */
    size_t max;     /* the bound queue_push enforces */
};

queue_t *queue_new(size_t max)
{
    queue_t *self = malloc(sizeof *self);
    if (!self)
        return NULL;
    self->list = zlistx_new();
    if (!self->list) {
        free(self);
        return NULL;
    }
    self->max = max;
    return self;
}

void queue_destroy(queue_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    queue_t *self = *self_p;
    assert(zlistx_size(self->list) == 0);
    zlistx_destroy(&self->list);
    free(self);
    *self_p = NULL;
}

size_t queue_size(const queue_t *self)
{
    return zlistx_size(self->list);
}

size_t queue_max(const queue_t *self)
{
    return self->max;
}

int queue_push(queue_t *self, request_t *req)
{
    if (zlistx_size(self->list) >= self->max)
        return -1;
    req->queue_handle = zlistx_add_end(self->list, req);
    return req->queue_handle ? 0 : -1;
}

void queue_push_front(queue_t *self, request_t *req)
{
    req->queue_handle = zlistx_add_start(self->list, req);
    assert(req->queue_handle); /* czmq aborts on out of memory before this */
}

request_t *queue_pop(queue_t *self)
{
    request_t *req = zlistx_first(self->list);
    if (req) {
        zlistx_delete(self->list, req->queue_handle);
        req->queue_handle = NULL;
    }
    return req;
}

void queue_remove(queue_t *self, request_t *req)
{
    assert(req->queue_handle);
    zlistx_delete(self->list, req->queue_handle);
    req->queue_handle = NULL;
}

size_t queue_expire(queue_t *self, int64_t now, queue_expired_fn *expired, void *arg)
{
    size_t count = 0;
    request_t *req = zlistx_first(self->list);
    while (req) {
        /* read the next one before the callback can free this one */
        request_t *next = zlistx_next(self->list);
        if (req->deadline <= now) {
            zlistx_delete(self->list, req->queue_handle);
            req->queue_handle = NULL;
            expired(req, arg);
            count++;
        }
        req = next;
    }
    return count;
}
