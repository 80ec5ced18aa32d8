/*  sluice-gateway: the public HTTP/1.1 + WebSocket API (docs/api.md).

    One thread, one libuv loop. On it: libwebsockets (foreign-loop mode), the
    listening socket, the DEALER to the brokers and the SUB to their events (each
    ZMQ_FD under a uv_poll), one janitor timer (deadlines, cache expiry, header
    timeouts) and a before-poll hook that drains both ZeroMQ sockets: ZMQ_FD is
    edge-triggered and a send can consume its edge, so the loop never sleeps with
    a message unread. No request is handed to another thread.

    SIGTERM/SIGINT: stop accepting, close WebSockets with 1001 (each marks its
    device inactive), let requests in flight and chat streams finish (at most
    drain_ms), end the streams still open with an `error` event (their answers are
    not cancelled: the workers store them), then close everything and exit 0.
*/
#include "gateway.h"
#include "auth_cache.h"
#include "clock.h"
#include "config.h"
#include "curve.h"
#include "events.h"
#include "http.h"
#include "health.h"
#include "listener.h"
#include "login_throttle.h"
#include "metrics.h"
#include "mp.h"
#include "notify.h"
#include "outbound.h"
#include "server.h"
#include "slog.h"
#include "static_files.h"
#include "throttle.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SLUICE_STATIC_DIR
#define SLUICE_STATIC_DIR ""
#endif

#define S_JANITOR_MS 100
/* After the drain, how long the last events of the streams still open may take
   to reach their clients before the connections are closed anyway. */
#define S_STREAM_FLUSH_MS 1000

