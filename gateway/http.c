/*  http.c - the HTTP request actor. See http.h.

    Order of checks, so each client mistake gets the most useful answer:
    route (404/405) -> size (413/411) -> no token at all (401, before the body is
    read) -> body -> token (401) -> inputs (400/413) -> worker.
    A response is written from HTTP_WRITEABLE only: headers first, then the body in
    chunks of S_CHUNK bytes, each when the socket can take more.

    A body has a deadline: body_timeout_ms from its head, plus a second for every
    body_min_rate bytes that arrived, so a large body on a slow link gets through
    while one trickled a byte at a time, or announced and never sent, gets 408 (the
    janitor checks, so no byte resets it). While it arrives the request counts as
    unfinished, with the heads the listener waits for (max_pending,
    address_max_pending). An answer given before the whole body was read (404,
    401, 413, 408, ...) closes the connection: what is left of the body must not
    be read as the next request, nor the connection held waiting for it.

    A chat answer ("stream": true) is the one response written while it is still
    being made: each PARTIAL of chat.generate becomes a Server-Sent Event appended
    to a small buffer that holds only what the socket has not taken yet. The
    200 text/event-stream head goes out with the first event (`message`, sent once
    the worker committed the rows), so everything that fails before that (no chat
    worker, a missing conversation, a refused body) is still an ordinary JSON error
    with its own status. After the head, the end is an event: `done`, or `error`
    with api.md's error body. The connection is then closed (Connection: close:
    the body has no length). See docs/api.md, "Chat".

    What a stream holds for its client is bounded like a WebSocket's queue: past
    sse_queue_max_bytes not taken, when the gateway's outbound budget picks it, or
    after write_progress_timeout_s without progress (outbound.h), the answer is
    cancelled (the worker stores it "cancelled") and the connection closed.
*/
#include "http.h"
#include "auth_cache.h"
#include "clock.h"
#include "health.h"
#include "login_throttle.h"
#include "metrics.h"
#include "mp.h"
#include "outbound.h"
#include "render.h"
#include "server.h"
#include "slog.h"
#include "static_files.h"
#include "throttle.h"
#include "upstream.h"
#include "validate.h"
#include "username.h"

#include <inttypes.h>
#include <libwebsockets.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>

#define S_CHUNK (32 * 1024)
#define S_ARGS_MAX 32
#define S_HEADERS_MAX 2048

struct http_req_t {
    gw_t *gw;
    struct lws *wsi;      /* NULL once the connection closed */
    const route_t *route; /* NULL for 404/405 */
    route_id_t metric_route;
    int64_t started_us;
    char request_id[VALIDATE_REQUEST_ID_MAX + 1];
    char param[ROUTE_PARAM_MAX];
    char *args_buf; /* query fragments, NUL-separated */
    const char *args[S_ARGS_MAX];
    size_t nargs;
    char *idem;          /* Idempotency-Key, NULL when absent */
    char *authorization; /* Authorization header, NULL when absent */
    uint8_t *body;
    size_t body_len;
    size_t content_length;
    int64_t user_id;
    int64_t device_id;
    upstream_call_t *call;
    login_attempt_t login; /* POST /v1/sessions: what it took from the failed-login limits */
    auth_wait_t *auth_wait;
    health_call_t *health;
    bool started;     /* s_start ran (lws may also report an empty body done) */
    bool body_unread; /* a body was announced and is not all read: an answer closes */
    bool body_timed;  /* on gw->bodies: its body is arriving, under a deadline */
    int64_t body_started_ms;
    throttle_peer_t *peer;             /* its address: the unfinished count of the body */
    http_req_t *body_prev, *body_next; /* gw->bodies while body_timed */
    /* the response */
    bool answered;
    int status;
    const char *content_type;
    char *resp; /* body, malloc'd unless resp_static */
    bool resp_static;
    size_t resp_len;
    size_t resp_off;
    bool headers_sent;
    bool close;        /* Connection: close, then hang up */
    int retry_after_s; /* > 0: Retry-After */
    bool www_authenticate;
    bool health_brief; /* /health without the operator token: the status only */
    char allow[48];
    /* chat.generate: PARTIALs, then the REPLY */
    bool chat;               /* a chat answer: CANCEL it when the client goes away */
    bool sse;                /* "stream": true: answer with Server-Sent Events */
    bool sse_open;           /* the event-stream head is queued: the end is an event now */
    bool sse_done;           /* the last event (done/error) is queued: hang up once written */
    char *out;               /* SSE text the socket has not taken yet */
    size_t out_off;          /* written up to here */
    size_t out_len;          /* filled up to here */
    size_t out_cap;          /* allocated */
    int64_t last_event_ms;   /* when text was last queued: keep-alive comments */
    bool write_asked;        /* a writable callback is already asked for */
    bool sse_cut;            /* cancelled for not reading: nothing more is queued */
    outbound_conn_t oc;      /* out_len - out_off, in the gateway's budget */
    http_req_t *prev, *next; /* gw->streams while sse_open */
};

void http_new_request_id(gw_t *gw, char out[40])
{
    /* a random prefix per process, then a counter: unique here, unlikely to repeat
       across gateways */
    if (!gw->request_prefix)
        gw->request_prefix = randombytes_random() | 1;
    snprintf(out, 40, "%08" PRIx32 "%012" PRIx64, gw->request_prefix, ++gw->request_counter);
}

