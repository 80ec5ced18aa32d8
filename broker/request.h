/*  request.h - one client request inside the broker, from the REQUEST that brought
    it to the one REPLY that ends it.

    A request is owned by exactly one place at a time: its service's queue, or the
    in-flight table while a worker holds it. It keeps the body as the zmq_msg_t it
    arrived in (forwarded as it came, never re-encoded; each send shares the buffer
    instead of copying it), and a key made of the client's routing id and its
    request id, by which a CANCEL or a duplicate id finds it.
*/
#ifndef SLUICE_BROKER_REQUEST_H
#define SLUICE_BROKER_REQUEST_H

#include "smp.h"

#include <czmq.h>
#include <stdbool.h>
#include <zmq.h>
#include <stdint.h>

#define REQUEST_IDENTITY_MAX 255 /* ZeroMQ routing ids are 1-255 bytes */

/* [identity size (1 byte)] [identity] [request id]: unique per live request */
typedef struct {
    uint16_t size;
    uint8_t data[1 + REQUEST_IDENTITY_MAX + SMP_REQUEST_ID_MAX];
} request_key_t;

typedef struct service_t service_t;
typedef struct worker_t worker_t;

typedef struct {
    request_key_t key;  /* client identity + request id */
    zmq_msg_t body_msg; /* the raw MessagePack body */
    smp_bytes_t body;   /* a view of body_msg */
    service_t *service; /* the service it was sent to */
    worker_t *worker;   /* the worker holding it, while in flight */
    uint64_t route;     /* in-flight table key sent to the worker as `route`; 0 = not sent */
    int64_t deadline;   /* monotonic ms after which it is answered 504 */
    void *queue_handle; /* its place in the service queue while queued */
    bool idempotent;    /* body "idempotent": true: may be resent once if its worker dies */
    bool resent;        /* already resent once */
    bool answered;      /* the client got its final REPLY (a worker may still hold it) */
} request_t;

/*  Builds the index key of identity + request id into key. Returns -1 when either
    does not fit (never for frames the codec accepted). */
int request_key_make(request_key_t *key, smp_bytes_t identity, smp_bytes_t request_id);

/*  A request from a parsed client REQUEST m. The ids are copied; the body is taken
    from body_part, the received part that holds m->body (moved: body_part is left
    empty), or copied when body_part is NULL. Returns NULL when out of memory or the
    ids do not fit. */
request_t *request_new(smp_bytes_t identity, const smp_msg_t *m, zmq_msg_t *body_part,
                       int64_t deadline);
/*  Sends the body to sock as the last frame of a message, sharing its buffer (a
    request may be sent again if its worker dies). Returns zmq_msg_send's result. */
int request_send_body(request_t *self, void *sock);

void request_destroy(request_t **self_p);

smp_bytes_t request_identity(const request_t *self);
smp_bytes_t request_id(const request_t *self);

/*  Marks the request answered: a worker that still holds it only needs the key and
    route for its late reply to be recognised and dropped. */
void request_set_answered(request_t *self);

/* zhashx callbacks for request_key_t keys, and for 8-byte integer keys stored in the
   pointer itself (routes). */
size_t request_key_hash(const void *key);
int request_key_compare(const void *a, const void *b);
size_t request_route_hash(const void *key);
int request_route_compare(const void *a, const void *b);

#endif
