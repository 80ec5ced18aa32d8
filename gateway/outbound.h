/*  outbound.h - the bytes the gateway holds for clients that have not taken them
    yet: WebSocket queues (notify.c) and chat streams (http.c, Server-Sent Events).

    A client that does not read must not make the gateway grow (design rule 8).
    Each such connection embeds an outbound_conn_t and reports the bytes it holds
    with outbound_set(). Three bounds follow:
      - per connection: its owner refuses to queue past its own cap
        (ws_queue_max_bytes, sse_queue_max_bytes) before calling in here;
      - in total (outbound_budget_bytes): outbound_reserve() makes room for more
        bytes by shedding the connections that hold the most, and answers false
        when the asking connection would itself be the biggest;
      - in time (write_progress_timeout_s): outbound_janitor() sheds a connection
        that has held bytes that long while its peer acknowledged none of what
        was sent (TCP_INFO's tcpi_bytes_acked) and none of its queue was taken,
        so a client that never reads is closed whatever else it sends (pongs,
        pings, messages).

    Shedding calls the owner's shed callback, once per connection: it drops what
    it can (at least its queue; a write libwebsockets still buffers may stay
    counted until the connection closes), reports the rest with outbound_set()
    and closes the connection. It must not free it: it may run inside another
    connection's callbacks, or inside that connection's own.
*/
#ifndef SLUICE_GATEWAY_OUTBOUND_H
#define SLUICE_GATEWAY_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct outbound_t outbound_t;
typedef struct outbound_conn_t outbound_conn_t;

typedef enum {
    OUTBOUND_BUDGET,  /* the gateway's total is above outbound_budget_bytes */
    OUTBOUND_STALLED, /* no write progress for write_progress_timeout_s */
} outbound_why_t;

typedef void(outbound_shed_fn)(outbound_conn_t *oc, outbound_why_t why);

/* Embedded in the connection that owns it; zeroed means not attached. */
struct outbound_conn_t {
    outbound_t *owner;            /* NULL until outbound_attach */
    outbound_shed_fn *shed;       /* closes the connection, see above */
    int fd;                       /* its socket: TCP_INFO tells the peer's progress */
    size_t bytes;                 /* held for the peer now */
    bool shed_done;               /* shed once: never chosen again */
    int64_t progress_ms;          /* the peer last made progress (or bytes began) */
    uint64_t acked;               /* tcpi_bytes_acked when last looked at */
    outbound_conn_t *prev, *next; /* the connections holding bytes */
};

outbound_t *outbound_new(size_t budget_bytes, int64_t write_timeout_ms);
void outbound_destroy(outbound_t **self_p);

void outbound_attach(outbound_t *self, outbound_conn_t *oc, int fd, outbound_shed_fn *shed);

/* Out of the accounting (the connection is going away). Accepts a detached one. */
void outbound_detach(outbound_conn_t *oc);

/* The bytes oc holds now. Less than before counts as write progress. */
void outbound_set(outbound_conn_t *oc, size_t bytes);

/*  Room for more bytes on oc within the budget: sheds the connections that hold
    more than oc would, biggest first, until it fits. false when it cannot fit
    without shedding oc itself: the caller refuses the bytes and closes oc. */
bool outbound_reserve(outbound_conn_t *oc, size_t more);

/* Sheds the connections that made no write progress for write_timeout_ms. */
void outbound_janitor(outbound_t *self, int64_t now_ms);

size_t outbound_total(const outbound_t *self);
size_t outbound_budget(const outbound_t *self);

#endif
