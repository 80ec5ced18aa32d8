/*  listener.c - accept, peek at the first request head, authenticate upgrades,
    adopt into libwebsockets. See listener.h.

    Peeking (MSG_PEEK) rather than reading leaves the bytes in the socket for
    libwebsockets to read itself; handing it bytes we had read (its "readbuf"
    adoption) makes libwebsockets 4.1 spin on request bodies. A head that has not
    fully arrived is peeked again after a short, growing delay (the socket stays
    readable while the bytes are unread, so polling it would spin); the delay only
    asks the kernel how much is there (FIONREAD), so a head trickled a byte at a
    time is not copied and parsed again for nothing.

    Every first head waits here, whatever its method, until it is whole: a
    connection here costs a descriptor and this small struct, where one inside
    libwebsockets holds a header table (of a pool of 4096) while its head trickles
    in, and libwebsockets lets a trickled head live for minutes. Here each head has
    header_timeout_ms (408), each address address_max_pending unfinished requests
    (429) and the gateway max_pending (503), counting the bodies http.c is reading.
*/
#include "listener.h"
#include "auth_cache.h"
#include "clock.h"
#include "http.h"
#include "http_head.h"
#include "metrics.h"
#include "slog.h"
#include "throttle.h"
#include "validate.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_ACCEPT_MAX 256 /* accepts per wakeup */
#define S_PREAUTH_TTL_MS 10000
#define S_RETRY_FIRST_MS 5
#define S_RETRY_MAX_MS 200

typedef struct s_pre_t s_pre_t;

/* A connection accepted and not yet adopted. */
struct s_pre_t {
    listener_t *owner;
    int fd;
    uv_poll_t poll;
    uv_timer_t timer; /* peek again (partial head) */
    int handles_open; /* poll + timer, until their close callbacks ran */
    int64_t started_ms;
    int retry_ms;
    size_t peeked;     /* bytes seen at the last peek: unchanged, nothing to parse */
    bool hung_up;      /* the client shut its side: a head still partial never ends */
    auth_wait_t *wait; /* upgrade waiting for its token check */
    int64_t after;
    char request_id[VALIDATE_REQUEST_ID_MAX + 1];
    throttle_peer_t *peer; /* its address' connection count, handed on to libwebsockets */
    bool done;             /* adopted or refused; handles closing */
    s_pre_t *prev, *next;
};

struct listener_t {
    gw_t *gw;
    int fd;
    uv_poll_t poll;
    uv_timer_t pause; /* accepting paused: out of file descriptors */
    bool listening;
    bool paused;
    int64_t emfile_logged_ms;
    char *peek;    /* scratch for peeked heads, max_header_bytes */
    s_pre_t *pres; /* accepted, not adopted */
    size_t npres;
    zhashx_t *preauths; /* "fd" -> preauth_t (owned) */
};

static void s_free_preauth(void **item_p)
{
    preauth_t *pa = *item_p;
    if (pa && pa->token) {
        sodium_memzero(pa->token, strlen(pa->token));
        free(pa->token);
    }
    free(pa);
    *item_p = NULL;
}

static void s_fd_key(char key[16], int fd)
{
    snprintf(key, 16, "%d", fd);
}

/* ---- ending a pre-connection ------------------------------------------------- */

static void s_handle_closed(uv_handle_t *handle)
{
    s_pre_t *pre = handle->data;
    if (--pre->handles_open == 0)
        free(pre);
}

/* Unlinks pre and closes its handles; the fd and pre->peer are the caller's
   business. Its head is no longer waited for: one unfinished request less. */
