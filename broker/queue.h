/*  queue.h - a service's bounded FIFO of requests waiting for a worker's credit.

    This is where waiting happens in Sluice (design.md rule 2): bounded, so a full
    queue turns into a fast 503 instead of a hang, and swept for deadlines so a
    request whose deadline passed is answered 504 and never sent.
*/
#ifndef SLUICE_BROKER_QUEUE_H
#define SLUICE_BROKER_QUEUE_H

#include "request.h"

#include <stddef.h>
#include <stdint.h>

typedef struct queue_t queue_t;

/* A queue holding at most max requests (max 0 makes every push fail). */
queue_t *queue_new(size_t max);

/* The queue must be empty: requests are answered by their owner, not here. */
void queue_destroy(queue_t **self_p);

size_t queue_size(const queue_t *self);
size_t queue_max(const queue_t *self);

/* Appends req. Returns -1 (and takes nothing) when the queue is at its bound. */
int queue_push(queue_t *self, request_t *req);

/*  Puts req first, even past the bound: a request resent after its worker died was
    already accepted once, and it goes ahead of newer ones. */
void queue_push_front(queue_t *self, request_t *req);

/* The oldest request, removed; NULL when empty. */
request_t *queue_pop(queue_t *self);

/* Removes req, which must be in this queue (a CANCEL). */
void queue_remove(queue_t *self, request_t *req);

/*  Removes every request whose deadline is at or before now, calling expired(req,
    arg) for each, oldest first. Returns how many. */
typedef void(queue_expired_fn)(request_t *req, void *arg);
size_t queue_expire(queue_t *self, int64_t now, queue_expired_fn *expired, void *arg);

#endif