size_t http_format_error(char *buf, size_t size, int status, const char *code, const char *message,
                         const char *request_id, int retry_after_s)
{
    size_t blen = 0;
    char *body = render_error(code, message, &blen);
    char retry[48] = "";
    if (retry_after_s > 0)
        snprintf(retry, sizeof retry, "Retry-After: %d\r\n", retry_after_s);
    const char *reason = status == 400   ? "Bad Request"
                         : status == 401 ? "Unauthorized"
                         : status == 404 ? "Not Found"
                         : status == 408 ? "Request Timeout"
                         : status == 413 ? "Payload Too Large"
                         : status == 429 ? "Too Many Requests"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    int n = snprintf(buf, size,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "X-Request-Id: %s\r\n"
                     "%s%s"
                     "Cache-Control: no-store\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, reason, blen, request_id, retry,
                     status == 401 ? "WWW-Authenticate: Bearer\r\n" : "", body ? body : "");
    free(body);
    if (n < 0)
        return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

static void s_stream_unlink(http_req_t *req)
{
    gw_t *gw = req->gw;
    if (req->prev)
        req->prev->next = req->next;
    else if (gw->streams == req)
        gw->streams = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    gw->streams_open--;
}

/* The body starts arriving: its deadline runs, and it counts as unfinished. */
static void s_body_begin(http_req_t *req)
{
    gw_t *gw = req->gw;
    req->body_timed = true;
    req->body_started_ms = clock_now_ms();
    req->peer = req->wsi ? lws_get_opaque_user_data(req->wsi) : NULL;
    throttle_pending_begin(gw->throttle, req->peer);
    req->body_next = gw->bodies;
    if (gw->bodies)
        gw->bodies->body_prev = req;
    gw->bodies = req;
    gw->bodies_pending++;
}

/* The body arrived, or the request was answered or closed first. */
static void s_body_end(http_req_t *req)
{
    gw_t *gw = req->gw;
    if (!req->body_timed)
        return;
    req->body_timed = false;
    throttle_pending_end(gw->throttle, req->peer);
    req->peer = NULL;
    if (req->body_prev)
        req->body_prev->body_next = req->body_next;
    else
        gw->bodies = req->body_next;
    if (req->body_next)
        req->body_next->body_prev = req->body_prev;
    req->body_prev = req->body_next = NULL;
    gw->bodies_pending--;
}

static void s_free(http_req_t *req)
{
    gw_t *gw = req->gw;
    s_body_end(req);
    /* A chat answer still running when its client is gone is cancelled, so the
       worker stops and stores "cancelled" with the text so far. Not when the
       gateway itself closes the connection at the end of a drain: then the answer
       goes on and is stored complete, for the client to read back. */
    if (req->call && req->chat && !gw->closing) {
        metrics_count(gw->metrics, "chat_cancelled_client_gone");
        slog_write(SLOG_DEBUG, (const uint8_t *)req->request_id, strlen(req->request_id),
                   "chat: the client went away: cancelling the answer");
    }
    upstream_cancel(gw->upstream, &req->call, req->chat && !gw->closing);
    /* a login whose client left before its answer counts as failed: leaving early
       must not be a way around the limit */
    login_throttle_end(gw->logins, &req->login, 0, clock_now_ms());
    if (req->sse_open)
        s_stream_unlink(req);
    outbound_detach(&req->oc);
    free(req->out);
    auth_cache_cancel(gw->auth, &req->auth_wait);
    health_cancel(gw, &req->health);
    if (!req->resp_static)
        free(req->resp);
    free(req->args_buf);
    free(req->idem);
    free(req->authorization);
    free(req->body);
    free(req);
}

static bool s_write_now(http_req_t *req);

/* Sets the response and writes it, or asks to. body: malloc'd (owned from here)
   unless is_static. Counted in metrics here, once per request. req may be freed
   on return. */
static void s_respond(http_req_t *req, int status, const char *content_type, char *body, size_t len,
                      bool is_static)
{
    if (req->answered) { /* our own bug; keep the first answer */
        if (!is_static)
            free(body);
        return;
    }
    req->answered = true;
    if (req->body_unread)
        req->close = true; /* the rest of the body is not read: it cannot be a request */
    s_body_end(req);
    req->status = status;
    req->content_type = content_type;
    req->resp = body;
    req->resp_len = len;
    req->resp_static = is_static;
    if (status == 503 && req->retry_after_s == 0)
        req->retry_after_s = req->gw->cfg.retry_after_s;
    metrics_request(req->gw->metrics, req->metric_route, status, clock_now_us() - req->started_us);
    if (slog_enabled(SLOG_DEBUG))
        slog_write(SLOG_DEBUG, (const uint8_t *)req->request_id, strlen(req->request_id),
                   "%s -> %d", routes_label(req->metric_route), status);
    if (req->wsi && !s_write_now(req))
        lws_callback_on_writable(req->wsi);
}

static void s_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char message[VALIDATE_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    size_t len = 0;
    char *body = render_error(code, message, &len);
    s_respond(req, status, "application/json", body, len, false);
}

/* ---- the worker's answer ---------------------------------------------------- */

typedef struct {
    char code[64];
    char message[VALIDATE_MESSAGE_MAX];
} s_error_text_t;

/* The code and message of a reply's "error" map, with defaults for what is
   missing or unusable. Returns false when the body has no "error". */
static bool s_error_of(const msgpack_object *body, int status, s_error_text_t *out)
{
    const msgpack_object *error = mp_get(body, "error");
    if (!error)
        return false;
    const char *code = NULL, *message = NULL;
    size_t clen = 0, mlen = 0;
    if (mp_get_str(error, "code", &code, &clen) && clen > 0 && clen < sizeof out->code) {
        memcpy(out->code, code, clen);
        out->code[clen] = 0;
    } else {
        snprintf(out->code, sizeof out->code, "%s",
                 status == 503   ? "unavailable"
                 : status == 504 ? "timeout"
                                 : "internal");
    }
    if (mp_get_str(error, "message", &message, &mlen) && mlen > 0) {
        if (mlen >= sizeof out->message)
            mlen = sizeof out->message - 1;
        memcpy(out->message, message, mlen);
        out->message[mlen] = 0;
    } else {
        snprintf(out->message, sizeof out->message, "error");
    }
    return true;
}

/* A final reply as an ordinary JSON response; success_status replaces a 2xx
   (chat.generate's 200 is api.md's 201). */
static void s_answer(http_req_t *req, int status, const msgpack_object *body, int success_status)
{
    if (status < 200 || status > 599) {
        s_error(req, 502, "internal", "the worker answered status %d", status);
        return;
    }
    if (status == 204) {
        if (req->route->id == ROUTE_DEVICE_DELETE) {
            int64_t device = 0;
            if (validate_id(req->param, strlen(req->param), &device))
                gw_device_revoked(req->gw, req->user_id, device);
        }
        s_respond(req, 204, NULL, NULL, 0, true);
        return;
    }
    s_error_text_t e;
    if (s_error_of(body, status, &e)) {
        size_t len = 0;
        char *text = render_error(e.code, e.message, &len);
        s_respond(req, status, "application/json", text, len, false);
        return;
    }
    const msgpack_object *data = mp_get(body, "data");
    size_t len = 2;
    char *text = data ? render_text(data, &len) : strdup("{}");
    if (!text) {
        slog_write(SLOG_ERROR, (const uint8_t *)req->request_id, strlen(req->request_id),
                   "reply of %s could not be rendered as JSON", req->route->op);
        s_error(req, 502, "internal", "the worker's answer could not be rendered");
        return;
    }
    s_respond(req, status < 300 && success_status ? success_status : status, "application/json",
              text, len, false);
}

static void s_on_reply(void *arg, bool final, int status, const msgpack_object *body)
{
    http_req_t *req = arg;
    if (!final)
        return; /* only chat.generate streams; it has its own callback */
    req->call = NULL;
    login_throttle_end(req->gw->logins, &req->login, status, clock_now_ms());
    s_answer(req, status, body, 0);
}

/*  POST /v1/sessions, valid so far (packed holds the op): the failed-login limits
    (login_throttle.h). Returns 0 to go on to the worker; otherwise the request
    was answered here: 429 naming the limit hit, or 401 for a username no account
    can have (the same answer a worker gives, without costing it a hash). */
static int s_login_check(http_req_t *req, const msgpack_sbuffer *packed)
{
    gw_t *gw = req->gw;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    const char *name = NULL;
    size_t len = 0;
    if (msgpack_unpack_next(&u, packed->data, packed->size, NULL) == MSGPACK_UNPACK_SUCCESS)
        mp_get_str(mp_get(&u.data, "args"), "username", &name, &len);
    bool possible = username_ok(name, len);
    char address[RATELIMIT_KEY_MAX + 1] = "";
    if (req->wsi && !throttle_address_key(lws_get_socket_fd(req->wsi), address, sizeof address))
        address[0] = 0;
    const char *limit = NULL;
    int wait = login_throttle_begin(gw->logins, possible ? name : NULL, len, address,
                                    clock_now_ms(), &req->login, &limit);
    msgpack_unpacked_destroy(&u);
    if (wait) {
        bool by_name = strcmp(limit, "login_fail_username_max") == 0;
        metrics_count(gw->metrics,
                      by_name ? "rate_limited_login_username" : "rate_limited_login_address");
        req->retry_after_s = wait;
        s_error(req, 429, "rate_limited",
                "too many failed logins %s (%s = %d in %d s); retry in %d s",
                by_name ? "for this username" : "from your address", limit,
                by_name ? gw->cfg.login_fail_username_max : gw->cfg.login_fail_address_max,
                gw->cfg.login_fail_window_s, wait);
        return -1;
    }
    if (!possible) {
        login_throttle_end(gw->logins, &req->login, 401, clock_now_ms());
        s_error(req, 401, "unauthorized", "invalid username or password");
        return -1;
    }
    return 0;
}

/* ---- chat answers: Server-Sent Events -------------------------------------- */

/* Asks libwebsockets for a writable callback, once until it came: every ask
   is a poll change (a system call), and a fast answer queues many events per
   callback. */
static void s_sse_ask_write(http_req_t *req)
{
    if (req->write_asked || !req->wsi)
        return;
    req->write_asked = true;
    lws_callback_on_writable(req->wsi);
}

/* The client does not take its answer (why: the metric): the answer is cancelled,
   so the worker stops and stores it "cancelled", what is queued is dropped and the
   connection closed. A client that reads slowly gets a cut stream without its
   end event: it reads the stored message back. */
static void s_sse_cut(http_req_t *req, const char *why)
{
    slog_write(SLOG_WARN, (const uint8_t *)req->request_id, strlen(req->request_id),
               "chat: the client does not read its stream (%zu bytes unread, %s): cancelling "
               "the answer",
               req->out_len - req->out_off, why);
    metrics_count(req->gw->metrics, why);
    upstream_cancel(req->gw->upstream, &req->call, true);
    req->sse_done = true;
    req->sse_cut = true;
    free(req->out);
    req->out = NULL;
    req->out_cap = req->out_off = req->out_len = 0;
    outbound_set(&req->oc, 0);
    if (req->wsi)
        lws_set_timeout(req->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* The outbound budget or the write-progress timeout chose this stream. */
static void s_sse_shed(outbound_conn_t *oc, outbound_why_t why)
{
    http_req_t *req = (http_req_t *)((char *)oc - offsetof(http_req_t, oc));
    s_sse_cut(req, why == OUTBOUND_BUDGET ? "sse_over_budget" : "sse_write_timeout");
}

/* Queues text for the client; s_sse_event asks to write it. */
static void s_sse_queue(http_req_t *req, const char *text, size_t len)
{
    size_t unread = req->out_len - req->out_off;
    if (req->sse_cut)
        return;
    if (unread > 0 && unread + len > req->gw->cfg.sse_queue_max_bytes) {
        s_sse_cut(req, "sse_client_not_reading"); /* sse_queue_max_bytes */
        return;
    }
    if (!outbound_reserve(&req->oc, len)) {
        s_sse_cut(req, "sse_over_budget");
        return;
    }
    if (req->out_off == req->out_len)
        req->out_off = req->out_len = 0;
    if (req->out_len + len > req->out_cap && req->out_off > 0 && req->out_off >= req->out_cap / 2) {
        /* what was written makes room; only the unread rest is moved. Only when
           that frees half the buffer: moving for every small append while a slow
           client holds a large backlog would cost the whole backlog each time */
        memmove(req->out, req->out + req->out_off, req->out_len - req->out_off);
        req->out_len -= req->out_off;
        req->out_off = 0;
    }
    if (req->out_len + len > req->out_cap) {
        size_t cap = req->out_cap ? req->out_cap * 2 : 1024;
        while (cap < req->out_len + len)
            cap *= 2;
        req->out = realloc(req->out, cap);
        req->out_cap = cap;
    }
    memcpy(req->out + req->out_len, text, len);
    req->out_len += len;
    req->last_event_ms = clock_now_ms();
    outbound_set(&req->oc, req->out_len - req->out_off);
}

/* One event: "event: NAME\ndata: JSON\n\n". data is stolen; compact JSON has no
   newline, so one data line always carries it. */
static void s_sse_event(http_req_t *req, const char *name, json_t *data)
{
    size_t len = 0;
    char *text = data ? render_dump(data, &len) : NULL;
    if (!text) {
        /* a worker's string that is not UTF-8: say so, in the stream */
        text = render_error("internal", "the worker's answer could not be rendered", &len);
        name = "error";
        req->sse_done = true;
        upstream_cancel(req->gw->upstream, &req->call, true);
    }
    char head[32];
    int n = snprintf(head, sizeof head, "event: %s\ndata: ", name);
    s_sse_queue(req, head, (size_t)n);
    s_sse_queue(req, text, len);
    s_sse_queue(req, "\n\n", 2);
    free(text);
    s_sse_ask_write(req);
}

/* The 200 text/event-stream head is written with the first event. */
static void s_sse_open(http_req_t *req)
{
    gw_t *gw = req->gw;
    req->sse_open = true;
    req->answered = true;
    req->status = 200;
    req->content_type = "text/event-stream";
    req->close = true; /* the body has no length: its end is the connection's */
    req->next = gw->streams;
    if (gw->streams)
        gw->streams->prev = req;
    gw->streams = req;
    gw->streams_open++;
    outbound_attach(gw->outbound, &req->oc, req->wsi ? (int)lws_get_socket_fd(req->wsi) : -1,
                    s_sse_shed);
    /* counted once, when the stream opens: the latency is the time to the first
       event, not the length of the answer */
    metrics_request(gw->metrics, req->metric_route, 200, clock_now_us() - req->started_us);
    /* no lws_http_mark_sse(): it only matters for h2 (and logs an error on
       HTTP/1.1); the connection has had no libwebsockets timeout since its request
       arrived (http_on_request) */
}

/* The stream's last event: done with the stored message, or error. */
static void s_sse_end(http_req_t *req, int status, const msgpack_object *body)
{
    s_error_text_t e;
    const msgpack_object *data = mp_get(body, "data");
    const msgpack_object *message = mp_get(data, "assistant_message");
    if (status >= 200 && status < 300 && message) {
        json_t *m = render_json(message, NULL);
        s_sse_event(req, "done", m ? json_pack("{s:o}", "message", m) : NULL);
    } else {
        if (!s_error_of(body, status, &e)) {
            snprintf(e.code, sizeof e.code, "internal");
            snprintf(e.message, sizeof e.message, "the worker answered status %d without an error",
                     status);
        }
        s_sse_event(req, "error",
                    json_pack("{s:{s:s,s:s}}", "error", "code", e.code, "message", e.message));
    }
    req->sse_done = true;
}

/* A PARTIAL's data ({"event": "message"|"delta", ...}) as that SSE event, the
   "event" key left out. Anything else is not api.md's and is skipped. */
static void s_sse_partial(http_req_t *req, const msgpack_object *body)
{
    const msgpack_object *data = mp_get(body, "data");
    const msgpack_object *event = mp_get(data, "event");
    const char *name = mp_str_eq(event, "message") ? "message"
                       : mp_str_eq(event, "delta") ? "delta"
                                                   : NULL;
    if (!name || data->type != MSGPACK_OBJECT_MAP) {
        slog_write(SLOG_DEBUG, (const uint8_t *)req->request_id, strlen(req->request_id),
                   "chat: a partial that is no event of api.md: skipped");
        return;
    }
    if (!req->sse_open) {
        if (strcmp(name, "message") != 0) {
            /* the worker's first partial is always "message" (docs/chat.md); a delta
               before it would be a broken worker */
            slog_write(SLOG_WARN, (const uint8_t *)req->request_id, strlen(req->request_id),
                       "chat: a delta before the message event: skipped");
            return;
        }
        s_sse_open(req);
    }
    json_t *json = render_json(data, NULL);
    if (json)
        json_object_del(json, "event");
    s_sse_event(req, name, json);
}

static void s_on_chat(void *arg, bool final, int status, const msgpack_object *body)
{
    http_req_t *req = arg;
    if (!final) {
        if (req->sse && !req->sse_done)
            s_sse_partial(req, body);
        return; /* "stream": false waits for the final reply */
    }
    req->call = NULL;
    if (!req->sse) {
        s_answer(req, status, body, 201); /* api.md: 201 {"user_message","assistant_message"} */
        return;
    }
    if (req->sse_done)
        return;
    if (!req->sse_open) {
        if (status < 200 || status >= 300) {
            s_answer(req, status, body, 0); /* nothing was sent: a plain JSON error */
            return;
        }
        /* complete without a single partial (not what the worker does, but the
           client still gets api.md's whole stream) */
        const msgpack_object *data = mp_get(body, "data");
        const msgpack_object *assistant = mp_get(data, "assistant_message");
        const msgpack_object *user = mp_get(data, "user_message");
        const msgpack_object *id = mp_get(assistant, "id");
        json_t *u = user ? render_json(user, NULL) : NULL;
        json_t *i = id ? render_json(id, "id") : NULL;
        s_sse_open(req);
        s_sse_event(req, "message",
                    u && i ? json_pack("{s:o,s:o}", "user_message", u, "assistant_message_id", i)
                           : NULL);
        if (!u || !i) {
            json_decref(u);
            json_decref(i);
        }
        if (req->sse_done)
            return;
    }
    s_sse_end(req, status, body);
}

static bool s_wants_stream(const msgpack_sbuffer *packed)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    bool stream = true;
    if (msgpack_unpack_next(&u, packed->data, packed->size, NULL) == MSGPACK_UNPACK_SUCCESS)
        mp_get_bool(mp_get(&u.data, "args"), "stream", &stream);
    msgpack_unpacked_destroy(&u);
    return stream;
}

/* The request is valid so far and authenticated if it had to be: ask the worker. */
static void s_dispatch(http_req_t *req)
{
    gw_t *gw = req->gw;
    validate_in_t in = {
        .route = req->route,
        .param = req->param,
        .args = req->args,
        .nargs = req->nargs,
        .body = req->body,
        .body_len = req->body_len,
        .idem = req->idem,
        .trace = req->request_id,
        .authed = req->user_id > 0,
        .user_id = req->user_id,
        .device_id = req->device_id,
        .max_item_bytes = gw->cfg.max_item_bytes,
    };
    gw_err_t err;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = validate_request(&in, &buf, &err);
    /* packed or refused: the body (up to max_body_bytes) is not kept for the life
       of a request that may wait minutes for a chat answer */
    free(req->body);
    req->body = NULL;
    req->body_len = 0;
    if (rc != 0) {
        msgpack_sbuffer_destroy(&buf);
        s_error(req, err.status, err.code, "%s", err.message);
        return;
    }
    if (req->route->id == ROUTE_SESSIONS_CREATE && s_login_check(req, &buf) != 0) {
        msgpack_sbuffer_destroy(&buf);
        return;
    }
    upstream_fn *fn = s_on_reply;
    if (req->route->id == ROUTE_MSG_CREATE) {
        req->chat = true;
        req->sse = s_wants_stream(&buf);
        fn = s_on_chat;
        /* Every header is copied: give the header table back to libwebsockets now.
           A chat answer may run for minutes, and libwebsockets closes a connection
           that holds a table longer than timeout_secs_ah_idle + 360 s. */
        if (req->wsi)
            lws_http_headers_detach(req->wsi);
    }
    req->call = upstream_call(gw->upstream, req->route->service, buf.data, buf.size,
                              gw->cfg.deadline_ms[req->route->id], fn, req);
    msgpack_sbuffer_destroy(&buf);
    if (!req->call) {
        login_throttle_end(gw->logins, &req->login, 503, clock_now_ms()); /* not a failure */
        s_error(req, 503, "unavailable", "no broker is reachable; try again");
    }
}

static void s_on_auth(void *arg, const auth_answer_t *a)
{
    http_req_t *req = arg;
    req->auth_wait = NULL;
    if (a->result == AUTH_OK) {
        req->user_id = a->user_id;
        req->device_id = a->device_id;
        s_dispatch(req);
    } else if (a->result == AUTH_DENIED) {
        req->www_authenticate = true;
        s_error(req, 401, "unauthorized", "the token is unknown or was revoked");
    } else {
        s_error(req, a->status, a->code, "%s", a->message);
    }
}

static void s_on_health(void *arg, int status, char *body, size_t len, const char *type)
{
    http_req_t *req = arg;
    req->health = NULL;
    if (req->health_brief && body) {
        /* without the operator token: the verdict only, for load balancers */
        json_t *full = json_loadb(body, len, 0, NULL);
        const char *verdict = json_string_value(json_object_get(full, "status"));
        char *brief = NULL;
        int n = asprintf(&brief, "{\"status\":\"%s\"}", verdict ? verdict : "down");
        json_decref(full);
        free(body);
        body = n < 0 ? NULL : brief;
        len = n < 0 ? 0 : (size_t)n;
    }
    s_respond(req, status, type, body, len, false);
}

/* The request carries the operator token (or none is configured). */
static bool s_ops_allowed(const http_req_t *req)
{
    const char *want = req->gw->cfg.ops_token, *token;
    size_t len, want_len = strlen(want);
    if (want_len == 0)
        return true;
    return validate_bearer(req->authorization, &token, &len) && len == want_len &&
           sodium_memcmp(token, want, len) == 0;
}

/* Everything the client sent is here: check the token, then dispatch. */
static void s_start(http_req_t *req)
{
    gw_t *gw = req->gw;
    if (req->started)
        return;
    req->started = true;
    if (req->route->id == ROUTE_HEALTH || req->route->id == ROUTE_METRICS) {
        bool allowed = s_ops_allowed(req);
        if (!allowed && req->route->id == ROUTE_METRICS) {
            s_error(req, 401, "unauthorized", "/metrics needs the operator token (ops_token)");
            return;
        }
        req->health_brief = !allowed;
        req->health = health_start(gw, req->route->id == ROUTE_METRICS, s_on_health, req);
        return;
    }
    if (gw->stopping) {
        s_error(req, 503, "unavailable", "this gateway is shutting down; try again");
        return;
    }
    if (!req->route->auth) {
        s_dispatch(req);
        return;
    }
    const char *token;
    size_t len;
    if (!req->authorization) {
        req->www_authenticate = true;
        s_error(req, 401, "unauthorized", "this endpoint needs an Authorization: Bearer token");
        return;
    }
    if (!validate_bearer(req->authorization, &token, &len)) {
        req->www_authenticate = true;
        s_error(req, 401, "unauthorized", "the Authorization header is not a valid Bearer token");
        return;
    }
    int wait = throttle_token(gw->throttle, token, len);
    if (wait) {
        req->retry_after_s = wait;
        s_error(req, 429, "rate_limited", "too many requests with this token; retry in %d s", wait);
        return;
    }
    auth_result_t r = auth_cache_lookup(gw->auth, token, len, &req->user_id, &req->device_id);
    if (r == AUTH_OK) {
        s_dispatch(req);
    } else if (r == AUTH_DENIED) {
        req->www_authenticate = true;
        s_error(req, 401, "unauthorized", "the token is unknown or was revoked");
    } else {
        req->auth_wait = auth_cache_verify(gw->auth, token, len, AUTH_FOR_REQUEST, s_on_auth, req);
        if (!req->auth_wait)
            s_error(req, 503, "unavailable", "no broker is reachable; try again");
    }
}

/* ---- libwebsockets events ----------------------------------------------------- */

static const char *s_method(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
        return "GET";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        return "POST";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
        return "DELETE";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
        return "PUT";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI))
        return "PATCH";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI))
        return "OPTIONS";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI))
        return "HEAD";
    return "?";
}