static const config_option_t s_options[] = {
    {"host", CONFIG_STR, "127.0.0.1", "address to listen on (IPv4 or IPv6 literal)"},
    {"port", CONFIG_INT, "8080", "TCP port; several gateways may share it (SO_REUSEPORT)"},
    {"backlog", CONFIG_INT, "1024", "listen() backlog"},
    {"frontend", CONFIG_STR, "tcp://127.0.0.1:5550",
     "brokers' frontend endpoints, comma-separated (one DEALER connects to all)"},
    {"events_out", CONFIG_STR, "tcp://127.0.0.1:5553",
     "brokers' event output endpoints, comma-separated (one SUB connects to all)"},
    {"max_connections", CONFIG_INT, "100000", "client connections (HTTP and WebSocket)"},
    {"max_body_bytes", CONFIG_INT, "4194304", "HTTP request body; larger gets 413"},
    {"max_header_bytes", CONFIG_INT, "16384", "HTTP request head; larger gets 431"},
    {"max_item_bytes", CONFIG_INT, "1048576", "clipboard content; larger gets 413"},
    {"max_ws_message_bytes", CONFIG_INT, "65536",
     "WebSocket message from a client; larger closes the socket with 1009"},
    {"ws_queue_max", CONFIG_INT, "1024",
     "messages queued to a WebSocket that is not reading before it is closed (4002)"},
    {"ws_queue_max_bytes", CONFIG_INT, "4194304",
     "bytes queued to a WebSocket (or held during its replay) before it is closed (4002)"},
    {"sse_queue_max_bytes", CONFIG_INT, "4194304",
     "bytes of a chat stream its client has not read before the answer is cancelled"},
    {"outbound_budget_bytes", CONFIG_INT, "268435456",
     "bytes held for clients that have not read them, all sockets and streams together; "
     "above it the connection holding the most is closed"},
    {"write_progress_timeout_s", CONFIG_INT, "30",
     "a WebSocket or chat stream with bytes waiting and none taken for this long is closed"},
    {"ws_max_per_user", CONFIG_INT, "32", "open WebSockets of one user here (0: no limit)"},
    {"ws_max_per_device", CONFIG_INT, "8", "open WebSockets of one device here (0: no limit)"},
    {"ws_reverify_s", CONFIG_INT, "60",
     "check this often that the devices of open WebSockets are not revoked (0: never)"},
    {"ws_gap_wait_ms", CONFIG_INT, "1000",
     "a live item whose earlier seq has not arrived waits this long; then the user's "
     "sockets reconnect (4002) to replay it"},
    {"ws_ping_s", CONFIG_INT, "30", "ping idle WebSockets after this many seconds (0: never)"},
    {"ws_db_max", CONFIG_INT, "64",
     "db ops of WebSockets (hello, replay, set_active) in flight at once; more wait here"},
    {"keepalive_s", CONFIG_INT, "30", "idle HTTP keep-alive connections are closed after this"},
    {"header_timeout_ms", CONFIG_INT, "10000",
     "a request head must arrive whole within this, or 408 and close"},
    {"body_timeout_ms", CONFIG_INT, "10000",
     "a request body must arrive within this (plus what body_min_rate allows), or 408 and close"},
    {"body_min_rate", CONFIG_INT, "16384",
     "a body arriving at least this fast (bytes a second) gets 1 s more per this many bytes "
     "(0: none)"},
    {"max_pending", CONFIG_INT, "2048",
     "unfinished requests (head or body still arriving) in all; more connections get 503"},
    {"deadline_ms", CONFIG_INT, "5000", "SMP deadline of a request (every route)"},
    {"chat_deadline_ms", CONFIG_INT, "600000",
     "deadline of a chat answer (chat.generate), stream included; keep it at least the stream "
     "workers' max_stream_ms"},
    {"route_deadlines", CONFIG_STR, "",
     "per-route deadlines by op, e.g. clipboard.create=3000 (chat.generate here overrides "
     "chat_deadline_ms)"},
    {"sse_keepalive_s", CONFIG_INT, "15",
     "a comment line on a chat stream that was silent this long (0: never)"},
    {"internal_deadline_ms", CONFIG_INT, "5000",
     "deadline of the gateway's own requests (auth.verify, WebSocket replay, set_active)"},
    {"auth_cache_ms", CONFIG_INT, "10000", "a verified token is trusted this long"},
    {"auth_negative_ms", CONFIG_INT, "5000", "an unknown or revoked token is refused this long"},
    {"auth_cache_max", CONFIG_INT, "100000", "tokens kept in the cache"},
    {"subscribe_settle_ms", CONFIG_INT, "50",
     "after subscribing to a user's events, wait this long before reading the database"},
    {"retry_after_s", CONFIG_INT, "1", "Retry-After of a 503"},
    {"health_cache_ms", CONFIG_INT, "1000",
     "/health and /metrics are built at most once per this; requests meanwhile share it"},
    {"ops_token", CONFIG_STR, "",
     "when set, /metrics and the detail of /health need Authorization: Bearer <it>"},
    {"drain_ms", CONFIG_INT, "3000", "on SIGTERM, how long requests in flight may take"},
    {"static_dir", CONFIG_STR, SLUICE_STATIC_DIR, "web client files served at / (empty: none)"},
    {"tls_cert", CONFIG_STR, "",
     "PEM certificate (chain) file: the port speaks HTTPS and wss (empty: plain HTTP)"},
    {"tls_key", CONFIG_STR, "", "PEM private key file of tls_cert (both or neither)"},
    {"token_rate", CONFIG_INT, "0", "requests per second per token; more get 429 (0: no limit)"},
    {"token_burst", CONFIG_INT, "100", "requests a token may make at once above token_rate"},
    {"address_rate", CONFIG_INT, "0",
     "requests (and WebSocket handshakes) per second per client address; more get 429 (0: no "
     "limit)"},
    {"address_burst", CONFIG_INT, "200", "requests an address may make at once above address_rate"},
    {"address_max_connections", CONFIG_INT, "0",
     "open connections per client address; more get 429 (0: no limit)"},
    {"address_max_pending", CONFIG_INT, "256",
     "unfinished requests (head or body still arriving) per client address; more connections "
     "get 429 (0: no limit)"},
    {"ratelimit_max_entries", CONFIG_INT, "100000",
     "addresses, tokens and usernames each limit tracks; the least recently seen go first"},
    {"login_fail_username_max", CONFIG_INT, "10",
     "failed logins per username within login_fail_window_s; more get 429 (0: no limit)"},
    {"login_fail_address_max", CONFIG_INT, "30",
     "failed logins per client address within login_fail_window_s; more get 429 (0: no limit)"},
    {"login_fail_window_s", CONFIG_INT, "300",
     "the failed-login allowances fill up again over this many seconds"},
    CURVE_CLIENT_OPTIONS,
    {NULL, 0, NULL, NULL},
};

