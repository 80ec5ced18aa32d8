/*  server.c - libwebsockets context, vhost and protocol callback. See server.h. */
#include "server.h"
#include "http.h"
#include "notify.h"
#include "slog.h"
#include "throttle.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

static int s_on_event(gw_t *gw, struct lws *wsi, enum lws_callback_reasons reason, session_t *ss,
                      void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_WSI_CREATE:
        gw->connections++;
        return 0;
    case LWS_CALLBACK_WSI_DESTROY: {
        if (gw->connections)
            gw->connections--;
        throttle_peer_t *peer = lws_get_opaque_user_data(wsi); /* set by the listener */
        lws_set_opaque_user_data(wsi, NULL);
        throttle_disconnect(gw->throttle, &peer);
        return 0;
    }
    case LWS_CALLBACK_HTTP:
        return ss ? http_on_request(gw, wsi, &ss->req, (const char *)in) : -1;
    case LWS_CALLBACK_HTTP_BODY:
        return ss ? http_on_body(ss->req, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return ss ? http_on_body_done(ss->req) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return ss ? http_on_writeable(&ss->req) : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (ss)
            http_on_closed(&ss->req);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        if (!in || strcmp((const char *)in, "websocket") != 0)
            return -1; /* h2c and other upgrades are not offered */
        return notify_on_confirm(gw, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ss ? notify_on_open(gw, wsi, &ss->conn) : -1;
    case LWS_CALLBACK_RECEIVE:
        return ss ? notify_on_receive(ss->conn, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ss ? notify_on_writeable(ss->conn) : 0;
    case LWS_CALLBACK_CLOSED:
        if (ss)
            notify_on_closed(&ss->conn);
        return 0;
    default:
        return 0;
    }
}

/* Counts the callbacks running: an HTTP answer may be written and its transaction
   completed at once only outside them (http.c), never under libwebsockets' own
   processing of that connection. */
static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    struct lws_context *cx = lws_get_context(wsi);
    gw_t *gw = cx ? lws_context_user(cx) : NULL;
    if (!gw)
        return 0;
    gw->in_lws_callback++;
    int rc = s_on_event(gw, wsi, reason, user, in, len);
    gw->in_lws_callback--;
    return rc;
}

/* libwebsockets' notices are noise at info level; its errors are ours to see */
static void s_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        slog_warn("libwebsockets: %.*s", (int)n, line);
    else
        slog_debug("libwebsockets: %.*s", (int)n, line);
}

static const struct lws_protocols s_protocols[] = {
    /* one protocol for HTTP and the WebSocket: a client that names none gets it */
    {"sluice", s_callback, sizeof(session_t), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int server_start(gw_t *gw)
{
    lws_set_log_level(LLL_ERR | (slog_enabled(SLOG_DEBUG) ? LLL_WARN | LLL_NOTICE : 0) |
                          (getenv("SLUICE_LWS_TRACE") ? LLL_INFO | LLL_DEBUG : 0),
                      s_lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign[1] = {gw->loop};
    static const lws_retry_bo_t idle = {0};
    lws_retry_bo_t *policy = calloc(1, sizeof *policy);
    *policy = idle;
    if (gw->cfg.ws_ping_s > 0) {
        policy->secs_since_valid_ping = (uint16_t)gw->cfg.ws_ping_s;
        policy->secs_since_valid_hangup = (uint16_t)(gw->cfg.ws_ping_s * 2 + 10);
    }
    gw->lws_policy = policy;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (gw->tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = foreign;
    info.user = gw;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* listener.c accepts */
    info.protocols = s_protocols;
    size_t header = gw->cfg.max_header_bytes;
    info.max_http_header_data = (unsigned short)(header > 65535 ? 65535 : header);
    info.max_http_header_pool = 4096; /* requests waiting on a worker each keep one */
    info.keepalive_timeout = gw->cfg.keepalive_s;
    info.timeout_secs = 10;
    /* libwebsockets' "holding a header table without a complete head" timeout
       bounds the heads the listener does not see: every head after the first on a
       keep-alive connection (a client that trickles its second head holds a table
       of the pool meanwhile), and on a TLS port every head (the listener's header
       timeout ends at the first byte of the handshake there). */
    int ah_secs = (gw->cfg.header_timeout_ms + 999) / 1000;
    info.timeout_secs_ah_idle = (unsigned int)(ah_secs < 1 ? 1 : ah_secs);
    info.retry_and_idle_policy = gw->cfg.ws_ping_s > 0 ? policy : NULL;
    info.vhost_name = "sluice";
    gw->lws = lws_create_context(&info);
    if (!gw->lws) {
        slog_error("server: libwebsockets context could not be created");
        return -1;
    }
    if (gw->tls) {
        /* libwebsockets does the TLS of every socket the listener adopts into this
           vhost. HTTP/1.1 only: an h2 client would bypass what http.c writes. */
        info.ssl_cert_filepath = gw->cfg.tls_cert;
        info.ssl_private_key_filepath = gw->cfg.tls_key;
        info.alpn = "http/1.1";
    }
    gw->vhost = lws_create_vhost(gw->lws, &info);
    if (!gw->vhost) {
        if (gw->tls)
            slog_error("server: TLS: the certificate %s or the key %s could not be loaded (not "
                       "PEM, or the key does not match the certificate)",
                       gw->cfg.tls_cert, gw->cfg.tls_key);
        else
            slog_error("server: libwebsockets vhost could not be created");
        lws_context_destroy(gw->lws);
        gw->lws = NULL;
        return -1;
    }
    return 0;
}

void server_stop(gw_t *gw)
{
    if (gw->lws) {
        lws_context_destroy(gw->lws);
        gw->lws_dying = gw->lws;
        gw->lws = NULL;
        gw->vhost = NULL;
    }
}

/* With a foreign libuv loop, the first destroy only closes libwebsockets' handles;
   once the loop has run them down, a second call frees the context. */
void server_finish(gw_t *gw)
{
    if (gw->lws_dying) {
        lws_context_destroy(gw->lws_dying);
        gw->lws_dying = NULL;
    }
}