/* A header by token or custom name, malloc'd; NULL when absent or too long. */
static char *s_header(struct lws *wsi, enum lws_token_indexes token, const char *custom, size_t max,
                      bool *too_long)
{
    int len = custom ? lws_hdr_custom_length(wsi, custom, (int)strlen(custom))
                     : lws_hdr_total_length(wsi, token);
    if (len <= 0)
        return NULL;
    if ((size_t)len > max) {
        if (too_long)
            *too_long = true;
        return NULL;
    }
    char *v = malloc((size_t)len + 1);
    int n = custom ? lws_hdr_custom_copy(wsi, v, len + 1, custom, (int)strlen(custom))
                   : lws_hdr_copy(wsi, v, len + 1, token);
    if (n < 0) {
        free(v);
        return NULL;
    }
    v[n] = 0;
    return v;
}

static int s_copy_args(http_req_t *req, struct lws *wsi)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return 0;
    size_t cap = (size_t)total + S_ARGS_MAX + 1;
    req->args_buf = malloc(cap);
    size_t used = 0;
    for (int i = 0;; i++) {
        int n = lws_hdr_copy_fragment(wsi, req->args_buf + used, (int)(cap - used),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (req->nargs == S_ARGS_MAX)
            return -1;
        req->args[req->nargs++] = req->args_buf + used;
        used += (size_t)n + 1;
        if (used >= cap)
            break;
    }
    return 0;
}