/* The process: the context plus the handles only main.c touches. */
typedef struct {
    gw_t gw;
    config_t *config;
    curve_t curve; /* CurveZMQ keys of the DEALER and SUB sockets */
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup; /* reload: log_level and the limits (docs/config.md, "Reloading") */
    config_t *applied;  /* the last configuration a SIGHUP applied; NULL: config */
    uv_timer_t janitor;
    uv_prepare_t before_poll;
    int64_t drain_until_ms;
    bool flush_all;      /* requests were answered at the drain's end: give them time */
    bool streams_ended;  /* the drain is over and open streams got their error event */
    int64_t close_at_ms; /* then: close by this time even if some are not written */
    bool closed;
} s_main_t;

void gw_device_revoked(gw_t *gw, int64_t user_id, int64_t device_id)
{
    auth_cache_revoke_device(gw->auth, device_id);
    listener_revoke_device(gw->listener, device_id);
    notify_device_revoked(gw->notify, user_id, device_id);
}

static void s_on_event(void *arg, int64_t user_id, const msgpack_object *body)
{
    gw_t *gw = arg;
    if (mp_str_eq(mp_get(body, "type"), "device.revoked")) {
        int64_t device;
        if (mp_get_int(body, "device_id", &device))
            gw_device_revoked(gw, user_id, device);
        return;
    }
    notify_user_event(gw->notify, user_id, body);
}

static void s_before_poll(uv_prepare_t *handle)
{
    gw_t *gw = handle->data;
    if (gw->upstream)
        upstream_drain(gw->upstream);
    if (gw->events)
        events_drain(gw->events);
}

/* In dependency order: connections first (their close callbacks cancel calls and
   release subscriptions), then what they used. */
static void s_destroy_modules(gw_t *gw)
{
    server_stop(gw);
    notify_destroy(&gw->notify);
    auth_cache_destroy(&gw->auth);
    health_destroy(&gw->health); /* before upstream: it cancels its calls there */
    upstream_destroy(&gw->upstream);
    events_destroy(&gw->events);
}

