/*  listener.h - accepts client connections and hands them to libwebsockets.

    The listening socket is ours (SO_REUSEPORT, so several gateways can share a
    port), not libwebsockets': before a connection is adopted we peek at its first
    request head. A WebSocket upgrade to /v1/sync/notify is authenticated here,
    asynchronously through the token cache, because libwebsockets sends the 101 in
    the same callback that would have to wait. A bad token is refused with a 401
    on the raw socket; a good one is recorded as a preauth for the socket's fd,
    which the WebSocket actor takes when the upgrade completes. Everything else is
    adopted at once. The connection limit and the header-size limit of the first
    request are enforced here too, and the connection limit per client address
    (throttle.h) counted from here until libwebsockets destroys the connection.

    With TLS (tls_cert) the head is encrypted: the listener only checks that the
    first byte starts a TLS handshake (plain HTTP gets a plain 400 saying to use
    https) and adopts the connection; libwebsockets does the TLS. An upgrade then
    reaches notify_on_confirm without a preauth: a cached token is settled there,
    and one not cached is left in a preauth (token) for the WebSocket actor to
    verify right after the 101, before the socket gets anything.
*/
#ifndef SLUICE_GATEWAY_LISTENER_H
#define SLUICE_GATEWAY_LISTENER_H

#include "gateway.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t user_id;
    int64_t device_id;
    int64_t after;      /* ?after=, -1 when absent */
    int64_t expires_ms; /* unused preauths are dropped after this */
    char *token;        /* not verified yet (malloc'd; NULL once verified): the WebSocket
                           actor verifies it after the upgrade (notify.c). Owned by the
                           table; listener_take_preauth hands it to the caller. */
} preauth_t;

/* Binds and listens on cfg.host:cfg.port. NULL on failure (logged). */
listener_t *listener_new(gw_t *gw);
void listener_destroy(listener_t **self_p);

/* Stops accepting (SIGTERM); connections not yet adopted are closed. */
void listener_stop(listener_t *self);

/* The preauth recorded for fd: peek leaves it (out->token is still the table's),
   take removes it (out->token is the caller's to free). put takes pa->token. */
bool listener_peek_preauth(listener_t *self, int fd, preauth_t *out);
bool listener_take_preauth(listener_t *self, int fd, preauth_t *out);
void listener_put_preauth(listener_t *self, int fd, const preauth_t *pa);

/* Drops preauths of a revoked device. */
void listener_revoke_device(listener_t *self, int64_t device_id);

/* Header timeouts and stale preauths. */
void listener_janitor(listener_t *self, int64_t now_ms);

/* Connections accepted and not yet adopted. */
size_t listener_pending(const listener_t *self);

#endif