/* Whether the head announces a body: chunked, or a Content-Length above 0. */
static bool s_announces_body(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)
        return true;
    char value[24];
    int n = lws_hdr_copy(wsi, value, sizeof value, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (n <= 0)
        return n < 0; /* too long to copy: certainly not 0 */
    return strspn(value, "0") != (size_t)n;
}

int http_on_request(gw_t *gw, struct lws *wsi, http_req_t **req_p, const char *path)
{
    if (*req_p) { /* a new request while one is unanswered: our bug, or a broken peer */
        slog_warn("http: request on a connection with one in progress; closing");
        return -1;
    }
    http_req_t *req = calloc(1, sizeof *req);
    req->gw = gw;
    req->wsi = wsi;
    req->started_us = clock_now_us();
    req->metric_route = ROUTE_UNMATCHED;
    *req_p = req;
    /* the body's deadline is ours (http_janitor), with a 408 */
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    req->body_unread = s_announces_body(wsi);

    char *rid = s_header(wsi, 0, "x-request-id:", VALIDATE_REQUEST_ID_MAX, NULL);
    if (rid && validate_request_id(rid, strlen(rid)))
        snprintf(req->request_id, sizeof req->request_id, "%s", rid);
    else
        http_new_request_id(gw, req->request_id);
    free(rid);

    const char *method = s_method(wsi);
    char allow[48];
    int m = routes_match(method, path, &req->route, req->param, allow, sizeof allow);
    if (m == 0)
        req->metric_route = req->route->id;
    /* every request counts against its address, whatever it asks for */
    int wait = throttle_request(gw->throttle, lws_get_opaque_user_data(wsi));
    if (wait) {
        req->retry_after_s = wait;
        s_error(req, 429, "rate_limited", "too many requests from your address; retry in %d s",
                wait);
        return 0;
    }
    if (m == 404 && strcmp(method, "GET") == 0) {
        const static_file_t *f = static_files_get(gw->static_files, path);
        if (f) {
            req->metric_route = ROUTE_STATIC;
            s_respond(req, 200, f->content_type, (char *)f->data, f->size, true);
            return 0;
        }
    }
    if (m == 404) {
        s_error(req, 404, "not_found", "no such endpoint: %s %.200s", method, path);
        return 0;
    }
    if (m == 405) {
        snprintf(req->allow, sizeof req->allow, "%s", allow);
        s_error(req, 405, "method_not_allowed", "%s is not allowed here; allowed: %s", method,
                allow);
        return 0;
    }
    req->metric_route = req->route->id;
    if (req->route->id == ROUTE_STATIC) {
        const static_file_t *f = static_files_get(gw->static_files, "/");
        if (f)
            s_respond(req, 200, f->content_type, (char *)f->data, f->size, true);
        else
            s_error(req, 404, "not_found", "no web client is installed here");
        return 0;
    }
    if (req->route->id == ROUTE_NOTIFY) {
        s_error(req, 426, "upgrade_required", "this endpoint is a WebSocket: send an upgrade");
        return 0;
    }

    /* the body: its size is known before a byte of it is read */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        req->close = true;
        s_error(req, 411, "length_required",
                "request bodies need a Content-Length (chunked bodies are not accepted)");
        return 0;
    }
    char *cl = s_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, NULL, 20, NULL);
    if (!cl && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 &&
        (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
         strcmp(method, "PATCH") == 0)) {
        /* without a length the end of the body is only the end of the connection */
        req->close = true;
        s_error(req, 411, "length_required",
                "a %s needs a Content-Length (Content-Length: 0 for an empty body)", method);
        return 0;
    }
    if (cl) {
        int64_t n;
        if (!validate_id(cl, strlen(cl), &n)) {
            free(cl);
            req->close = true;
            s_error(req, 400, "bad_request", "Content-Length is not a number");
            return 0;
        }
        free(cl);
        if ((uint64_t)n > gw->cfg.max_body_bytes) {
            req->close = true; /* the body stays unread: the connection cannot go on */
            s_error(req, 413, "payload_too_large",
                    "the body is %" PRId64 " bytes; the limit is %zu bytes", n,
                    gw->cfg.max_body_bytes);
            return 0;
        }
        req->content_length = (size_t)n;
    }

    bool too_long = false;
    req->authorization =
        s_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, NULL, VALIDATE_TOKEN_MAX + 64, &too_long);
    req->idem = s_header(wsi, 0, "idempotency-key:", 1024, &too_long);
    if (too_long && req->route->write && !req->idem &&
        lws_hdr_custom_length(wsi, "idempotency-key:", 16) > 0)
        req->idem = strdup("\x01"); /* present but too long: refused by validation */
    if (s_copy_args(req, wsi) != 0) {
        s_error(req, 400, "bad_request", "too many query parameters (at most %d)", S_ARGS_MAX);
        return 0;
    }
    if (req->route->auth && !req->authorization) {
        /* known from the head: no need to read a body first (s_start checks the
           token itself) */
        req->www_authenticate = true;
        s_error(req, 401, "unauthorized", "this endpoint needs an Authorization: Bearer token");
        return 0;
    }
    if (req->content_length > 0) {
        req->body = malloc(req->content_length);
        s_body_begin(req);
        return 0; /* wait for HTTP_BODY */
    }
    s_start(req);
    return 0;
}

