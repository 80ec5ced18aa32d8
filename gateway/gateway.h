/*  gateway.h - the one context of a sluice-gateway process.

    Every module that serves clients (listener, server, http, notify, health) is
    handed this struct; the lower modules (upstream, events, auth_cache, metrics,
    routes, validate, render) know nothing of it and are usable on their own. All
    of it belongs to the one thread that runs the libuv loop.
*/
#ifndef SLUICE_GATEWAY_H
#define SLUICE_GATEWAY_H

#include "routes.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct lws_context;
struct lws_vhost;
typedef struct upstream_t upstream_t;
typedef struct events_t events_t;
typedef struct auth_cache_t auth_cache_t;
typedef struct metrics_t metrics_t;
typedef struct listener_t listener_t;
typedef struct notify_t notify_t;
typedef struct static_files_t static_files_t;
typedef struct http_req_t http_req_t;
typedef struct throttle_t throttle_t;
typedef struct login_throttle_t login_throttle_t;
typedef struct outbound_t outbound_t;

/* Settings read once at start (docs/config.md, section gateway). */
typedef struct {
    const char *host;                  /* address to listen on */
    int port;                          /* TCP port (SO_REUSEPORT: several gateways may share it) */
    int backlog;                       /* listen() backlog */
    size_t max_connections;            /* open client connections, HTTP and WebSocket */
    size_t max_body_bytes;             /* HTTP request body */
    size_t max_header_bytes;           /* HTTP request head (request line + headers) */
    size_t max_item_bytes;             /* clipboard content, as api.md's max_item_bytes */
    size_t max_ws_message_bytes;       /* WebSocket message from a client; above: close 1009 */
    size_t ws_queue_max;               /* messages queued to one slow WebSocket before closing it */
    size_t ws_queue_max_bytes;         /* bytes queued to one WebSocket (or held in its replay) */
    size_t sse_queue_max_bytes;        /* bytes of a chat stream its client has not taken */
    size_t outbound_budget_bytes;      /* all of those together, in this gateway */
    int write_progress_timeout_s;      /* bytes held and none taken this long: closed */
    size_t ws_max_per_user;            /* open WebSockets of one user here (0: no limit) */
    size_t ws_max_per_device;          /* open WebSockets of one device here (0: no limit) */
    int ws_reverify_s;                 /* live sockets' devices checked this often (0: never) */
    int64_t ws_gap_wait_ms;            /* a missing seq is waited for this long, then replayed */
    int ws_ping_s;                     /* WebSocket protocol ping to idle peers (0: none) */
    size_t ws_db_max;                  /* db ops of WebSocket actors in flight at once */
    int keepalive_s;                   /* idle HTTP keep-alive connection lifetime */
    int header_timeout_ms;             /* a new connection must send its request head within this */
    int body_timeout_ms;         /* a request body must arrive within this ... */
    int body_min_rate;           /* ... plus 1 s for every this many bytes that did (0: no more) */
    size_t max_pending;          /* unfinished requests (head or body arriving), in all */
    uint32_t deadline_ms[ROUTE_COUNT]; /* SMP deadline of each route */
    uint32_t internal_deadline_ms;     /* auth.verify, device.set_active, clipboard.* for sockets */
    int64_t auth_cache_ms;             /* a verified token is trusted this long */
    int64_t auth_negative_ms;    /* an unknown/revoked token is refused this long without asking */
    size_t auth_cache_max;       /* entries in the token cache */
    int64_t subscribe_settle_ms; /* after a new topic subscription, wait before querying */
    int retry_after_s;           /* Retry-After on 503 */
    int64_t health_cache_ms;     /* /health and /metrics are built at most once per this */
    const char *ops_token;       /* "": /health and /metrics open; else they need it */
    int sse_keepalive_s;         /* a comment line on an SSE stream silent this long (0: never) */
    const char *static_dir;      /* web client files served at / ("" : none) */
    const char *tls_cert;        /* PEM certificate (chain) file; "" : plain HTTP */
    const char *tls_key;         /* PEM private key file; set with tls_cert or not at all */
    int token_rate;              /* requests per second per token (0: no limit) */
    int token_burst;             /* requests a token may make at once */
    int address_rate;            /* requests per second per client address (0: no limit) */
    int address_burst;           /* requests an address may make at once */
    size_t address_max_connections; /* open connections per client address (0: no limit) */
    size_t address_max_pending;     /* unfinished requests per client address (0: no limit) */
    size_t ratelimit_max_entries;   /* addresses, tokens, usernames tracked by each limit */
    int login_fail_username_max;    /* failed logins per username in the window (0: none) */
    int login_fail_address_max;     /* failed logins per client address in the window (0: none) */
    int login_fail_window_s;        /* a whole allowance of failed logins comes back over this */
} gw_config_t;

typedef struct gw_t {
    gw_config_t cfg;
    uv_loop_t *loop;
    struct lws_context *lws;       /* libwebsockets on our loop (foreign libuv loop) */
    struct lws_vhost *vhost;       /* the one vhost; it has no listener of its own */
    struct lws_context *lws_dying; /* destroyed once, freed after the loop has run */
    void *lws_policy;              /* the vhost's idle/ping policy (lws_retry_bo_t, owned) */
    upstream_t *upstream;          /* DEALER to the broker(s) and the pending-request table */
    events_t *events;              /* SUB to the brokers' event output */
    auth_cache_t *auth;            /* token -> (user, device), briefly cached */
    metrics_t *metrics;            /* counters and histograms for /metrics */
    struct health_t *health;       /* /health and /metrics, built at most once a second */
    listener_t *listener;          /* accepts, reads request heads, authenticates upgrades */
    notify_t *notify;              /* the WebSocket actors, by user */
    static_files_t *static_files;  /* the web client, loaded at start */
    throttle_t *throttle;          /* rate and connection limits per address and token */
    login_throttle_t *logins;      /* failed logins per username and per address */
    outbound_t *outbound;          /* bytes held for clients: budget and write timeout */
    bool tls;                      /* the port speaks TLS (tls_cert is set) */
    size_t connections;            /* client connections owned by libwebsockets */
    int in_lws_callback;           /* libwebsockets callbacks running now (they may nest) */
    http_req_t *bodies;      /* requests whose body is arriving (deadlines), linked through them */
    size_t bodies_pending;   /* how many; with the listener's heads, bounded by max_pending */
    http_req_t *streams;     /* open SSE streams (chat answers), linked through the requests */
    size_t streams_open;     /* how many: sluice_gateway_active_streams */
    bool stopping;           /* SIGTERM seen: refuse new work, drain */
    bool closing;            /* drain over: connections are closed by the gateway, not
                                by their clients, so chat answers are not cancelled */
    uint32_t request_prefix; /* X-Request-Ids made here: random prefix + counter */
    uint64_t request_counter;
} gw_t;

/* Called by the lower layers' callbacks: a device was revoked (from an event or
   from a DELETE that passed through here). Drops its cached tokens and closes its
   sockets with 4001. Lives in main.c, where the modules are wired together. */
void gw_device_revoked(gw_t *gw, int64_t user_id, int64_t device_id);

#endif
