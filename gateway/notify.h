/*  notify.h - /v1/sync/notify: one small actor per WebSocket.

    An actor holds its user and device ids, a cursor, and the messages not yet
    written; never anything of the database. Its life:

      open -> SETTLING (until the user's event subscription is trusted)
           -> HELLO    (clipboard.latest, then {"type":"hello",...})
           -> REPLAY   (only with ?after=SEQ: clipboard.list pages, one at a time,
                        the next asked for only when the socket has drained)
           -> LIVE     (events as they come)
      Live events that arrive before LIVE are held, and on entering LIVE the ones
      the replay already covered (seq <= the last replayed) are dropped: no gap, no
      duplicate. device.set_active true on open and false on close (when no other
      socket of the device is open here) are fire-and-forget db ops.

    What a socket holds for its client is bounded in bytes (ws_queue_max_bytes,
    and the gateway's outbound budget and write-progress timeout, outbound.h): a
    socket past them is closed with 4002 and its client reconnects with after=,
    which the replay serves; the replay itself only asks for a page once the
    queue has drained. Sockets per user and per device are capped at the upgrade
    (429 too_many_sockets). Each user's devices are re-checked every ws_reverify_s
    (device.list), so a revoke whose event was missed still closes its sockets.
*/
#ifndef SLUICE_GATEWAY_NOTIFY_H
#define SLUICE_GATEWAY_NOTIFY_H

#include "gateway.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
typedef struct notify_conn_t notify_conn_t;

notify_t *notify_new(gw_t *gw);
void notify_destroy(notify_t **self_p);

/* libwebsockets events (server.c). Each returns the callback's return value. */
int notify_on_confirm(gw_t *gw, struct lws *wsi);
int notify_on_open(gw_t *gw, struct lws *wsi, notify_conn_t **conn_p);
int notify_on_receive(notify_conn_t *conn, const void *data, size_t len);
int notify_on_writeable(notify_conn_t *conn);
void notify_on_closed(notify_conn_t **conn_p);

/* An event of user_id from the bus (clipboard.item, clipboard.deleted). */
void notify_user_event(notify_t *self, int64_t user_id, const msgpack_object *event);

/* Closes every socket of device_id with 4001. */
void notify_device_revoked(notify_t *self, int64_t user_id, int64_t device_id);

/* Starts the periodic device checks that are due (ws_reverify_s). */
void notify_janitor(notify_t *self, int64_t now_ms);

/* Closes every socket with 1001 (the gateway is stopping). */
void notify_shutdown(notify_t *self);

size_t notify_count(const notify_t *self);

#endif