int http_on_body(http_req_t *req, const void *data, size_t len)
{
    if (!req || !req->body || req->answered)
        return 0;
    if (len > req->content_length - req->body_len)
        len = req->content_length - req->body_len; /* never past Content-Length */
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    return 0;
}

int http_on_body_done(http_req_t *req)
{
    if (!req)
        return 0;
    req->body_unread = false;
    s_body_end(req);
    if (req->answered)
        return 0;
    s_start(req);
    return 0;
}

/* Adds the response head to [*p, end): status, headers, the blank line. The
   Content-Length is ours (none for an event stream): libwebsockets is not told,
   so it does not count the body bytes written with the head. Returns 0 or -1. */
static int s_head(http_req_t *req, unsigned char **p, unsigned char *end)
{
    struct lws *wsi = req->wsi;
    char value[64];
    int n;
    if (lws_add_http_header_status(wsi, (unsigned int)req->status, p, end))
        return -1;
    if (req->content_type && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                                          (const unsigned char *)req->content_type,
                                                          (int)strlen(req->content_type), p, end))
        return -1;
    if (req->status != 204 && !req->sse_open) {
        n = snprintf(value, sizeof value, "%zu", req->resp_len);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"content-length:",
                                        (const unsigned char *)value, n, p, end))
            return -1;
    }
    if (lws_add_http_header_by_name(
            wsi, (const unsigned char *)"x-request-id:", (const unsigned char *)req->request_id,
            (int)strlen(req->request_id), p, end))
        return -1;
    if (req->retry_after_s > 0) {
        n = snprintf(value, sizeof value, "%d", req->retry_after_s);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
                                        (const unsigned char *)value, n, p, end))
            return -1;
    }
    if (req->allow[0] && lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
                                                     (const unsigned char *)req->allow,
                                                     (int)strlen(req->allow), p, end))
        return -1;
    if (req->www_authenticate &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                    (const unsigned char *)"Bearer", 6, p, end))
        return -1;
    const char *cache = req->metric_route == ROUTE_STATIC ? "no-cache" : "no-store";
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)cache, (int)strlen(cache), p, end))
        return -1;
    /* a buffering reverse proxy (nginx) would hold the events back */
    if (req->sse_open &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"x-accel-buffering:",
                                    (const unsigned char *)"no", 2, p, end))
        return -1;
    if (req->close && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                   (const unsigned char *)"close", 5, p, end))
        return -1;
    return lws_finalize_http_header(wsi, p, end) ? -1 : 0;
}

