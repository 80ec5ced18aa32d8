/*  notify.c - the /v1/sync/notify WebSocket actors. See notify.h.

    Memory per idle socket is this struct (about 150 bytes) plus libwebsockets'
    own: messages are allocated only while queued, and a partial client message
    only while it is arriving.
*/
#include "notify.h"
#include "notify_msg.h"
#include "auth_cache.h"
#include "clock.h"
#include "events.h"
#include "http.h"
#include "listener.h"
#include "metrics.h"
#include "mp.h"
#include "outbound.h"
#include "render.h"
#include "slog.h"
#include "throttle.h"
#include "upstream.h"
#include "validate.h"

#include <czmq.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <sodium.h>

#define S_PAGE 100     /* items per replay page */
#define S_LOW_WATER 16 /* fetch the next replay page when this few are queued */
/* ... and no more than this part of ws_queue_max_bytes: a page cut by bytes may
   hold a few MiB, and a socket that reads slowly must not get the next one on
   top of it */
#define S_LOW_WATER_DIVISOR 4
#define S_SETTLE_TICK_MS 10
#define S_ARGS_MAX 16
#define S_CLOSE_REVOKED 4001
#define S_WRITE_CLOSE 4        /* libwebsockets' internal LWS_WRITE_CLOSE: a close frame */
#define S_CLOSE_TRY_AGAIN 1013 /* RFC 6455 registry: Try Again Later */
/* Fell behind (its queue, the gateway's budget, the write timeout): reconnect
   with after=, the replay has what was dropped. */
#define S_CLOSE_BEHIND 4002
/* A message longer than this goes out as fragments of this size, one per
   writeable: written whole, a 1 MB item was copied into each socket's kernel
   buffer inside the event's callback (loopback takes it all, reader or not), and
   with 50 sockets of the user one event held the loop for about 50 ms (measured
   in tests/bench/abuse_ws.py). Now an event costs one fragment per socket, and
   the rest goes as each socket takes it. */
#define S_FRAGMENT 65536

typedef enum { P_AUTH, P_SETTLING, P_HELLO, P_REPLAY, P_LIVE, P_CLOSING } s_phase_t;
typedef enum { K_ITEM, K_DELETED, K_CONTROL } s_kind_t;

/*  The text of a message, written to every socket it is for: an event is rendered
    once and shared by reference, not copied per socket (a 1 MB item fanned out
    to 50 sockets was 50 copies). It is never written from in place:
    libwebsockets writes each frame's header into the LWS_PRE bytes before what
    it writes, which for a fragment would be text other sockets still need; each
    write goes through notify_t's scratch buffer (s_write_fragment). */
typedef struct {
    unsigned refs;
    s_kind_t kind;
    int64_t seq;           /* K_ITEM */
    int64_t source_device; /* K_ITEM */
    size_t len;
    char data[]; /* the text; no LWS_PRE room, see above */
} s_text_t;

/* A message queued to be written or held until the actor goes live. */
typedef struct s_msg_t {
    struct s_msg_t *next;
    s_text_t *text; /* one reference */
    size_t off;     /* written so far (the queue's head only, when fragmented) */
} s_msg_t;

typedef struct {
    s_msg_t *head, *tail;
    uint32_t count;
    size_t bytes; /* what the messages queued keep allocated (s_msg_size) */
} s_queue_t;

typedef struct s_user_t s_user_t;

struct notify_conn_t {
    notify_t *owner;
    struct lws *wsi;
    s_user_t *user;             /* NULL while its token is verified (P_AUTH) */
    auth_wait_t *auth_wait;     /* P_AUTH: the token check */
    notify_conn_t *prev, *next; /* the user's sockets, or the sockets in P_AUTH */
    notify_conn_t *settle_next; /* the settling list */
    int64_t device_id;
    int64_t after;     /* ?after=, -1: no replay */
    int64_t cursor;    /* replay position */
    int64_t threshold; /* items with seq <= this were sent or predate hello */
    s_phase_t phase;
    bool hello_queued;                    /* nothing is written before the hello */
    upstream_call_t *call;                /* the one db op in flight */
    void (*wait_fn)(notify_conn_t *c);    /* the db op waiting for its turn, if any */
    notify_conn_t *wait_prev, *wait_next; /* the queue of actors waiting for a turn */
    s_queue_t out;
    s_queue_t held;
    size_t lws_bytes;   /* the last message written, while libwebsockets buffers part of it */
    outbound_conn_t oc; /* out + held + lws_bytes, in the gateway's budget */
    notify_rx_t rx;     /* a client message arriving in fragments */
    int close_code;
    const char *close_reason;
};

struct s_user_t {
    int64_t user_id;
    notify_conn_t *conns;
    size_t count;
    int64_t verify_at_ms;         /* the next check that its sockets' devices are not revoked */
    s_user_t *vprev, *vnext;      /* notify_t's users in verify_at_ms order */
    upstream_call_t *verify_call; /* the device.list of that check, in flight */
    notify_t *owner;
    /* Live items in seq order (s_order): seqs are dense per user, but the events of
       two DB workers may arrive overtaken, and a client keeps the last seq it saw
       (reconnecting with after=<it>), so an item sent after a later one is skipped
       for good. */
    int64_t next_seq;     /* the seq to send next; 0: not known until the first hello */
    s_queue_t pending;    /* events waiting for an earlier item (items by seq) */
    int64_t gap_since_ms; /* pending waits for a missing seq since (0: it does not) */
};

/* A device.set_active waiting for its turn. */
typedef struct s_active_t {
    struct s_active_t *next;
    int64_t user_id, device_id;
    bool active;
} s_active_t;

struct notify_t {
    gw_t *gw;
    size_t inflight; /* db ops of sockets in flight, at most cfg.ws_db_max */
    notify_conn_t *wait_head, *wait_tail;
    s_active_t *act_head, *act_tail;
    zhashx_t *users;        /* "<user_id>" -> s_user_t (owned) */
    notify_conn_t *authing; /* sockets whose token is being verified (P_AUTH) */
    size_t count;           /* all sockets, authing included */
    notify_conn_t *settling;
    s_user_t *verify_head, *verify_tail; /* users by verify_at_ms (all get the same period) */
    size_t gapped; /* users whose pending waits for a missing seq */
    uv_timer_t timer;
    bool timer_running;
    unsigned char scratch[LWS_PRE + S_FRAGMENT]; /* each write's frame: s_write_fragment */
};

