/*  throttle.h - the limits per client: request rate per address and per token
    (token buckets, ratelimit.h), open connections per address, and unfinished
    requests per address (connections whose client has not sent a whole request
    yet: a head still arriving, or a body).

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

typedef enum {
    THROTTLE_ADMITTED = 0,
    THROTTLE_CONNECTIONS, /* the address holds address_max_connections already */
    THROTTLE_PENDING,     /* the address has address_max_pending unfinished requests */
} throttle_admit_t;

/* A connection was accepted on fd. Returns its peer (its address, holding one
   connection, with one unfinished request: its head) or NULL when no per-address
   limit is on. *refused says why the address may not have it (counted; the
   caller closes fd). */
throttle_peer_t *throttle_connect(throttle_t *self, int fd, throttle_admit_t *refused);

/* An unfinished request of peer's: begins (a body to read; the head's is counted
   by throttle_connect) or ends (the head or body has arrived, or was given up).
   Each accepts NULL. */
void throttle_pending_begin(throttle_t *self, throttle_peer_t *peer);
void throttle_pending_end(throttle_t *self, throttle_peer_t *peer);

/* The connection of peer closed (its unfinished requests ended before). Accepts
   NULL. */
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
