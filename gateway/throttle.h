/*  throttle.h - the limits per client: request rate per address and per token
    (token buckets, ratelimit.h), and open connections per address.

    A client address is the peer's IPv4 address, or the /64 prefix of its IPv6
    address (one host usually holds a whole /64). Tokens are keyed by a SHA-256
    prefix, never kept themselves. Each limit is off when its setting is 0; with
    all of them off this module does nothing at all. Refusals are counted in
    /metrics (sluice_gateway_events_total, reason rate_limited_*).
*/
#ifndef SLUICE_GATEWAY_THROTTLE_H
#define SLUICE_GATEWAY_THROTTLE_H

#include "gateway.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct throttle_t throttle_t;
typedef struct throttle_peer_t throttle_peer_t;

/* NULL on failure (logged). */
throttle_t *throttle_new(gw_t *gw);

/*  New limits from a reload (SIGHUP; cfg's rate fields are read). The rate tables
    are made anew, so every bucket starts full; the connection limit applies at
    once to the addresses tracked. Connections opened while no per-address limit
    was on are not tracked, so a limit turned on by a reload counts only the
    connections opened after it. Returns -1, changing nothing, on a bad value or
    out of memory. */
int throttle_reconfigure(throttle_t *self, const gw_config_t *cfg);
void throttle_destroy(throttle_t **self_p);

/* A connection was accepted on fd. Returns its peer (its address, holding one
   connection) or NULL when no per-address limit is on. *refused: the address
   already holds address_max_connections (counted; the caller closes fd). */
throttle_peer_t *throttle_connect(throttle_t *self, int fd, bool *refused);

/* The connection of peer closed. Accepts NULL. */
void throttle_disconnect(throttle_t *self, throttle_peer_t **peer_p);

/* One request (HTTP, or a WebSocket handshake) from peer (may be NULL). Returns 0,
   or the Retry-After in seconds of a 429: the address is over its rate. */
int throttle_request(throttle_t *self, const throttle_peer_t *peer);

/* One request with this token. 0, or the Retry-After of a 429. */
int throttle_token(throttle_t *self, const char *token, size_t len);

/* The client address key of the peer of fd (as the limits here count it:
   IPv4, or an IPv6 /64) into key; false when it has none (not an IP socket). */
bool throttle_address_key(int fd, char *key, size_t size);

/* Forgets idle buckets (every janitor tick). */
void throttle_janitor(throttle_t *self, int64_t now_ms);

/* Addresses and tokens tracked now (buckets and connection counts). */
size_t throttle_entries(const throttle_t *self);

#endif