static void s_free(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

static void s_settle_tick(uv_timer_t *timer);

notify_t *notify_new(gw_t *gw)
{
    notify_t *self = calloc(1, sizeof *self);
    self->gw = gw;
    self->users = zhashx_new();
    zhashx_set_destructor(self->users, s_free);
    uv_timer_init(gw->loop, &self->timer);
    self->timer.data = self;
    return self;
}

static void s_clear(s_queue_t *q);

static void s_timer_closed(uv_handle_t *handle)
{
    notify_t *self = handle->data;
    for (s_user_t *u = zhashx_first(self->users); u; u = zhashx_next(self->users))
        s_clear(&u->pending);
    while (self->act_head) {
        s_active_t *a = self->act_head;
        self->act_head = a->next;
        free(a);
    }
    zhashx_destroy(&self->users);
    free(self);
}

void notify_destroy(notify_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    notify_t *self = *self_p;
    uv_timer_stop(&self->timer);
    uv_close((uv_handle_t *)&self->timer, s_timer_closed);
    *self_p = NULL;
}

size_t notify_count(const notify_t *self)
{
    return self->count;
}

/* ---- messages ------------------------------------------------------------------ */

static s_text_t *s_text_new(const char *text, size_t len, s_kind_t kind)
{
    s_text_t *t = malloc(sizeof *t + len);
    if (!t)
        return NULL;
    *t = (s_text_t){.refs = 1, .kind = kind, .len = len};
    memcpy(t->data, text, len);
    return t;
}

static void s_text_unref(s_text_t *t)
{
    if (t && --t->refs == 0)
        free(t);
}

/* A message of text for one more socket: takes a reference. */
static s_msg_t *s_msg_new(s_text_t *text)
{
    s_msg_t *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    m->next = NULL;
    m->text = text;
    m->off = 0;
    text->refs++;
    return m;
}

static void s_msg_free(s_msg_t *m)
{
    s_text_unref(m->text);
    free(m);
}

/*  What a message costs while it waits: the whole text, on every socket that
    holds it, although sockets share it. Each socket's count is what it keeps
    alive (its text is not freed before it is written or dropped), so
    ws_queue_max_bytes means what it says, and the gateway's total is a bound on
    memory from above: it counts a text shared by N sockets N times, and sheds
    sooner than the memory alone would need when many sockets of one user fall
    behind together. */
static size_t s_text_cost(const s_text_t *t)
{
    return sizeof(s_msg_t) + sizeof *t + t->len;
}

static size_t s_msg_size(const s_msg_t *m)
{
    return s_text_cost(m->text);
}

static void s_push(s_queue_t *q, s_msg_t *m)
{
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->count++;
    q->bytes += s_msg_size(m);
}

static void s_push_front(s_queue_t *q, s_msg_t *m)
{
    m->next = q->head;
    q->head = m;
    if (!q->tail)
        q->tail = m;
    q->count++;
    q->bytes += s_msg_size(m);
}

static s_msg_t *s_pop(s_queue_t *q)
{
    s_msg_t *m = q->head;
    if (m) {
        q->head = m->next;
        if (!q->head)
            q->tail = NULL;
        q->count--;
        q->bytes -= s_msg_size(m);
        m->next = NULL;
    }
    return m;
}

static void s_clear(s_queue_t *q)
{
    s_msg_t *m;
    while ((m = s_pop(q)))
        s_msg_free(m);
}

static void s_wait_unlink(notify_t *self, notify_conn_t *c);

/* What c holds for its client, as the gateway's budget sees it. */
static void s_account(notify_conn_t *c)
{
    outbound_set(&c->oc, c->out.bytes + c->held.bytes + c->lws_bytes);
}

/* Asks libwebsockets to close the socket with code, from the next writeable.
   What was queued is dropped now: a client told to reconnect gets it again by
   replay, and one that is not reading would never take it. A client that cannot
   even take the close frame is cut after write_progress_timeout_s. */
static void s_close(notify_conn_t *c, int code, const char *reason)
{
    if (c->phase == P_CLOSING)
        return;
    gw_t *gw = c->owner->gw;
    c->phase = P_CLOSING;
    c->close_code = code;
    c->close_reason = reason;
    auth_cache_cancel(gw->auth, &c->auth_wait);
    if (c->call) {
        upstream_cancel(gw->upstream, &c->call, false);
        c->owner->inflight--;
    }
    s_wait_unlink(c->owner, c);
    s_clear(&c->out);
    s_clear(&c->held);
    s_account(c);
    char name[32];
    snprintf(name, sizeof name, "ws_close_%d", code);
    metrics_count(gw->metrics, name);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, gw->cfg.write_progress_timeout_s);
    lws_callback_on_writable(c->wsi);
}