/* Writes the head and as much of the body as fits one chunk, in one write (one
   send, one TCP segment for a small answer). Returns 0 or -1. */
static int s_write_first(http_req_t *req)
{
    unsigned char buf[LWS_PRE + S_HEADERS_MAX + S_CHUNK];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + LWS_PRE + S_HEADERS_MAX;
    if (s_head(req, &p, end) != 0)
        return -1;
    size_t body = req->resp_len < S_CHUNK ? req->resp_len : S_CHUNK;
    if (body)
        memcpy(p, req->resp, body);
    size_t total = (size_t)(p - start) + body;
    if (lws_write(req->wsi, start, total, LWS_WRITE_HTTP_HEADERS) < (int)total)
        return -1;
    req->resp_off = body;
    req->headers_sent = true;
    return 0;
}

/* The event stream: the head with the first events, then whatever is queued, a
   chunk per writable callback. Hangs up after the last event: libwebsockets calls
   back only once it has sent what it buffered itself, so nothing is cut off. */
static int s_sse_writeable(http_req_t **req_p)
{
    http_req_t *req = *req_p;
    unsigned char buf[LWS_PRE + S_HEADERS_MAX + S_CHUNK];
    unsigned char *start = buf + LWS_PRE, *p = start;
    bool wrote = false;
    req->write_asked = false;
    if (!req->headers_sent && s_head(req, &p, buf + LWS_PRE + S_HEADERS_MAX) != 0)
        goto fail;
    size_t n = req->out_len - req->out_off;
    if (n > S_CHUNK)
        n = S_CHUNK;
    if (n) {
        memcpy(p, req->out + req->out_off, n);
        p += n;
        req->out_off += n;
        outbound_set(&req->oc, req->out_len - req->out_off);
    }
    if (p > start) {
        size_t total = (size_t)(p - start);
        enum lws_write_protocol how = req->headers_sent ? LWS_WRITE_HTTP : LWS_WRITE_HTTP_HEADERS;
        if (lws_write(req->wsi, start, total, how) < (int)total)
            goto fail;
        req->headers_sent = true;
        wrote = true;
    }
    if (req->out_off < req->out_len || (req->sse_done && wrote)) {
        s_sse_ask_write(req);
        return 0;
    }
    if (req->out_cap > S_CHUNK) {
        /* all written: a stream that had to hold a large backlog gives it back */
        free(req->out);
        req->out = NULL;
        req->out_cap = req->out_off = req->out_len = 0;
    }
    if (!req->sse_done)
        return 0;
    *req_p = NULL;
    s_free(req);
    return -1;
fail:
    *req_p = NULL;
    s_free(req);
    return -1;
}