static void s_pre_end(s_pre_t *pre)
{
    listener_t *self = pre->owner;
    pre->done = true;
    throttle_pending_end(self->gw->throttle, pre->peer);
    auth_cache_cancel(self->gw->auth, &pre->wait);
    if (pre->prev)
        pre->prev->next = pre->next;
    else
        self->pres = pre->next;
    if (pre->next)
        pre->next->prev = pre->prev;
    self->npres--;
    uv_poll_stop(&pre->poll);
    uv_timer_stop(&pre->timer);
    uv_close((uv_handle_t *)&pre->poll, s_handle_closed);
    uv_close((uv_handle_t *)&pre->timer, s_handle_closed);
}

/* Answers with an error on the raw socket and closes it. The unread request is
   read away first, so the close does not turn into a reset that could destroy
   the answer before the client reads it. */
static void s_refuse_fd(gw_t *gw, int fd, int status, const char *code, const char *message,
                        const char *request_id, int retry_after_s)
{
    char reason[32];
    snprintf(reason, sizeof reason, "http_refused_%d", status);
    metrics_count(gw->metrics, reason);
    if (gw->tls && status != 400) {
        /* a TLS client would read a plain-text answer as a broken handshake
           anyway: just close (the 400 is for plain HTTP sent to this port) */
        close(fd);
        return;
    }
    char discard[4096];
    for (int i = 0; i < 16 && recv(fd, discard, sizeof discard, MSG_DONTWAIT) > 0; i++)
        ;
    char buf[1024];
    char rid[40];
    if (!request_id || !*request_id) {
        http_new_request_id(gw, rid);
        request_id = rid;
    }
    size_t n = http_format_error(buf, sizeof buf, status, code, message, request_id, retry_after_s);
    if (send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        slog_debug("listener: refusal not sent: %s", strerror(errno));
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* Ends pre and closes its socket (the peer went away, or we give up on it). */
static void s_close(s_pre_t *pre)
{
    gw_t *gw = pre->owner->gw;
    int fd = pre->fd;
    s_pre_end(pre);
    throttle_disconnect(gw->throttle, &pre->peer);
    close(fd);
}

static void s_refuse_after(s_pre_t *pre, int status, const char *code, const char *message,
                           int retry_after_s)
{
    gw_t *gw = pre->owner->gw;
    int fd = pre->fd;
    const char *rid = pre->request_id;
    char copy[sizeof pre->request_id];
    memcpy(copy, rid, sizeof copy);
    s_pre_end(pre);
    throttle_disconnect(gw->throttle, &pre->peer);
    s_refuse_fd(gw, fd, status, code, message, copy, retry_after_s);
}

static void s_refuse(s_pre_t *pre, int status, const char *code, const char *message)
{
    s_refuse_after(pre, status, code, message,
                   status == 503 ? pre->owner->gw->cfg.retry_after_s : 0);
}

/* Hands fd to libwebsockets (which does its TLS when the port has it). peer goes
   with the connection and is let go when libwebsockets destroys it (server.c). */
static void s_adopt_fd(gw_t *gw, int fd, throttle_peer_t *peer)
{
    struct lws *wsi = lws_adopt_socket_vhost(gw->vhost, fd);
    if (!wsi) {
        /* over TLS this is the client's doing: its handshake failed at once */
        if (gw->tls) {
            metrics_count(gw->metrics, "tls_handshake_failed");
            slog_debug("listener: TLS handshake failed");
        } else {
            slog_warn("listener: libwebsockets refused a connection");
        }
        throttle_disconnect(gw->throttle, &peer);
        return;
    }
    lws_set_opaque_user_data(wsi, peer);
}

static void s_adopt(s_pre_t *pre)
{
    gw_t *gw = pre->owner->gw;
    int fd = pre->fd;
    throttle_peer_t *peer = pre->peer;
    s_pre_end(pre);
    pre->peer = NULL;
    /* our poll on fd is stopped, so libwebsockets' own can take its place */
    s_adopt_fd(gw, fd, peer);
}

/* ---- the head --------------------------------------------------------------- */

static void s_on_auth(void *arg, const auth_answer_t *a)
{
    s_pre_t *pre = arg;
    pre->wait = NULL;
    if (a->result == AUTH_OK) {
        preauth_t pa = {a->user_id, a->device_id, pre->after, clock_now_ms() + S_PREAUTH_TTL_MS,
                        NULL};
        listener_put_preauth(pre->owner, pre->fd, &pa);
        s_adopt(pre);
    } else if (a->result == AUTH_DENIED) {
        s_refuse(pre, 401, "unauthorized", "the token is unknown or was revoked");
    } else {
        s_refuse(pre, a->status, a->code, a->message);
    }
}

static bool s_is_notify_path(const char *path)
{
    return strcmp(path, "/v1/sync/notify") == 0 || strcmp(path, "/sync/notify") == 0;
}

/* A complete head that asks for the notify WebSocket: check the token first. */
static void s_upgrade(s_pre_t *pre, http_head_t *head)
{
    listener_t *self = pre->owner;
    gw_t *gw = self->gw;
    int wait = throttle_request(gw->throttle, pre->peer);
    if (wait) {
        s_refuse_after(pre, 429, "rate_limited", "too many requests from your address; slow down",
                       wait);
        return;
    }
    gw_err_t err;
    const char *token = NULL;
    size_t token_len = 0;
    if (validate_notify_query(head->args, head->nargs, &token, &token_len, &pre->after, &err) !=
        0) {
        s_refuse(pre, err.status, err.code, err.message);
        return;
    }
    if (head->authorization[0] && !validate_bearer(head->authorization, &token, &token_len)) {
        s_refuse(pre, 401, "unauthorized", "the Authorization header is not a valid Bearer token");
        return;
    }
    if (!token) {
        s_refuse(pre, 401, "unauthorized", "a token is needed: ?token= or Authorization: Bearer");
        return;
    }
    if (!validate_token(token, token_len)) {
        s_refuse(pre, 401, "unauthorized", "the token is malformed");
        return;
    }
    wait = throttle_token(gw->throttle, token, token_len);
    if (wait) {
        s_refuse_after(pre, 429, "rate_limited", "too many requests with this token; slow down",
                       wait);
        return;
    }
    if (gw->stopping) {
        s_refuse(pre, 503, "unavailable", "this gateway is shutting down; try again");
        return;
    }
    int64_t user = 0, device = 0;
    auth_result_t r = auth_cache_lookup(gw->auth, token, token_len, &user, &device);
    if (r == AUTH_OK) {
        preauth_t pa = {user, device, pre->after, clock_now_ms() + S_PREAUTH_TTL_MS, NULL};
        listener_put_preauth(self, pre->fd, &pa);
        s_adopt(pre);
    } else if (r == AUTH_DENIED) {
        s_refuse(pre, 401, "unauthorized", "the token is unknown or was revoked");
    } else {
        uv_poll_stop(&pre->poll); /* nothing to read until the answer */
        pre->wait = auth_cache_verify(gw->auth, token, token_len, AUTH_FOR_SOCKET, s_on_auth, pre);
        if (!pre->wait)
            s_refuse(pre, 503, "unavailable", "no broker is reachable; try again");
    }
}

static void s_peek(s_pre_t *pre);
static void s_on_retry(uv_timer_t *timer);

/* Looks again later, each time a little later, up to S_RETRY_MAX_MS. */
static void s_retry_later(s_pre_t *pre)
{
    pre->retry_ms = pre->retry_ms ? pre->retry_ms * 2 : S_RETRY_FIRST_MS;
    if (pre->retry_ms > S_RETRY_MAX_MS)
        pre->retry_ms = S_RETRY_MAX_MS;
    uv_timer_start(&pre->timer, s_on_retry, (uint64_t)pre->retry_ms, 0);
}

static void s_on_retry(uv_timer_t *timer)
{
    s_pre_t *pre = timer->data;
    int avail = 0;
    if (ioctl(pre->fd, FIONREAD, &avail) == 0 && avail >= 0 && (size_t)avail == pre->peeked) {
        s_retry_later(pre); /* nothing new: the deadline (listener_janitor) decides */
        return;
    }
    s_peek(pre);
}

static void s_on_readable(uv_poll_t *poll, int status, int events)
{
    s_pre_t *pre = poll->data;
    if (status < 0) {
        s_close(pre);
        return;
    }
    if (events & UV_DISCONNECT)
        pre->hung_up = true;
    s_peek(pre);
}

static void s_peek(s_pre_t *pre)
{
    listener_t *self = pre->owner;
    size_t max = self->gw->cfg.max_header_bytes;
    ssize_t n = recv(pre->fd, self->peek, max, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        s_close(pre);
        return;
    }
    if (n < 0)
        return; /* spurious wakeup */
    if (self->gw->tls) {
        /* Encrypted: nothing to peek at. A TLS handshake starts with a handshake
           record (0x16); anything else is most likely plain HTTP sent to the
           HTTPS port, which gets a plain answer that says so. */
        if ((unsigned char)self->peek[0] == 0x16)
            s_adopt(pre);
        else
            s_refuse(pre, 400, "bad_request", "this port speaks HTTPS: use https:// or wss://");
        return;
    }
    pre->peeked = (size_t)n;
    if (!http_head_plausible(self->peek, (size_t)n)) {
        s_refuse(pre, 400, "bad_request", "this is not an HTTP/1.1 request");
        return;
    }
    http_head_t head;
    http_head_result_t r = http_head_parse(self->peek, (size_t)n, &head);
    if (r == HTTP_HEAD_INCOMPLETE) {
        if ((size_t)n >= max) {
            s_refuse(pre, 431, "headers_too_large",
                     "the request head is larger than max_header_bytes");
            return;
        }
        if (pre->hung_up) { /* gone: it does not hold a place until its deadline */
            s_close(pre);
            return;
        }
        /* The rest is on its way: look again soon, without spinning on the poll,
           which now only watches for the client going away. */
        uv_poll_start(&pre->poll, UV_DISCONNECT, s_on_readable);
        s_retry_later(pre);
        return;
    }
    if (r == HTTP_HEAD_MALFORMED) {
        s_refuse(pre, 400, "bad_request", "malformed HTTP request head");
        return;
    }
    if (r == HTTP_HEAD_BAD_ESCAPE) {
        s_refuse(pre, 400, "bad_request",
                 "the path or query has a malformed %-escape or an escaped NUL (%00)");
        return;
    }
    if (r == HTTP_HEAD_TOO_BIG || !head.upgrade_websocket || !s_is_notify_path(head.path)) {
        s_adopt(pre); /* libwebsockets parses it itself and routes it */
        return;
    }
    size_t id_len = strlen(head.request_id);
    if (validate_request_id(head.request_id, id_len)) /* also bounds id_len */
        memcpy(pre->request_id, head.request_id, id_len + 1);
    s_upgrade(pre, &head);
}

/* ---- accepting --------------------------------------------------------------- */

#define S_PAUSE_MS 100

static void s_on_accept(uv_poll_t *poll, int status, int events);

static void s_resume(uv_timer_t *timer)
{
    listener_t *self = timer->data;
    self->paused = false;
    if (self->listening)
        uv_poll_start(&self->poll, UV_READABLE, s_on_accept);
}

static void s_pause(listener_t *self, int err)
{
    if (self->paused)
        return;
    self->paused = true;
    uv_poll_stop(&self->poll);
    uv_timer_start(&self->pause, s_resume, S_PAUSE_MS, 0);
    metrics_count(self->gw->metrics, "accept_paused");
    int64_t now = clock_now_ms();
    if (now - self->emfile_logged_ms >= 10000) { /* once per episode, not per attempt */
        self->emfile_logged_ms = now;
        slog_warn("listener: accept: %s: accepting paused %d ms at a time (raise ulimit -n or "
                  "lower max_connections)",
                  strerror(err), S_PAUSE_MS);
    }
}

static void s_on_accept(uv_poll_t *poll, int status, int events)
{
    (void)status;
    (void)events;
    listener_t *self = poll->data;
    gw_t *gw = self->gw;
    for (int i = 0; i < S_ACCEPT_MAX; i++) {
        int fd = accept4(self->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays in the backlog and the socket stays
                   readable: polling on would spin. Pause, and try again shortly. */
                s_pause(self, errno);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                slog_warn("listener: accept: %s", strerror(errno));
            }
            return;
        }
        /* A preauth left for this descriptor number by a closed connection (an
           upgrade that failed after its token was checked) is not this one's. */
        char key[16];
        s_fd_key(key, fd);
        zhashx_delete(self->preauths, key);
        if (gw->stopping) {
            s_refuse_fd(gw, fd, 503, "unavailable", "this gateway is shutting down; try again",
                        NULL, gw->cfg.retry_after_s);
            continue;
        }
        if (gw->connections + self->npres >= gw->cfg.max_connections) {
            s_refuse_fd(gw, fd, 503, "unavailable", "too many connections; try again", NULL,
                        gw->cfg.retry_after_s);
            continue;
        }
        if (self->npres + gw->bodies_pending >= gw->cfg.max_pending) {
            metrics_count(gw->metrics, "refused_max_pending");
            s_refuse_fd(gw, fd, 503, "unavailable",
                        "too many unfinished requests on this gateway (max_pending); try again",
                        NULL, gw->cfg.retry_after_s);
            continue;
        }
        throttle_admit_t refused = THROTTLE_ADMITTED;
        throttle_peer_t *peer = throttle_connect(gw->throttle, fd, &refused);
        if (refused != THROTTLE_ADMITTED) {
            s_refuse_fd(gw, fd, 429, "rate_limited",
                        refused == THROTTLE_PENDING
                            ? "too many unfinished requests from your address "
                              "(address_max_pending); finish them first"
                            : "too many connections from your address (address_max_connections)",
                        NULL, gw->cfg.retry_after_s);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s_pre_t *pre = calloc(1, sizeof *pre);
        pre->owner = self;
        pre->fd = fd;
        pre->started_ms = clock_now_ms();
        pre->after = -1;
        pre->peer = peer;
        if (uv_poll_init(gw->loop, &pre->poll, fd) != 0) {
            slog_warn("listener: cannot poll a new connection");
            throttle_pending_end(gw->throttle, pre->peer);
            throttle_disconnect(gw->throttle, &pre->peer);
            close(fd);
            free(pre);
            continue;
        }
        uv_timer_init(gw->loop, &pre->timer);
        pre->poll.data = pre;
        pre->timer.data = pre;
        pre->handles_open = 2;
        pre->next = self->pres;
        if (self->pres)
            self->pres->prev = pre;
        self->pres = pre;
        self->npres++;
        uv_poll_start(&pre->poll, UV_READABLE, s_on_readable);
    }
}

listener_t *listener_new(gw_t *gw)
{
    const gw_config_t *cfg = &gw->cfg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    int family;
    if (inet_pton(AF_INET, cfg->host, &v4->sin_addr) == 1) {
        family = AF_INET;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
        addr_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, cfg->host, &v6->sin6_addr) == 1) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        addr_len = sizeof *v6;
    } else {
        slog_error("listener: host '%s' is not an IPv4 or IPv6 address", cfg->host);
        return NULL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        slog_error("listener: socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* several gateways on one port: the kernel spreads new connections among them */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        slog_warn("listener: SO_REUSEPORT: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0 || listen(fd, cfg->backlog) != 0) {
        slog_error("listener: cannot listen on %s:%d: %s", cfg->host, cfg->port, strerror(errno));
        close(fd);
        return NULL;
    }
    listener_t *self = calloc(1, sizeof *self);
    self->gw = gw;
    self->fd = fd;
    self->peek = malloc(cfg->max_header_bytes);
    self->preauths = zhashx_new();
    zhashx_set_destructor(self->preauths, s_free_preauth);
    uv_poll_init(gw->loop, &self->poll, fd);
    self->poll.data = self;
    uv_poll_start(&self->poll, UV_READABLE, s_on_accept);
    uv_timer_init(gw->loop, &self->pause);
    self->pause.data = self;
    self->listening = true;
    return self;
}

static void s_listen_closed(uv_handle_t *handle)
{
    listener_t *self = handle->data;
    close(self->fd);
    self->fd = -1;
}

void listener_stop(listener_t *self)
{
    if (!self->listening)
        return;
    self->listening = false;
    uv_poll_stop(&self->poll);
    uv_close((uv_handle_t *)&self->poll, s_listen_closed);
    uv_timer_stop(&self->pause);
    uv_close((uv_handle_t *)&self->pause, NULL);
    while (self->pres)
        s_close(self->pres);
}

void listener_destroy(listener_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    listener_t *self = *self_p;
    listener_stop(self);
    zhashx_destroy(&self->preauths);
    free(self->peek);
    free(self); /* the close callback of the listening poll has run: see main.c */
    *self_p = NULL;
}

bool listener_peek_preauth(listener_t *self, int fd, preauth_t *out)
{
    char key[16];
    s_fd_key(key, fd);
    preauth_t *pa = zhashx_lookup(self->preauths, key);
    if (!pa || pa->expires_ms <= clock_now_ms())
        return false;
    *out = *pa;
    return true;
}

bool listener_take_preauth(listener_t *self, int fd, preauth_t *out)
{
    bool found = listener_peek_preauth(self, fd, out);
    char key[16];
    s_fd_key(key, fd);
    preauth_t *pa = zhashx_lookup(self->preauths, key);
    if (pa && found)
        pa->token = NULL; /* now the caller's */
    zhashx_delete(self->preauths, key);
    return found;
}

void listener_put_preauth(listener_t *self, int fd, const preauth_t *pa)
{
    char key[16];
    s_fd_key(key, fd);
    preauth_t *copy = malloc(sizeof *copy);
    *copy = *pa;
    zhashx_update(self->preauths, key, copy);
}

void listener_revoke_device(listener_t *self, int64_t device_id)
{
    for (preauth_t *pa = zhashx_first(self->preauths); pa; pa = zhashx_next(self->preauths))
        if (pa->device_id == device_id)
            pa->expires_ms = 0; /* found but expired: refused, then dropped */
}

void listener_janitor(listener_t *self, int64_t now_ms)
{
    int64_t limit = self->gw->cfg.header_timeout_ms;
    for (s_pre_t *pre = self->pres, *next; pre; pre = next) {
        next = pre->next;
        if (!pre->wait && now_ms - pre->started_ms > limit) {
            char message[96];
            snprintf(message, sizeof message,
                     "the request head did not arrive within header_timeout_ms (%" PRId64 " ms)",
                     limit);
            metrics_count(self->gw->metrics, "request_timeout_head");
            s_refuse(pre, 408, "request_timeout", message);
        }
    }
    zlist_t *stale = NULL;
    for (preauth_t *pa = zhashx_first(self->preauths); pa; pa = zhashx_next(self->preauths)) {
        if (pa->expires_ms <= now_ms) {
            if (!stale) {
                stale = zlist_new();
                zlist_autofree(stale);
            }
            zlist_append(stale, (void *)zhashx_cursor(self->preauths));
        }
    }
    if (stale) {
        for (char *key = zlist_first(stale); key; key = zlist_next(stale))
            zhashx_delete(self->preauths, key);
        zlist_destroy(&stale);
    }
}

size_t listener_pending(const listener_t *self)
{
    return self->npres;
}