/* The outbound budget or the write-progress timeout chose this socket. */
static void s_shed(outbound_conn_t *oc, outbound_why_t why)
{
    notify_conn_t *c = (notify_conn_t *)((char *)oc - offsetof(notify_conn_t, oc));
    if (why == OUTBOUND_BUDGET) {
        metrics_count(c->owner->gw->metrics, "ws_over_budget");
        s_close(c, S_CLOSE_BEHIND,
                "the gateway holds outbound_budget_bytes for slow clients; "
                "reconnect with after=");
        return;
    }
    /* it took nothing for that long: it would not take the close frame either */
    metrics_count(c->owner->gw->metrics, "ws_write_timeout");
    s_close(c, S_CLOSE_BEHIND, "nothing read for write_progress_timeout_s; reconnect with after=");
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* Room for size more bytes on c, or c is closed (4002) and false. capped: the
   socket's own cap applies (live messages); a replay page is exempt, since it is
   asked for only once the queue drained (s_wants_page). */
static bool s_room(notify_conn_t *c, size_t size, bool capped)
{
    const gw_config_t *cfg = &c->owner->gw->cfg;
    size_t queued = c->out.bytes + c->lws_bytes;
    if (c->out.count >= cfg->ws_queue_max ||
        (capped && queued > 0 && queued + size > cfg->ws_queue_max_bytes)) {
        s_close(c, S_CLOSE_BEHIND,
                "client is not reading: more than ws_queue_max(_bytes) "
                "queued; reconnect with after=");
        return false;
    }
    if (!outbound_reserve(&c->oc, size)) {
        s_shed(&c->oc, OUTBOUND_BUDGET);
        return false;
    }
    return true;
}

/*  Writes the next fragment of t (from *off, at most S_FRAGMENT bytes) and
    advances *off. A write the kernel takes only in part is finished by
    libwebsockets itself before the next writeable, from its own copy of the
    rest (at most one fragment), which counts as queued (lws_bytes). -1: the
    write failed. */
static int s_write_fragment(notify_conn_t *c, const s_text_t *t, size_t *off)
{
    size_t n = t->len - *off < S_FRAGMENT ? t->len - *off : S_FRAGMENT;
    unsigned char *buf = c->owner->scratch + LWS_PRE;
    memcpy(buf, t->data + *off, n);
    int flags = lws_write_ws_flags(LWS_WRITE_TEXT, *off == 0, *off + n == t->len);
    int w = lws_write(c->wsi, buf, n, (enum lws_write_protocol)flags);
    if (w < 0)
        return -1;
    *off += n;
    c->lws_bytes = lws_partial_buffered(c->wsi) ? n : 0;
    return 0;
}

static void s_send_to(notify_conn_t *c, s_text_t *t, bool capped)
{
    if (!s_room(c, s_text_cost(t), capped))
        return;
    /* Nothing queued and nothing left over from the last write: write now, saving
       the writeable round trip (two epoll changes and a wakeup per socket), which is
       what a fan-out to thousands of sockets costs. */
    size_t off = 0;
    if (c->hello_queued && !c->out.head && c->phase != P_CLOSING && !lws_partial_buffered(c->wsi)) {
        if (s_write_fragment(c, t, &off) != 0) {
            s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "write failed");
            return;
        }
        if (c->lws_bytes)
            lws_callback_on_writable(c->wsi);
        if (off == t->len) {
            s_account(c);
            return;
        }
    }
    /* the rest of a fragmented message stays at the head, with its offset */
    s_msg_t *m = s_msg_new(t);
    if (!m) {
        s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    m->off = off;
    s_push(&c->out, m);
    s_account(c);
    if (c->hello_queued)
        lws_callback_on_writable(c->wsi);
}

/* A live message: the socket's cap applies. t stays the caller's. */
static void s_send(notify_conn_t *c, s_text_t *t)
{
    s_send_to(c, t, true);
}

/* A replayed item: paced by s_wants_page instead of the cap. */
static void s_send_replay(notify_conn_t *c, s_text_t *t)
{
    s_send_to(c, t, false);
}

/* The queue has drained enough for the next replay page. */
static bool s_wants_page(const notify_conn_t *c)
{
    return c->out.count <= S_LOW_WATER &&
           c->out.bytes + c->lws_bytes <=
               c->owner->gw->cfg.ws_queue_max_bytes / S_LOW_WATER_DIVISOR;
}

static void s_send_text(notify_conn_t *c, const char *text, size_t len)
{
    s_text_t *t = s_text_new(text, len, K_CONTROL);
    if (!t) {
        s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    s_send(c, t);
    s_text_unref(t);
}

static void s_send_error(notify_conn_t *c, const char *code, const char *message)
{
    json_t *o =
        json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "code", code, "message", message);
    size_t len = 0;
    char *text = render_dump(o, &len);
    if (text)
        s_send_text(c, text, len);
    free(text);
}

/* ---- db ops --------------------------------------------------------------------- */

/* Sockets share a bounded number of db ops in flight (cfg.ws_db_max): a burst of
   connections (a gateway restart brings thousands back at once) queues here, in
   actors that hold nothing, instead of overflowing the broker's queue into 503s. */
static void s_pump(notify_t *self);

static void s_send_active(notify_t *self, int64_t user_id, int64_t device_id, bool active);

static void s_on_active(void *arg, bool final, int status, const msgpack_object *body)
{
    (void)body;
    notify_t *self = arg;
    if (!final)
        return;
    if (status < 200 || status > 299)
        slog_debug("notify: device.set_active answered %d", status);
    self->inflight--;
    s_pump(self);
}

static void s_send_active(notify_t *self, int64_t user_id, int64_t device_id, bool active)
{
    gw_t *gw = self->gw;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    validate_pack_head(&pk, "device.set_active", user_id, device_id, NULL, true, NULL);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "device_id", device_id);
    mp_pack_kv_bool(&pk, "active", active);
    if (upstream_call(gw->upstream, "db", buf.data, buf.size, gw->cfg.internal_deadline_ms,
                      s_on_active, self))
        self->inflight++;
    else
        slog_debug("notify: device.set_active not sent (no broker)");
    msgpack_sbuffer_destroy(&buf);
}

static void s_set_active(notify_t *self, int64_t user_id, int64_t device_id, bool active)
{
    if (self->inflight < self->gw->cfg.ws_db_max) {
        s_send_active(self, user_id, device_id, active);
        return;
    }
    s_active_t *a = malloc(sizeof *a);
    a->next = NULL;
    a->user_id = user_id;
    a->device_id = device_id;
    a->active = active;
    if (self->act_tail)
        self->act_tail->next = a;
    else
        self->act_head = a;
    self->act_tail = a;
}

static void s_wait_unlink(notify_t *self, notify_conn_t *c)
{
    if (!c->wait_fn)
        return;
    if (c->wait_prev)
        c->wait_prev->wait_next = c->wait_next;
    else
        self->wait_head = c->wait_next;
    if (c->wait_next)
        c->wait_next->wait_prev = c->wait_prev;
    else
        self->wait_tail = c->wait_prev;
    c->wait_prev = c->wait_next = NULL;
    c->wait_fn = NULL;
}

/* Runs fn (which sends one db op for c) now, or when a turn is free. */
static void s_run(notify_conn_t *c, void (*fn)(notify_conn_t *c))
{
    notify_t *self = c->owner;
    if (self->inflight < self->gw->cfg.ws_db_max && !self->wait_head) {
        fn(c);
        return;
    }
    c->wait_fn = fn;
    c->wait_prev = self->wait_tail;
    c->wait_next = NULL;
    if (self->wait_tail)
        self->wait_tail->wait_next = c;
    else
        self->wait_head = c;
    self->wait_tail = c;
}

static void s_pump(notify_t *self)
{
    while (self->inflight < self->gw->cfg.ws_db_max) {
        if (self->wait_head) {
            notify_conn_t *c = self->wait_head;
            void (*fn)(notify_conn_t *) = c->wait_fn;
            s_wait_unlink(self, c);
            fn(c);
        } else if (self->act_head) {
            s_active_t *a = self->act_head;
            self->act_head = a->next;
            if (!self->act_head)
                self->act_tail = NULL;
            s_send_active(self, a->user_id, a->device_id, a->active);
            free(a);
        } else {
            return;
        }
    }
}

/* Sends op for conn (its turn has come); the reply comes to fn. */
static bool s_call(notify_conn_t *c, const char *op, msgpack_sbuffer *body, upstream_fn *fn)
{
    gw_t *gw = c->owner->gw;
    c->call = upstream_call(gw->upstream, "db", body->data, body->size,
                            gw->cfg.internal_deadline_ms, fn, c);
    if (!c->call) {
        slog_debug("notify: %s not sent (no broker)", op);
        s_close(c, S_CLOSE_TRY_AGAIN, "no broker is reachable; reconnect");
        return false;
    }
    c->owner->inflight++;
    return true;
}

/* The reply to c's db op came (or it was cancelled): a turn is free. */
static void s_call_done(notify_conn_t *c)
{
    c->call = NULL;
    c->owner->inflight--;
    s_pump(c->owner);
}

/* An answer that is not the one asked for: close, and let the client reconnect. */
static void s_close_for(notify_conn_t *c, int status)
{
    if (status == 503 || status == 504)
        s_close(c, S_CLOSE_TRY_AGAIN, "the database is busy; reconnect");
    else if (status == 401)
        s_close(c, S_CLOSE_REVOKED, "device revoked");
    else
        s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "the database did not answer; reconnect");
}