/* An answer that comes from the loop (a broker's reply, a token verified), not
   from inside a libwebsockets callback, is written at once when the connection has
   nothing buffered: this saves the writeable round trip, a poll change each way and
   a loop pass per request. What does not fit one write goes on in
   http_on_writeable, and so does every hang-up: only a callback's return value
   closes a connection at once. Returns false to leave the answer to that callback;
   true when it was written (req freed unless the callback still has work). */
static bool s_write_now(http_req_t *req)
{
    struct lws *wsi = req->wsi;
    if (req->gw->in_lws_callback || req->sse_open || req->headers_sent || req->close ||
        lws_partial_buffered(wsi))
        return false;
    if (s_write_first(req) != 0) {
        req->close = true;
        req->headers_sent = true; /* nothing more is written: the callback hangs up */
        req->resp_off = req->resp_len;
        lws_callback_on_writable(wsi);
        return true;
    }
    if (req->resp_off < req->resp_len) {
        lws_callback_on_writable(wsi);
        return true;
    }
    /* Out of the session first: completing the transaction gives the connection a
       new one (libwebsockets frees the old user space). */
    session_t *ss = lws_wsi_user(wsi);
    ss->req = NULL;
    if (lws_http_transaction_completed(wsi)) {
        /* not keep-alive after all (HTTP/1.0, a client that half-closed): the
           callback hangs up */
        ss = lws_wsi_user(wsi);
        if (ss) {
            ss->req = req;
            req->close = true;
            lws_callback_on_writable(wsi);
            return true;
        }
    }
    s_free(req);
    return true;
}