static void s_close_all(s_main_t *m)
{
    if (m->closed)
        return;
    m->closed = true;
    gw_t *gw = &m->gw;
    slog_info("gateway: closing");
    gw->closing = true;
    s_destroy_modules(gw);
    uv_timer_stop(&m->janitor);
    uv_close((uv_handle_t *)&m->janitor, NULL);
    uv_prepare_stop(&m->before_poll);
    uv_close((uv_handle_t *)&m->before_poll, NULL);
    uv_signal_stop(&m->sigterm);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_signal_stop(&m->sigint);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_signal_stop(&m->sighup);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    /* already stopping: a repeated SIGTERM must not kill the last steps of the
       close (the default action would, once libuv's handler is gone) */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

static void s_janitor(uv_timer_t *timer)
{
    s_main_t *m = timer->data;
    gw_t *gw = &m->gw;
    int64_t now = clock_now_ms();
    upstream_janitor(gw->upstream, now);
    auth_cache_janitor(gw->auth, now);
    listener_janitor(gw->listener, now);
    throttle_janitor(gw->throttle, now);
    login_throttle_expire(gw->logins, now);
    http_janitor(gw, now);
    outbound_janitor(gw->outbound, now);
    notify_janitor(gw->notify, now);
    if (!gw->stopping)
        return;
    if (now >= m->drain_until_ms && !m->streams_ended) {
        m->streams_ended = true;
        m->close_at_ms = now + S_STREAM_FLUSH_MS;
        if (gw->streams_open)
            slog_info("gateway: drain over: ending %zu chat streams", gw->streams_open);
        http_end_streams(gw);
        /* requests still waiting get their 503 (with Retry-After) rather than a
           closed connection; the flush delay below lets it be written */
        size_t failed = upstream_fail_all(gw->upstream, 503, "unavailable",
                                          "this gateway is stopping; try again");
        if (failed)
            slog_info("gateway: drain over: answered %zu waiting requests 503", failed);
        m->flush_all = failed > 0;
    }
    if (m->flush_all && now < m->close_at_ms)
        return; /* the 503s just made are still being written */
    bool idle = notify_count(gw->notify) == 0 && upstream_pending(gw->upstream) == 0 &&
                gw->streams_open == 0;
    if (idle || (m->streams_ended && (gw->streams_open == 0 || now >= m->close_at_ms)))
        s_close_all(m);
}

static void s_on_signal(uv_signal_t *handle, int signum)
{
    s_main_t *m = handle->data;
    gw_t *gw = &m->gw;
    if (gw->stopping)
        return;
    slog_info("gateway: %s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    gw->stopping = true;
    m->drain_until_ms = clock_now_ms() + config_int(m->config, "drain_ms");
    listener_stop(gw->listener);
    notify_shutdown(gw->notify);
}

/* The rate and connection limits of c into cfg; -1 with why when out of range. */
static int s_rate_settings(const config_t *c, gw_config_t *cfg, char *why, size_t why_size)
{
    int64_t token_rate = config_int(c, "token_rate"), token_burst = config_int(c, "token_burst");
    int64_t address_rate = config_int(c, "address_rate");
    int64_t address_burst = config_int(c, "address_burst");
    int64_t per_address = config_int(c, "address_max_connections");
    int64_t pending_per_address = config_int(c, "address_max_pending");
    int64_t pending = config_int(c, "max_pending");
    int64_t rl_entries = config_int(c, "ratelimit_max_entries");
    if (token_rate < 0 || token_rate > 1000000 || address_rate < 0 || address_rate > 1000000 ||
        token_burst < 1 || token_burst > 1000000 || address_burst < 1 || address_burst > 1000000 ||
        per_address < 0 || pending_per_address < 0 || pending < 1 || rl_entries < 1 ||
        rl_entries > 100000000) {
        snprintf(why, why_size,
                 "a rate limit setting is out of range: token_rate and "
                 "address_rate 0-1000000, token_burst and address_burst 1-1000000, "
                 "address_max_connections and address_max_pending >= 0, "
                 "max_pending >= 1, ratelimit_max_entries 1-100000000");
        return -1;
    }
    cfg->address_max_pending = (size_t)pending_per_address;
    cfg->max_pending = (size_t)pending;
    cfg->token_rate = (int)token_rate;
    cfg->token_burst = (int)token_burst;
    cfg->address_rate = (int)address_rate;
    cfg->address_burst = (int)address_burst;
    cfg->address_max_connections = (size_t)per_address;
    cfg->ratelimit_max_entries = (size_t)rl_entries;
    int64_t login_user = config_int(c, "login_fail_username_max");
    int64_t login_address = config_int(c, "login_fail_address_max");
    int64_t login_window = config_int(c, "login_fail_window_s");
    if (login_user < 0 || login_user > 1000000 || login_address < 0 || login_address > 1000000 ||
        login_window < 1 || login_window > 86400) {
        snprintf(why, why_size,
                 "a failed-login limit is out of range: login_fail_username_max "
                 "and login_fail_address_max 0-1000000, login_fail_window_s "
                 "1-86400");
        return -1;
    }
    cfg->login_fail_username_max = (int)login_user;
    cfg->login_fail_address_max = (int)login_address;
    cfg->login_fail_window_s = (int)login_window;
    return 0;
}

/* The failed-login throttle cfg asks for; NULL out of memory. */
static login_throttle_t *s_logins(const gw_config_t *cfg)
{
    login_throttle_config_t lc = {
        .username_max = cfg->login_fail_username_max,
        .address_max = cfg->login_fail_address_max,
        .window_s = cfg->login_fail_window_s,
        .max_entries = cfg->ratelimit_max_entries,
    };
    return login_throttle_new(&lc);
}

/* What clients may make this gateway hold: bytes and sockets (docs/config.md). */
static int s_outbound_settings(const config_t *c, gw_config_t *cfg)
{
    int64_t ws_bytes = config_int(c, "ws_queue_max_bytes");
    int64_t sse_bytes = config_int(c, "sse_queue_max_bytes");
    int64_t budget = config_int(c, "outbound_budget_bytes");
    int64_t timeout = config_int(c, "write_progress_timeout_s");
    int64_t per_user = config_int(c, "ws_max_per_user");
    int64_t per_device = config_int(c, "ws_max_per_device");
    int64_t reverify = config_int(c, "ws_reverify_s");
    if (ws_bytes < 65536 || sse_bytes < 65536 || budget < 1048576 || timeout < 1 ||
        timeout > 3600 || per_user < 0 || per_device < 0 || reverify < 0 || reverify > 86400) {
        fprintf(stderr, "sluice-gateway: an outbound limit is out of range: ws_queue_max_bytes "
                        "and sse_queue_max_bytes >= 65536, outbound_budget_bytes >= 1048576, "
                        "write_progress_timeout_s 1-3600, ws_max_per_user and ws_max_per_device "
                        ">= 0, ws_reverify_s 0-86400\n");
        return -1;
    }
    cfg->ws_queue_max_bytes = (size_t)ws_bytes;
    cfg->sse_queue_max_bytes = (size_t)sse_bytes;
    cfg->outbound_budget_bytes = (size_t)budget;
    cfg->write_progress_timeout_s = (int)timeout;
    cfg->ws_max_per_user = (size_t)per_user;
    cfg->ws_max_per_device = (size_t)per_device;
    cfg->ws_reverify_s = (int)reverify;
    cfg->ws_gap_wait_ms = config_int(c, "ws_gap_wait_ms");
    if (cfg->ws_gap_wait_ms < 10 || cfg->ws_gap_wait_ms > 600000) {
        fprintf(stderr, "sluice-gateway: ws_gap_wait_ms is out of range: 10-600000\n");
        return -1;
    }
    return 0;
}

/* The settings a SIGHUP applies, besides log_level. */
static const char *const s_reloadable[] = {"token_rate",
                                           "token_burst",
                                           "address_rate",
                                           "address_burst",
                                           "address_max_connections",
                                           "address_max_pending",
                                           "max_pending",
                                           "ratelimit_max_entries",
                                           "login_fail_username_max",
                                           "login_fail_address_max",
                                           "login_fail_window_s",
                                           NULL};

static int s_apply_limits(void *arg, const config_t *fresh, char *why, size_t why_size)
{
    gw_t *gw = arg;
    gw_config_t next = gw->cfg;
    if (s_rate_settings(fresh, &next, why, why_size) != 0)
        return -1;
    /* the failed-login tables are made anew (counts start from nothing), like the
       rate buckets; attempts in flight give back to the new tables, harmlessly */
    login_throttle_t *logins = s_logins(&next);
    if (!logins || (gw->throttle && throttle_reconfigure(gw->throttle, &next) != 0)) {
        login_throttle_destroy(&logins);
        snprintf(why, why_size, "out of memory for the new rate limit tables");
        return -1;
    }
    login_throttle_destroy(&gw->logins);
    gw->logins = logins;
    gw->cfg = next; /* only the limits differ */
    return 0;
}

/*  SIGHUP: the settings are read again (config file, environment, flags); the
    rate and connection limits and log_level are applied without dropping a
    connection (the rate buckets start full again), every other change is named as
    needing a restart. All or nothing, one line either way. */
static void s_on_hup(uv_signal_t *handle, int signum)
{
    (void)signum;
    s_main_t *m = handle->data;
    config_t *fresh = NULL;
    if (config_reload_apply(m->config, m->applied ? m->applied : m->config,
                            "gateway: ", s_reloadable, s_apply_limits, &m->gw, &fresh) != 0)
        return;
    curve_reload_note(&m->curve, config_str(fresh, "curve_cert"),
                      config_str(fresh, "curve_broker_cert"), false, "gateway: ");
    config_destroy(&m->applied);
    m->applied = fresh;
}

/* Both TLS files or neither, and both readable: a clear word at start rather
   than a vague failure of libwebsockets. Whether they hold a valid certificate
   and its key is checked when the vhost loads them (server_start). */
static int s_check_tls(gw_config_t *cfg)
{
    bool cert = cfg->tls_cert[0] != 0, key = cfg->tls_key[0] != 0;
    if (cert != key) {
        fprintf(stderr, "sluice-gateway: tls_cert and tls_key go together: %s is set, %s is not\n",
                cert ? "tls_cert" : "tls_key", cert ? "tls_key" : "tls_cert");
        return -1;
    }
    const char *files[2] = {cfg->tls_cert, cfg->tls_key};
    const char *names[2] = {"tls_cert", "tls_key"};
    for (int i = 0; cert && i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) {
            fprintf(stderr, "sluice-gateway: %s: cannot read %s: %s\n", names[i], files[i],
                    strerror(errno));
            return -1;
        }
        fclose(f);
    }
    return 0;
}

/*  The settings nothing else checks, and those checked late (the host at bind,
    the endpoints at connect, the static folder when opened), before any socket is
    made: a bad one is named (exit 2), never reported as what it breaks later. */
static int s_check(const config_t *c, char *why, size_t why_size)
{
    static const config_range_t ranges[] = {
        {"port", 0, 65535},
        {"backlog", 1, 65535},
        {"max_connections", 1, 10000000},
        {"max_body_bytes", 1, 1073741824},
        {"max_item_bytes", 1, 1073741824},
        {"ws_queue_max", 16, 1000000},
        {"ws_db_max", 1, 100000},
        {"keepalive_s", 1, 86400},
        {"deadline_ms", 1, 3600000},
        {"internal_deadline_ms", 1, 3600000},
        {"auth_cache_ms", 0, 86400000},
        {"auth_negative_ms", 0, 86400000},
        {"auth_cache_max", 1, 100000000},
        {"subscribe_settle_ms", 0, 60000},
        {"retry_after_s", 0, 86400},
        {"drain_ms", 0, 3600000},
        {NULL, 0, 0},
    };
    if (config_check_ints(c, ranges, why, why_size) != 0 ||
        config_check_endpoints(c, "frontend", why, why_size) != 0 ||
        config_check_endpoints(c, "events_out", why, why_size) != 0)
        return -1;
    const char *host = config_str(c, "host");
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
        snprintf(why, why_size, "host must be an IPv4 or IPv6 address, got '%s'", host);
        return -1;
    }
    const char *dir = config_str(c, "static_dir");
    struct stat st;
    if (*dir && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(why, why_size, "static_dir %s is not a folder", dir);
        return -1;
    }
    return 0;
}