/* {"type":"clipboard.item","item":item}, written straight from the MessagePack
   (render_text): building a jansson tree of a 1 MB item and dumping it took
   about 35 ms of the loop per event, against 2 ms. */
static s_text_t *s_item_text(const msgpack_object *item)
{
    static const char head[] = "{\"type\":\"clipboard.item\",\"item\":";
    size_t len = 0;
    char *json = render_text(item, &len);
    if (!json)
        return NULL;
    size_t total = sizeof head - 1 + len + 1;
    s_text_t *t = malloc(sizeof *t + total);
    if (t) {
        *t = (s_text_t){.refs = 1, .kind = K_ITEM, .len = total};
        char *p = t->data;
        memcpy(p, head, sizeof head - 1);
        memcpy(p + sizeof head - 1, json, len);
        p[total - 1] = '}';
        mp_get_int(item, "seq", &t->seq);
        mp_get_int(item, "source_device_id", &t->source_device);
    }
    free(json);
    return t;
}

/* Held messages go out now, less what the replay already covered and the
   device's own items. */
static void s_go_live(notify_conn_t *c)
{
    c->phase = P_LIVE;
    s_msg_t *m;
    while ((m = s_pop(&c->held))) {
        s_account(c);
        const s_text_t *t = m->text;
        if (!(t->kind == K_ITEM && (t->seq <= c->threshold || t->source_device == c->device_id)))
            s_send(c, m->text);
        s_msg_free(m);
        if (c->phase == P_CLOSING)
            break;
    }
    s_clear(&c->held);
    s_account(c);
}

static void s_next_page(notify_conn_t *c);
static void s_baseline(notify_t *self, s_user_t *u, int64_t latest);
static void s_resync(notify_t *self, s_user_t *u, const char *why);

static void s_on_page(void *arg, bool final, int status, const msgpack_object *body)
{
    notify_conn_t *c = arg;
    if (!final)
        return;
    s_call_done(c);
    const msgpack_object *data = mp_get(body, "data");
    const msgpack_object *items = mp_get(data, "items");
    if (status != 200 || !items || items->type != MSGPACK_OBJECT_ARRAY) {
        s_close_for(c, status);
        return;
    }
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        s_text_t *t = s_item_text(&items->via.array.ptr[i]);
        if (!t)
            continue;
        if (t->seq > c->cursor)
            c->cursor = t->seq;
        s_send_replay(c, t);
        s_text_unref(t);
        if (c->phase == P_CLOSING)
            return;
    }
    int64_t next = 0;
    if (mp_get_int(data, "next_after", &next) && next > c->cursor)
        c->cursor = next;
    /* The worker cuts pages by bytes too: only it can say this was the last page
       (design rule 7). A reply without "more" ends on an empty page. */
    const msgpack_object *more = mp_get(data, "more");
    bool last = more ? !(more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean)
                     : items->via.array.size == 0;
    if (last) {
        if (c->cursor > c->threshold)
            c->threshold = c->cursor;
        s_go_live(c);
        return;
    }
    if (s_wants_page(c))
        s_next_page(c);
}

static void s_page_send(notify_conn_t *c)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    validate_pack_head(&pk, "clipboard.list", c->user->user_id, c->device_id, NULL, true, NULL);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "after", c->cursor);
    mp_pack_kv_int(&pk, "limit", S_PAGE);
    s_call(c, "clipboard.list", &buf, s_on_page);
    msgpack_sbuffer_destroy(&buf);
}

static void s_next_page(notify_conn_t *c)
{
    if (!c->call && !c->wait_fn)
        s_run(c, s_page_send);
}

static void s_on_latest(void *arg, bool final, int status, const msgpack_object *body)
{
    notify_conn_t *c = arg;
    if (!final)
        return;
    s_call_done(c);
    int64_t latest = 0;
    if (status == 200) {
        if (!mp_get_int(mp_get(body, "data"), "seq", &latest)) {
            s_close_for(c, 500);
            return;
        }
    } else if (status != 404) {
        s_close_for(c, status);
        return;
    }
    char text[160];
    int n = snprintf(text, sizeof text,
                     "{\"type\":\"hello\",\"user_id\":\"%" PRId64 "\",\"device_id\":\"%" PRId64
                     "\",\"seq\":%" PRId64 "}",
                     c->user->user_id, c->device_id, latest);
    /* the hello goes before any pong already queued */
    s_text_t *t = s_text_new(text, (size_t)n, K_CONTROL);
    s_msg_t *m = t ? s_msg_new(t) : NULL;
    s_text_unref(t);
    if (!m) {
        s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return;
    }
    s_push_front(&c->out, m);
    s_account(c);
    c->hello_queued = true;
    lws_callback_on_writable(c->wsi);
    c->threshold = latest;
    s_baseline(c->owner, c->user, latest); /* may queue items to c: held, as it is not live */
    if (c->phase == P_CLOSING)
        return;
    if (c->after < 0) {
        s_go_live(c);
        return;
    }
    if (c->after > c->threshold)
        c->threshold = c->after;
    c->cursor = c->after;
    c->phase = P_REPLAY;
    s_next_page(c);
}

static void s_hello_send(notify_conn_t *c)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    validate_pack_head(&pk, "clipboard.latest", c->user->user_id, c->device_id, NULL, true, NULL);
    msgpack_pack_map(&pk, 0);
    s_call(c, "clipboard.latest", &buf, s_on_latest);
    msgpack_sbuffer_destroy(&buf);
}

static void s_hello(notify_conn_t *c)
{
    c->phase = P_HELLO;
    s_run(c, s_hello_send);
}

/* ---- re-verification ----------------------------------------------------------------- */

/*  A device.revoked event closes the device's sockets, but an event can be lost
    (a subscriber's queue overflowing); a token check that raced the revoke is
    caught by the token cache itself (auth_cache.c). So every ws_reverify_s each
    user with sockets
    here is checked with one device.list (its devices not revoked), and the sockets
    of a device not in it are closed as if the event had come. One op per user per
    period, not one per socket; it waits for a turn of ws_db_max like the rest. */

static void s_verify_unlink(notify_t *self, s_user_t *u)
{
    if (u->vprev)
        u->vprev->vnext = u->vnext;
    else if (self->verify_head == u)
        self->verify_head = u->vnext;
    if (u->vnext)
        u->vnext->vprev = u->vprev;
    else if (self->verify_tail == u)
        self->verify_tail = u->vprev;
    u->vprev = u->vnext = NULL;
}