int http_on_writeable(http_req_t **req_p)
{
    http_req_t *req = *req_p;
    if (!req || !req->answered)
        return 0; /* nothing to say yet */
    if (req->sse_open)
        return s_sse_writeable(req_p);
    if (!req->headers_sent) {
        if (s_write_first(req) != 0) {
            *req_p = NULL;
            s_free(req);
            return -1;
        }
    } else if (req->resp_off < req->resp_len) {
        unsigned char buf[LWS_PRE + S_CHUNK];
        size_t n = req->resp_len - req->resp_off;
        if (n > S_CHUNK)
            n = S_CHUNK;
        memcpy(buf + LWS_PRE, req->resp + req->resp_off, n);
        req->resp_off += n;
        if (lws_write(req->wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP) < (int)n) {
            *req_p = NULL;
            s_free(req);
            return -1;
        }
    }
    if (req->resp_off < req->resp_len) {
        lws_callback_on_writable(req->wsi);
        return 0;
    }
    struct lws *wsi = req->wsi;
    bool close = req->close;
    *req_p = NULL;
    s_free(req);
    if (close)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Bodies past their deadline get 408 (and the connection closes after it). */
static void s_body_deadlines(gw_t *gw, int64_t now_ms)
{
    int64_t rate = gw->cfg.body_min_rate;
    for (http_req_t *req = gw->bodies, *next; req; req = next) {
        next = req->body_next;
        int64_t allowed = gw->cfg.body_timeout_ms;
        if (rate > 0)
            allowed += (int64_t)req->body_len * 1000 / rate;
        if (now_ms - req->body_started_ms <= allowed)
            continue;
        metrics_count(gw->metrics, "request_timeout_body");
        if (rate > 0)
            s_error(req, 408, "request_timeout",
                    "the request body did not arrive within body_timeout_ms (%d ms, plus 1 s for "
                    "every %" PRId64 " bytes received; %zu of %zu arrived)",
                    gw->cfg.body_timeout_ms, rate, req->body_len, req->content_length);
        else
            s_error(req, 408, "request_timeout",
                    "the request body did not arrive within body_timeout_ms (%d ms; %zu of %zu "
                    "arrived)",
                    gw->cfg.body_timeout_ms, req->body_len, req->content_length);
    }
}

void http_janitor(gw_t *gw, int64_t now_ms)
{
    s_body_deadlines(gw, now_ms);
    if (gw->cfg.sse_keepalive_s <= 0)
        return;
    int64_t quiet_ms = (int64_t)gw->cfg.sse_keepalive_s * 1000;
    for (http_req_t *req = gw->streams; req; req = req->next) {
        /* a comment line: ignored by every SSE parser, it keeps proxies and NAT
           tables from dropping a stream whose provider is slow to answer */
        if (!req->sse_done && now_ms - req->last_event_ms >= quiet_ms) {
            s_sse_queue(req, ": keep-alive\n\n", 14);
            s_sse_ask_write(req);
        }
    }
}

void http_end_streams(gw_t *gw)
{
    for (http_req_t *req = gw->streams; req; req = req->next) {
        if (req->sse_done)
            continue;
        /* not cancelled: the worker finishes the answer and stores it, and the
           client reads it back from another gateway */
        upstream_cancel(gw->upstream, &req->call, false);
        char message[VALIDATE_MESSAGE_MAX];
        snprintf(message, sizeof message,
                 "this gateway is stopping; the answer is still being stored: read it with "
                 "GET /v1/chat/conversations/%s/messages",
                 req->param);
        s_sse_event(req, "error",
                    json_pack("{s:{s:s,s:s}}", "error", "code", "unavailable", "message", message));
        req->sse_done = true;
    }
}

void http_on_closed(http_req_t **req_p)
{
    http_req_t *req = *req_p;
    if (!req)
        return;
    *req_p = NULL;
    req->wsi = NULL;
    s_free(req);
}