static int s_load(s_main_t *m)
{
    gw_t *gw = &m->gw;
    config_t *c = m->config;
    gw_config_t *cfg = &gw->cfg;
    char checked[600];
    if (s_check(c, checked, sizeof checked) != 0) {
        fprintf(stderr, "sluice-gateway: %s\n", checked);
        return -1;
    }
    cfg->host = config_str(c, "host");
    cfg->port = (int)config_int(c, "port");
    cfg->backlog = (int)config_int(c, "backlog");
    cfg->max_connections = (size_t)config_int(c, "max_connections");
    cfg->max_body_bytes = (size_t)config_int(c, "max_body_bytes");
    cfg->max_header_bytes = (size_t)config_int(c, "max_header_bytes");
    cfg->max_item_bytes = (size_t)config_int(c, "max_item_bytes");
    cfg->max_ws_message_bytes = (size_t)config_int(c, "max_ws_message_bytes");
    cfg->ws_queue_max = (size_t)config_int(c, "ws_queue_max");
    if (s_outbound_settings(c, cfg) != 0)
        return -1;
    cfg->ws_ping_s = (int)config_int(c, "ws_ping_s");
    cfg->ws_db_max = (size_t)config_int(c, "ws_db_max");
    cfg->keepalive_s = (int)config_int(c, "keepalive_s");
    cfg->header_timeout_ms = (int)config_int(c, "header_timeout_ms");
    int64_t body_timeout = config_int(c, "body_timeout_ms");
    int64_t body_rate = config_int(c, "body_min_rate");
    cfg->internal_deadline_ms = (uint32_t)config_int(c, "internal_deadline_ms");
    cfg->auth_cache_ms = config_int(c, "auth_cache_ms");
    cfg->auth_negative_ms = config_int(c, "auth_negative_ms");
    cfg->auth_cache_max = (size_t)config_int(c, "auth_cache_max");
    cfg->subscribe_settle_ms = config_int(c, "subscribe_settle_ms");
    cfg->retry_after_s = (int)config_int(c, "retry_after_s");
    cfg->health_cache_ms = config_int(c, "health_cache_ms");
    cfg->ops_token = config_str(c, "ops_token");
    cfg->sse_keepalive_s = (int)config_int(c, "sse_keepalive_s");
    int64_t chat_deadline = config_int(c, "chat_deadline_ms");
    cfg->static_dir = config_str(c, "static_dir");
    cfg->tls_cert = config_str(c, "tls_cert");
    cfg->tls_key = config_str(c, "tls_key");
    char why[300];
    if (s_rate_settings(c, cfg, why, sizeof why) != 0) {
        fprintf(stderr, "sluice-gateway: %s\n", why);
        return -1;
    }
    if (s_check_tls(cfg) != 0)
        return -1;
    int64_t deadline = config_int(c, "deadline_ms");
    if (cfg->port < 0 || cfg->port > 65535 || cfg->max_header_bytes < 1024 ||
        cfg->max_header_bytes > 65535 || cfg->max_ws_message_bytes < 16 || deadline < 1 ||
        cfg->ws_queue_max < 16 || cfg->ws_db_max < 1 || cfg->max_connections < 1 ||
        cfg->auth_cache_max < 1 || cfg->internal_deadline_ms < 1 || cfg->ws_ping_s < 0 ||
        cfg->ws_ping_s > 30000 || chat_deadline < 1 || chat_deadline > 3600 * 1000 ||
        cfg->sse_keepalive_s < 0 || cfg->sse_keepalive_s > 3600 || cfg->header_timeout_ms < 100 ||
        cfg->header_timeout_ms > 600000 || body_timeout < 100 || body_timeout > 600000 ||
        body_rate < 0 || body_rate > 1000000000 || cfg->health_cache_ms < 0 ||
        cfg->health_cache_ms > 60000) {
        fprintf(stderr, "sluice-gateway: a setting is out of range (see --help and "
                        "docs/config.md: port 0-65535, max_header_bytes 1024-65535, "
                        "chat_deadline_ms 1-3600000, sse_keepalive_s 0-3600, header_timeout_ms "
                        "and body_timeout_ms 100-600000, body_min_rate 0-1000000000, "
                        "health_cache_ms 0-60000, ...)\n");
        return -1;
    }
    cfg->body_timeout_ms = (int)body_timeout;
    cfg->body_min_rate = (int)body_rate;
    /* connections above the descriptor limit would fail at accept(): cap them so
       the excess is answered 503 instead (64 descriptors for everything else) */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        cfg->max_connections + 64 > rl.rlim_cur) {
        size_t cap = rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
        slog_warn("gateway: max_connections %zu is above the file-descriptor limit %llu: using "
                  "%zu (raise ulimit -n)",
                  cfg->max_connections, (unsigned long long)rl.rlim_cur, cap);
        cfg->max_connections = cap;
    }
    for (size_t i = 0; i < ROUTE_COUNT; i++)
        cfg->deadline_ms[i] = (uint32_t)deadline;
    cfg->deadline_ms[ROUTE_MSG_CREATE] = (uint32_t)chat_deadline;
    char err[200];
    if (routes_parse_deadlines(config_str(c, "route_deadlines"), cfg->deadline_ms, err,
                               sizeof err) != 0) {
        fprintf(stderr, "sluice-gateway: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    s_main_t m;
    memset(&m, 0, sizeof m);
    int rc = config_load(&m.config, "sluice-gateway",
                         "The public HTTP/1.1 and WebSocket API of Sluice (docs/api.md).",
                         s_options, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    char curve_why[512];
    if (s_load(&m) != 0) {
        config_destroy(&m.config);
        return 2;
    }
    if (curve_load(&m.curve, config_str(m.config, "curve_cert"),
                   config_str(m.config, "curve_broker_cert"), false, curve_why,
                   sizeof curve_why) != 0) {
        fprintf(stderr, "sluice-gateway: CurveZMQ: %s\n", curve_why);
        config_destroy(&m.config);
        return 2;
    }
    gw_t *gw = &m.gw;
    signal(SIGPIPE, SIG_IGN);
    zsys_init();
    zsys_handler_set(NULL); /* signals are the loop's, not czmq's */
    uv_loop_init(&m.loop);
    gw->loop = &m.loop;
    int exit_code = 1;

    gw->metrics = metrics_new();
    gw->health = health_new(gw, gw->cfg.health_cache_ms);
    gw->tls = gw->cfg.tls_cert[0] != 0;
    gw->throttle = throttle_new(gw);
    gw->logins = s_logins(&gw->cfg);
    gw->outbound = outbound_new(gw->cfg.outbound_budget_bytes,
                                (int64_t)gw->cfg.write_progress_timeout_s * 1000);
    gw->static_files = static_files_new(gw->cfg.static_dir);
    gw->upstream = upstream_new(gw->loop, config_str(m.config, "frontend"), &m.curve);
    gw->events = events_new(gw->loop, config_str(m.config, "events_out"), &m.curve,
                            gw->cfg.subscribe_settle_ms, s_on_event, gw);
    auth_cache_config_t acfg = {gw->cfg.auth_cache_ms, gw->cfg.auth_negative_ms,
                                gw->cfg.auth_cache_max, gw->cfg.internal_deadline_ms};
    if (gw->upstream && gw->events)
        gw->auth = auth_cache_new(gw->loop, gw->upstream, gw->events, &acfg);
    if (gw->auth)
        gw->notify = notify_new(gw);
    if (!gw->static_files || !gw->notify || !gw->throttle || !gw->health || !gw->logins ||
        !gw->outbound || server_start(gw) != 0 || !(gw->listener = listener_new(gw))) {
        slog_error("gateway: start failed");
        goto out;
    }

    uv_signal_init(gw->loop, &m.sigterm);
    uv_signal_init(gw->loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, s_on_signal, SIGTERM);
    uv_signal_start(&m.sigint, s_on_signal, SIGINT);
    uv_signal_init(gw->loop, &m.sighup);
    m.sighup.data = &m;
    uv_signal_start(&m.sighup, s_on_hup, SIGHUP);
    uv_timer_init(gw->loop, &m.janitor);
    m.janitor.data = &m;
    uv_timer_start(&m.janitor, s_janitor, S_JANITOR_MS, S_JANITOR_MS);
    uv_prepare_init(gw->loop, &m.before_poll);
    m.before_poll.data = gw;
    uv_prepare_start(&m.before_poll, s_before_poll);

    slog_info("gateway: listening on %s://%s:%d (brokers %s)", gw->tls ? "https" : "http",
              gw->cfg.host, gw->cfg.port, config_str(m.config, "frontend"));
    uv_run(gw->loop, UV_RUN_DEFAULT);
    exit_code = 0;

out:
    /* everything that holds handles is closed, then the loop runs them down */
    if (!m.closed) {
        if (gw->listener)
            listener_stop(gw->listener);
        s_destroy_modules(gw);
    }
    uv_run(gw->loop, UV_RUN_DEFAULT);
    server_finish(gw);
    uv_run(gw->loop, UV_RUN_DEFAULT);
    listener_destroy(&gw->listener);
    throttle_destroy(&gw->throttle); /* after every connection closed: they hold peers */
    login_throttle_destroy(&gw->logins);
    outbound_destroy(&gw->outbound); /* and bytes */
    static_files_destroy(&gw->static_files);
    metrics_destroy(&gw->metrics);
    free(gw->lws_policy);
    if (uv_loop_close(gw->loop) != 0)
        slog_warn("gateway: loop closed with handles still open");
    config_destroy(&m.applied);
    config_destroy(&m.config);
    slog_info("gateway: stopped");
    return exit_code;
}