/* Next check one period from now: appended, so the list stays in time order. */
static void s_verify_schedule(notify_t *self, s_user_t *u, int64_t now_ms)
{
    if (self->gw->cfg.ws_reverify_s <= 0)
        return;
    u->verify_at_ms = now_ms + (int64_t)self->gw->cfg.ws_reverify_s * 1000;
    u->vprev = self->verify_tail;
    u->vnext = NULL;
    if (self->verify_tail)
        self->verify_tail->vnext = u;
    else
        self->verify_head = u;
    self->verify_tail = u;
}

/* The user leaves this gateway: no check for it any more. */
static void s_verify_forget(notify_t *self, s_user_t *u)
{
    s_verify_unlink(self, u);
    if (u->verify_call) {
        upstream_cancel(self->gw->upstream, &u->verify_call, false);
        self->inflight--;
    }
}

static bool s_device_listed(const msgpack_object *devices, int64_t device_id)
{
    for (uint32_t i = 0; i < devices->via.array.size; i++) {
        int64_t id;
        if (mp_get_int(&devices->via.array.ptr[i], "id", &id) && id == device_id)
            return true;
    }
    return false;
}

static void s_on_devices(void *arg, bool final, int status, const msgpack_object *body)
{
    s_user_t *u = arg;
    if (!final)
        return;
    notify_t *self = u->owner;
    u->verify_call = NULL;
    self->inflight--;
    const msgpack_object *devices = mp_get(mp_get(body, "data"), "devices");
    if (status == 200 && devices && devices->type == MSGPACK_OBJECT_ARRAY) {
        /* One device at a time, from the start each time: a revoke closes sockets
           (they stay in the list, closing) and may touch the user's other state. */
        bool again = true;
        while (again) {
            again = false;
            for (notify_conn_t *c = u->conns; c; c = c->next) {
                if (c->phase != P_CLOSING && !s_device_listed(devices, c->device_id)) {
                    slog_info("notify: device %" PRId64 " of user %" PRId64
                              " is revoked but its event never came here: closing its sockets",
                              c->device_id, u->user_id);
                    metrics_count(self->gw->metrics, "ws_revoked_by_reverify");
                    gw_device_revoked(self->gw, u->user_id, c->device_id);
                    again = true;
                    break;
                }
            }
        }
    } else if (status != 200) {
        slog_debug("notify: device.list of user %" PRId64 " answered %d; checked again later",
                   u->user_id, status);
    }
    s_pump(self);
}

static void s_verify_send(notify_t *self, s_user_t *u)
{
    gw_t *gw = self->gw;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    /* device.list needs a device of the user to ask as; any socket's will do */
    validate_pack_head(&pk, "device.list", u->user_id, u->conns->device_id, NULL, true, NULL);
    msgpack_pack_map(&pk, 0);
    u->verify_call = upstream_call(gw->upstream, "db", buf.data, buf.size,
                                   gw->cfg.internal_deadline_ms, s_on_devices, u);
    if (u->verify_call)
        self->inflight++;
    msgpack_sbuffer_destroy(&buf);
}

void notify_janitor(notify_t *self, int64_t now_ms)
{
    if (self->gapped) {
        for (s_user_t *u = zhashx_first(self->users); u; u = zhashx_next(self->users)) {
            if (u->gap_since_ms && now_ms - u->gap_since_ms >= self->gw->cfg.ws_gap_wait_ms)
                s_resync(self, u, "a seq did not arrive within ws_gap_wait_ms");
        }
    }
    /* only with a turn to spare: sockets opening (hello, replay) go first */
    while (self->verify_head && self->verify_head->verify_at_ms <= now_ms &&
           self->inflight < self->gw->cfg.ws_db_max && !self->wait_head) {
        s_user_t *u = self->verify_head;
        s_verify_unlink(self, u);
        s_verify_schedule(self, u, now_ms);
        if (!u->verify_call && u->conns)
            s_verify_send(self, u);
    }
}

/* ---- settling --------------------------------------------------------------------- */

static void s_settle_remove(notify_t *self, notify_conn_t *c)
{
    for (notify_conn_t **p = &self->settling; *p; p = &(*p)->settle_next) {
        if (*p == c) {
            *p = c->settle_next;
            c->settle_next = NULL;
            return;
        }
    }
}

static void s_settle_tick(uv_timer_t *timer)
{
    notify_t *self = timer->data;
    int64_t now = clock_now_ms();
    for (notify_conn_t **p = &self->settling; *p;) {
        notify_conn_t *c = *p;
        if (events_ready_at(self->gw->events, c->user->user_id) <= now) {
            *p = c->settle_next;
            c->settle_next = NULL;
            s_hello(c);
        } else {
            p = &c->settle_next;
        }
    }
    if (!self->settling) {
        uv_timer_stop(&self->timer);
        self->timer_running = false;
    }
}

/* ---- libwebsockets events ------------------------------------------------------------ */

/* An answer to a refused upgrade, written raw: libwebsockets' own would say HTTP/1.0. */
static int s_refuse_after(gw_t *gw, struct lws *wsi, int status, const char *code,
                          const char *message, int retry_after_s)
{
    char rid[VALIDATE_REQUEST_ID_MAX + 1];
    int n = lws_hdr_custom_copy(wsi, rid, sizeof rid, "x-request-id:", 13);
    if (n <= 0 || !validate_request_id(rid, (size_t)n))
        http_new_request_id(gw, rid);
    unsigned char buf[LWS_PRE + 1024];
    size_t len = http_format_error((char *)buf + LWS_PRE, sizeof buf - LWS_PRE, status, code,
                                   message, rid, retry_after_s);
    lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_RAW);
    char name[32];
    snprintf(name, sizeof name, "ws_refused_%d", status);
    metrics_count(gw->metrics, name);
    return -1;
}

static int s_refuse(gw_t *gw, struct lws *wsi, int status, const char *code, const char *message)
{
    return s_refuse_after(gw, wsi, status, code, message,
                          status == 503 ? gw->cfg.retry_after_s : 0);
}

/* ---- sockets per user and per device ------------------------------------------------ */

static s_user_t *s_user_find(notify_t *self, int64_t user_id)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, user_id);
    return zhashx_lookup(self->users, key);
}

/*  NULL when one more socket of this device fits ws_max_per_user and
    ws_max_per_device, else the limit it would pass. Sockets already closing do not
    count: a client told to reconnect (4002) must not be refused because its old
    socket has not finished closing. */
static const char *s_socket_limit(notify_t *self, int64_t user_id, int64_t device_id)
{
    const gw_config_t *cfg = &self->gw->cfg;
    s_user_t *u = s_user_find(self, user_id);
    if (!u)
        return NULL;
    size_t user = 0, device = 0;
    for (notify_conn_t *c = u->conns; c; c = c->next) {
        if (c->phase == P_CLOSING)
            continue;
        user++;
        if (c->device_id == device_id)
            device++;
    }
    if (cfg->ws_max_per_device && device >= cfg->ws_max_per_device)
        return "ws_max_per_device";
    if (cfg->ws_max_per_user && user >= cfg->ws_max_per_user)
        return "ws_max_per_user";
    return NULL;
}

static int s_refuse_sockets(gw_t *gw, struct lws *wsi, const char *limit)
{
    char message[160];
    bool device = strcmp(limit, "ws_max_per_device") == 0;
    snprintf(message, sizeof message,
             "too many WebSockets open for this %s: %s is %zu; close one first",
             device ? "device" : "user", limit,
             device ? gw->cfg.ws_max_per_device : gw->cfg.ws_max_per_user);
    metrics_count(gw->metrics, "ws_refused_too_many_sockets");
    return s_refuse(gw, wsi, 429, "too_many_sockets", message);
}

static void s_ignore_auth(void *arg, const auth_answer_t *a)
{
    (void)arg;
    (void)a;
}

int notify_on_confirm(gw_t *gw, struct lws *wsi)
{
    char path[64];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0 ||
        (strcmp(path, "/v1/sync/notify") != 0 && strcmp(path, "/sync/notify") != 0))
        return s_refuse(gw, wsi, 404, "not_found", "no WebSocket endpoint here");
    preauth_t pa = {0};
    int fd = (int)lws_get_socket_fd(wsi);
    if (listener_peek_preauth(gw->listener, fd, &pa)) {
        /* the listener counted it against the rate limits already */
        const char *limit = pa.token ? NULL : s_socket_limit(gw->notify, pa.user_id, pa.device_id);
        if (!limit)
            return 0;
        listener_take_preauth(gw->listener, fd, &pa);
        return s_refuse_sockets(gw, wsi, limit);
    }
    if (gw->stopping)
        return s_refuse(gw, wsi, 503, "unavailable", "this gateway is shutting down; try again");
    int wait = throttle_request(gw->throttle, lws_get_opaque_user_data(wsi));
    if (wait)
        return s_refuse_after(gw, wsi, 429, "rate_limited",
                              "too many requests from your address; slow down", wait);
    /* Not peeked at by the listener: a TLS connection, or not the first request
       of its connection. libwebsockets answers 101 as soon as this returns, so a
       token not in the cache cannot be waited for here: over TLS it is verified
       right after the upgrade, before the socket gets anything (notify_on_open). */
    char args_buf[2048];
    const char *args[S_ARGS_MAX];
    size_t nargs = 0, used = 0;
    for (int i = 0; nargs < S_ARGS_MAX && used < sizeof args_buf; i++) {
        int n = lws_hdr_copy_fragment(wsi, args_buf + used, (int)(sizeof args_buf - used),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        args[nargs++] = args_buf + used;
        used += (size_t)n + 1;
    }
    const char *token = NULL;
    size_t token_len = 0;
    gw_err_t err;
    if (validate_notify_query(args, nargs, &token, &token_len, &pa.after, &err) != 0)
        return s_refuse(gw, wsi, err.status, err.code, err.message);
    char auth[VALIDATE_TOKEN_MAX + 64];
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
        !validate_bearer(auth, &token, &token_len))
        return s_refuse(gw, wsi, 401, "unauthorized", "the Authorization header is not valid");
    if (!token || !validate_token(token, token_len))
        return s_refuse(gw, wsi, 401, "unauthorized", "a valid token is needed");
    wait = throttle_token(gw->throttle, token, token_len);
    if (wait)
        return s_refuse_after(gw, wsi, 429, "rate_limited",
                              "too many requests with this token; slow down", wait);
    auth_result_t r = auth_cache_lookup(gw->auth, token, token_len, &pa.user_id, &pa.device_id);
    if (r == AUTH_OK) {
        const char *limit = s_socket_limit(gw->notify, pa.user_id, pa.device_id);
        if (limit)
            return s_refuse_sockets(gw, wsi, limit);
        pa.expires_ms = clock_now_ms() + 10000;
        listener_put_preauth(gw->listener, fd, &pa);
        return 0;
    }
    if (r == AUTH_DENIED)
        return s_refuse(gw, wsi, 401, "unauthorized", "the token is unknown or was revoked");
    if (!gw->tls) {
        /* plain HTTP: only a later request of a keep-alive connection gets here,
           which clients do not send; it is refused with 503 and the token is
           checked meanwhile, so that the retry finds it cached */
        auth_wait_t *w =
            auth_cache_verify(gw->auth, token, token_len, AUTH_FOR_SOCKET, s_ignore_auth, NULL);
        (void)w; /* it completes on its own; nothing waits on it */
        return s_refuse(gw, wsi, 503, "unavailable",
                        "open the WebSocket on a new connection, or retry shortly");
    }
    pa.expires_ms = clock_now_ms() + 10000;
    pa.token = strndup(token, token_len);
    listener_put_preauth(gw->listener, fd, &pa);
    return 0;
}

/* The actor of an open socket of this user and device: subscribes, marks the
   device active and sends the hello (after the subscription settled). */
static void s_attach(notify_conn_t *c, int64_t user_id, int64_t device_id)
{
    notify_t *self = c->owner;
    gw_t *gw = self->gw;
    c->device_id = device_id;
    c->phase = P_SETTLING;
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, user_id);
    s_user_t *u = zhashx_lookup(self->users, key);
    if (!u) {
        u = calloc(1, sizeof *u);
        u->user_id = user_id;
        u->owner = self;
        zhashx_insert(self->users, key, u);
        events_subscribe(gw->events, user_id);
        s_verify_schedule(self, u, clock_now_ms());
    }
    c->user = u;
    c->next = u->conns;
    if (u->conns)
        u->conns->prev = c;
    u->conns = c;
    u->count++;
    s_set_active(self, user_id, device_id, true);
    if (events_ready_at(gw->events, user_id) <= clock_now_ms()) {
        s_hello(c);
    } else {
        c->settle_next = self->settling;
        self->settling = c;
        if (!self->timer_running) {
            uv_timer_start(&self->timer, s_settle_tick, S_SETTLE_TICK_MS, S_SETTLE_TICK_MS);
            self->timer_running = true;
        }
    }
}

static void s_authing_unlink(notify_conn_t *c)
{
    notify_t *self = c->owner;
    if (c->prev)
        c->prev->next = c->next;
    else if (self->authing == c)
        self->authing = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void s_on_open_auth(void *arg, const auth_answer_t *a)
{
    notify_conn_t *c = arg;
    c->auth_wait = NULL;
    s_authing_unlink(c);
    const char *limit =
        a->result == AUTH_OK ? s_socket_limit(c->owner, a->user_id, a->device_id) : NULL;
    if (limit) {
        /* after the upgrade (TLS): no HTTP answer is possible any more */
        metrics_count(c->owner->gw->metrics, "ws_refused_too_many_sockets");
        s_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                strcmp(limit, "ws_max_per_device") == 0
                    ? "too many WebSockets open for this device (ws_max_per_device)"
                    : "too many WebSockets open for this user (ws_max_per_user)");
    } else if (a->result == AUTH_OK) {
        s_attach(c, a->user_id, a->device_id);
    } else if (a->result == AUTH_DENIED) {
        metrics_count(c->owner->gw->metrics, "ws_refused_401");
        s_close(c, S_CLOSE_REVOKED, "unauthorized: the token is unknown or was revoked");
    } else {
        s_close(c, S_CLOSE_TRY_AGAIN, "the token could not be verified; try again");
    }
}

int notify_on_open(gw_t *gw, struct lws *wsi, notify_conn_t **conn_p)
{
    notify_t *self = gw->notify;
    preauth_t pa;
    if (!listener_take_preauth(gw->listener, (int)lws_get_socket_fd(wsi), &pa)) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                         (unsigned char *)"not authenticated", 17);
        return -1;
    }
    notify_conn_t *c = calloc(1, sizeof *c);
    c->owner = self;
    c->wsi = wsi;
    c->after = pa.after;
    outbound_attach(gw->outbound, &c->oc, (int)lws_get_socket_fd(wsi), s_shed);
    self->count++;
    *conn_p = c;
    if (!pa.token) {
        s_attach(c, pa.user_id, pa.device_id);
        return 0;
    }
    /* the token of an upgrade the listener did not see: verify it now; the socket
       gets nothing before the answer, and a refusal closes it with 4001 */
    size_t len = strlen(pa.token);
    int64_t user = 0, device = 0;
    auth_result_t r = auth_cache_lookup(gw->auth, pa.token, len, &user, &device);
    c->phase = P_AUTH;
    c->next = self->authing;
    if (self->authing)
        self->authing->prev = c;
    self->authing = c;
    if (r == AUTH_MISS) {
        c->auth_wait =
            auth_cache_verify(gw->auth, pa.token, len, AUTH_FOR_SOCKET, s_on_open_auth, c);
        if (!c->auth_wait) {
            s_authing_unlink(c);
            s_close(c, S_CLOSE_TRY_AGAIN, "no broker is reachable; try again");
        }
    } else {
        auth_answer_t a = {r == AUTH_OK ? AUTH_OK : AUTH_DENIED, user, device, 0, NULL, NULL};
        s_on_open_auth(c, &a);
    }
    sodium_memzero(pa.token, len);
    free(pa.token);
    return 0;
}

/* One whole client message. */
static void s_on_message(notify_conn_t *c, const uint8_t *data, size_t len, bool binary)
{
    char why[200];
    if (notify_msg_parse(data, len, binary, why, sizeof why) == NOTIFY_MSG_PING)
        s_send_text(c, "{\"type\":\"pong\"}", 15);
    else
        s_send_error(c, "bad_request", why);
}

int notify_on_receive(notify_conn_t *c, const void *data, size_t len)
{
    if (!c || c->phase == P_CLOSING)
        return 0;
    struct lws *wsi = c->wsi;
    size_t remaining = lws_remaining_packet_payload(wsi);
    bool last = lws_is_final_fragment(wsi) && remaining == 0;
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    switch (notify_rx_feed(&c->rx, data, len, last, remaining,
                           c->owner->gw->cfg.max_ws_message_bytes, &msg, &msg_len)) {
    case NOTIFY_RX_MORE:
        return 0;
    case NOTIFY_RX_MESSAGE:
        s_on_message(c, msg, msg_len, lws_frame_is_binary(wsi));
        notify_rx_reset(&c->rx);
        return 0;
    case NOTIFY_RX_TOO_BIG:
        metrics_count(c->owner->gw->metrics, "ws_close_1009");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too large", 17);
        return -1;
    case NOTIFY_RX_NOMEM:
        break;
    }
    return -1;
}

int notify_on_writeable(notify_conn_t *c)
{
    if (!c)
        return 0;
    if (c->phase == P_CLOSING) {
        c->lws_bytes = 0;
        s_account(c);
        /* The close frame is written here, then the socket closed. Not
           lws_close_reason() + return -1: libwebsockets 4.1 built with _DEBUG closes a
           second time right after a writeable callback returns -1 under libuv, which
           kills the socket before its own close frame goes out. */
        unsigned char buf[LWS_PRE + 2 + 123];
        size_t rlen = strlen(c->close_reason);
        if (rlen > 123)
            rlen = 123;
        buf[LWS_PRE] = (unsigned char)(c->close_code >> 8);
        buf[LWS_PRE + 1] = (unsigned char)(c->close_code & 0xff);
        memcpy(buf + LWS_PRE + 2, c->close_reason, rlen);
        lws_write(c->wsi, buf + LWS_PRE, 2 + rlen, (enum lws_write_protocol)S_WRITE_CLOSE);
        return -1;
    }
    if (!c->hello_queued)
        return 0;
    /* called only once libwebsockets wrote all it buffered */
    c->lws_bytes = 0;
    s_msg_t *m = c->out.head;
    if (m) {
        if (s_write_fragment(c, m->text, &m->off) != 0)
            return -1;
        if (m->off == m->text->len)
            s_msg_free(s_pop(&c->out));
    }
    s_account(c);
    if (c->out.head || c->lws_bytes)
        lws_callback_on_writable(c->wsi);
    if (c->phase == P_REPLAY && s_wants_page(c))
        s_next_page(c);
    return 0;
}

void notify_on_closed(notify_conn_t **conn_p)
{
    notify_conn_t *c = *conn_p;
    if (!c)
        return;
    *conn_p = NULL;
    notify_t *self = c->owner;
    gw_t *gw = self->gw;
    if (c->call) {
        upstream_cancel(gw->upstream, &c->call, false);
        self->inflight--;
    }
    s_wait_unlink(self, c);
    s_settle_remove(self, c);
    s_user_t *u = c->user;
    outbound_detach(&c->oc);
    if (!u) { /* closed before its token was verified */
        auth_cache_cancel(gw->auth, &c->auth_wait);
        s_authing_unlink(c);
        self->count--;
        s_clear(&c->out);
        s_clear(&c->held);
        notify_rx_reset(&c->rx);
        free(c);
        return;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        u->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    u->count--;
    self->count--;
    bool device_still_open = false;
    for (notify_conn_t *o = u->conns; o; o = o->next)
        if (o->device_id == c->device_id)
            device_still_open = true;
    if (!device_still_open && c->close_code != S_CLOSE_REVOKED)
        s_set_active(self, u->user_id, c->device_id, false);
    if (u->count == 0) {
        int64_t user_id = u->user_id;
        char key[24];
        snprintf(key, sizeof key, "%" PRId64, user_id);
        s_verify_forget(self, u);
        if (u->gap_since_ms)
            self->gapped--;
        s_clear(&u->pending);
        zhashx_delete(self->users, key); /* frees u */
        events_unsubscribe(gw->events, user_id);
    }
    s_clear(&c->out);
    s_clear(&c->held);
    notify_rx_reset(&c->rx);
    free(c);
    s_pump(self);
}

/* ---- events -------------------------------------------------------------------------- */

/* An event, in order, to every socket of u that takes it (held until live). */
/* An event, in order, to every socket of u that takes it (held until live); t's
   reference is the caller's, given up here. Rendered once: every socket gets a
   reference to the same text. */
static void s_fanout(notify_t *self, s_user_t *u, s_text_t *t)
{
    for (notify_conn_t *c = u->conns, *next; c; c = next) {
        next = c->next;
        if (c->phase == P_CLOSING)
            continue;
        if (c->phase == P_LIVE && t->kind == K_ITEM &&
            (t->seq <= c->threshold || t->source_device == c->device_id))
            continue;
        if (c->phase == P_LIVE) {
            s_send(c, t);
        } else if (c->held.count >= self->gw->cfg.ws_queue_max ||
                   c->held.bytes + s_text_cost(t) > self->gw->cfg.ws_queue_max_bytes) {
            s_close(c, S_CLOSE_BEHIND,
                    "more than ws_queue_max(_bytes) of events during replay; "
                    "reconnect with after=");
        } else if (!outbound_reserve(&c->oc, s_text_cost(t))) {
            s_shed(&c->oc, OUTBOUND_BUDGET);
        } else {
            s_msg_t *m = s_msg_new(t);
            if (!m) {
                s_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
                continue;
            }
            s_push(&c->held, m);
            s_account(c);
        }
    }
    s_text_unref(t);
}

/* Gives up on a missing seq (an event lost on the way, or a DB worker killed between
   its COMMIT and its PUBLISH): every socket of u is closed with 4002 and reconnects
   with after=<the last seq it got>, so its replay reads what is missing. */
static void s_resync(notify_t *self, s_user_t *u, const char *why)
{
    slog_warn("notify: user %" PRId64 ": %s; its sockets reconnect to replay it", u->user_id,
              why);
    metrics_count(self->gw->metrics, "ws_seq_gap_resync");
    for (notify_conn_t *c = u->conns; c; c = c->next)
        if (c->phase != P_CLOSING)
            s_close(c, S_CLOSE_BEHIND, "an event was missed; reconnect with after=");
    s_clear(&u->pending);
    u->next_seq = 0;
    if (u->gap_since_ms)
        self->gapped--;
    u->gap_since_ms = 0;
}

/* Sends what pending holds from next_seq on, and notes a gap that remains. */
static void s_release(notify_t *self, s_user_t *u)
{
    s_msg_t *m;
    while ((m = u->pending.head) &&
           (m->text->kind != K_ITEM || m->text->seq <= u->next_seq)) {
        s_pop(&u->pending);
        s_text_t *t = m->text;
        if (t->kind == K_ITEM && t->seq < u->next_seq) {
            s_msg_free(m); /* before the first hello's seq, or a duplicate */
            continue;
        }
        if (t->kind == K_ITEM)
            u->next_seq = t->seq + 1;
        free(m); /* its reference goes to s_fanout */
        s_fanout(self, u, t);
    }
    bool gap = u->pending.head != NULL;
    if (gap && !u->gap_since_ms) {
        u->gap_since_ms = clock_now_ms();
        self->gapped++;
    } else if (!gap && u->gap_since_ms) {
        u->gap_since_ms = 0;
        self->gapped--;
    }
}

/* Items go into pending by seq, deletes behind what is there; then what can go,
   goes. Until the first hello of u says where the seqs stand, everything waits
   (every socket of u is still before its hello then, holding anyway). */
static void s_order(notify_t *self, s_user_t *u, s_msg_t *m)
{
    if (m->text->kind == K_ITEM) {
        s_msg_t **p = &u->pending.head;
        while (*p && !((*p)->text->kind == K_ITEM && (*p)->text->seq > m->text->seq))
            p = &(*p)->next;
        m->next = *p;
        *p = m;
        if (!m->next)
            u->pending.tail = m;
        u->pending.count++;
        u->pending.bytes += s_msg_size(m);
    } else {
        s_push(&u->pending, m);
    }
    const gw_config_t *cfg = &self->gw->cfg;
    if (u->pending.count > cfg->ws_queue_max || u->pending.bytes > cfg->ws_queue_max_bytes) {
        s_resync(self, u, "more than ws_queue_max(_bytes) of events wait for a missing seq");
        return;
    }
    if (u->next_seq > 0)
        s_release(self, u);
}

/* The first hello of u tells where its seqs stand: live items start after it. */
static void s_baseline(notify_t *self, s_user_t *u, int64_t latest)
{
    if (u->next_seq > 0)
        return;
    u->next_seq = latest + 1;
    s_release(self, u);
}

void notify_user_event(notify_t *self, int64_t user_id, const msgpack_object *event)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, user_id);
    s_user_t *u = zhashx_lookup(self->users, key);
    if (!u)
        return;
    const msgpack_object *type = mp_get(event, "type");
    s_text_t *t = NULL;
    if (mp_str_eq(type, "clipboard.item")) {
        const msgpack_object *item = mp_get(event, "item");
        if (!item || item->type != MSGPACK_OBJECT_MAP || !(t = s_item_text(item))) {
            slog_warn("notify: clipboard.item event without a usable item");
            return;
        }
        int64_t source;
        if (mp_get_int(event, "source_device_id", &source))
            t->source_device = source;
    } else if (mp_str_eq(type, "clipboard.deleted")) {
        int64_t id;
        if (!mp_get_int(event, "id", &id)) {
            slog_warn("notify: clipboard.deleted event without an id");
            return;
        }
        char text[96];
        int n = snprintf(text, sizeof text,
                         "{\"type\":\"clipboard.deleted\",\"id\":\"%" PRId64 "\"}", id);
        if (!(t = s_text_new(text, (size_t)n, K_DELETED)))
            return;
    } else {
        return; /* device.revoked is handled by the gateway; others are not for sockets */
    }
    s_msg_t *m = s_msg_new(t); /* its place in the user's order */
    s_text_unref(t);
    if (!m)
        return;
    s_order(self, u, m);
}

void notify_device_revoked(notify_t *self, int64_t user_id, int64_t device_id)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, user_id);
    s_user_t *u = zhashx_lookup(self->users, key);
    if (!u)
        return;
    for (notify_conn_t *c = u->conns; c; c = c->next)
        if (c->device_id == device_id)
            s_close(c, S_CLOSE_REVOKED, "device revoked");
}

void notify_shutdown(notify_t *self)
{
    while (self->authing) {
        notify_conn_t *c = self->authing;
        s_authing_unlink(c);
        s_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
    }
    for (s_user_t *u = zhashx_first(self->users); u; u = zhashx_next(self->users))
        for (notify_conn_t *c = u->conns; c; c = c->next)
            s_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
}
