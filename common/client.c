/*  client.c - the client library (sluice/client.h): calls over SMP/1 through one or
    more brokers, with deadlines, partials, CANCEL and events.

    One DEALER per broker, each with ZMQ_IMMEDIATE so that a send to a broker with no
    live connection fails at once (EAGAIN) instead of queueing behind a dead peer,
    and ZeroMQ heartbeats so that a cut link (no FIN ever arrives) is noticed within
    a few seconds. A call goes to the next broker in turn that takes it; CANCEL goes
    to the broker that has the call, because the broker knows a request by the
    client's routing id on that connection.

    Every call gets exactly one reply: from the broker, or from here when no broker
    was reachable before the deadline (503) or the broker never answered (504, at
    the deadline plus SL_CLIENT_GRACE_MS: a broker that died takes its requests with
    it). Request ids are "c<hex counter>", never reused by one client, so a late
    reply for a call answered here is recognised and dropped.

    The sockets are raw libzmq sockets in the client's own context: czmq's zsock would
    install czmq's SIGINT/SIGTERM handler in whatever program links this library.
*/
#include "sluice/client.h"
#include "clock.h"
#include "curve.h"
#include "mp.h"
#include "smp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define S_ENDPOINTS_MAX 64
#define S_RETRY_MS 20           /* calls waiting for a broker connection are retried this often */
#define S_HEARTBEAT_IVL_MS 1000 /* ZeroMQ-level PINGs to each broker */
#define S_HEARTBEAT_TTL_MS 3000 /* a broker silent this long is cut off */
#define S_LINGER_MS 200         /* CANCELs queued at destroy get this long to leave */
#define S_BATCH 256             /* messages read from one socket per dispatch pass */
#define S_DEDUPE_MS 2000        /* an event seen again this soon (another broker's copy) */
#define S_DEDUPE_MAX 65536      /* events remembered for that, at most */

typedef struct {
    uint64_t id;
    char rid[SMP_REQUEST_ID_MAX + 1]; /* "c<hex id>" */
    char service[SMP_SERVICE_MAX + 1];
    uint8_t *body; /* kept until sent */
    size_t size;
    int64_t deadline;    /* monotonic ms: the broker's deadline */
    int link;            /* broker it went to, -1 while waiting for one */
    bool cancelled;      /* cancelled while still waiting: answered 499 by dispatch */
    void *unsent_handle; /* place in the unsent list while waiting */
    sl_call_handlers_t handlers;
    void *arg;
} s_call_t;

struct sl_client_t {
    void *ctx;    /* own ZeroMQ context */
    void **links; /* DEALER per broker frontend */
    size_t link_count;
    size_t next_link; /* round robin */
    void *sub;        /* SUB to every events output, NULL until subscribed */
    size_t sub_count; /* events outputs it connects to: above 1, copies are dropped */
    zhashx_t *seen;   /* event hash -> when seen + 1, for the last S_DEDUPE_MS */
    struct {
        uint64_t hash;
        int64_t at;
    } * ring; /* the same events, oldest first, to forget them in order */
    size_t ring_head, ring_len;
    sl_event_fn *event_fn;
    void *event_arg;
    zhashx_t *calls;  /* rid -> s_call_t, owned */
    zlistx_t *unsent; /* s_call_t waiting for a broker, oldest first */
    uint64_t next_id;
    int64_t next_expiry; /* earliest deadline among calls (INT64_MAX: none) */
    bool poke;           /* we sent since the last dispatch: a ZMQ_FD edge may be gone */
    msgpack_zone zone;
    msgpack_sbuffer buf;
    curve_t curve; /* CurveZMQ keys for every socket; disabled: plain TCP */
};

/* ---------------------------------------------------------------- helpers */

/* Splits "a,b,c" and calls fn for each endpoint. Returns -1 when one is empty or
   too many are given. */
static int s_each_endpoint(const char *list, int (*fn)(void *, const char *), void *arg)
{
    if (!list || !*list)
        return -1;
    char *copy = strdup(list);
    if (!copy)
        return -1;
    int rc = 0, count = 0;
    char *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p && rc == 0; p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ')
            p++;
        if (!*p || ++count > S_ENDPOINTS_MAX)
            rc = -1;
        else
            rc = fn(arg, p);
    }
    free(copy);
    return count ? rc : -1;
}

static void s_call_free(s_call_t **call_p)
{
    if (*call_p) {
        free((*call_p)->body);
        free(*call_p);
        *call_p = NULL;
    }
}

/* Reads one whole message without blocking; NULL when none is waiting. */
static zmsg_t *s_recv(void *sock)
{
    zmsg_t *msg = NULL;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            zmsg_destroy(&msg); /* only a first part can fail in practice */
            return NULL;
        }
        if (!msg)
            msg = zmsg_new();
        zmsg_addmem(msg, zmq_msg_data(&part), zmq_msg_size(&part));
        bool more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (!more)
            return msg;
    }
}

/* Sends msg whole or not at all, never blocking: -1 when the socket takes nothing
   now (no live connection, or its queue is full). */
static int s_send(void *sock, zmsg_t *msg)
{
    size_t n = zmsg_size(msg), i = 0;
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg), i++) {
        int flags = (i + 1 < n ? ZMQ_SNDMORE : 0) | (i == 0 ? ZMQ_DONTWAIT : 0);
        /* once the first part is queued, the rest of a multipart message always is */
        if (zmq_send(sock, zframe_data(f), zframe_size(f), flags) < 0 && i == 0)
            return -1;
    }
    return 0;
}

/* Hands the caller its one reply and forgets the call. */
static void s_finish(sl_client_t *self, s_call_t *call, int status, const uint8_t *body,
                     size_t size, bool local)
{
    zhashx_delete(self->calls, call->rid);
    if (call->unsent_handle)
        zlistx_delete(self->unsent, call->unsent_handle);
    sl_reply_t reply = {status, (uint8_t *)body, size, local};
    sl_call_handlers_t h = call->handlers;
    void *arg = call->arg;
    uint64_t id = call->id;
    s_call_free(&call);
    h.on_reply(arg, id, &reply);
}

/* A reply made here, shaped like the broker's. */
static void s_finish_error(sl_client_t *self, s_call_t *call, int status, const char *code,
                           const char *message)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    mp_error_body(&buf, status, code, message);
    s_finish(self, call, status, (const uint8_t *)buf.data, buf.size, true);
    msgpack_sbuffer_destroy(&buf);
}

/* Sends call to the next broker that takes it. Returns false when none does. */
static bool s_try_send(sl_client_t *self, s_call_t *call, int64_t now)
{
    int64_t left = call->deadline - now;
    smp_msg_t m = {.command = SMP_REQUEST,
                   .service = smp_bytes_str(call->service),
                   .request_id = {(const uint8_t *)call->rid, strlen(call->rid)},
                   .deadline_ms = (uint32_t)(left < 1            ? 1
                                             : left > UINT32_MAX ? UINT32_MAX
                                                                 : left),
                   .body = {call->body, call->size}};
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    if (!msg)
        return false;
    bool sent = false;
    for (size_t k = 0; k < self->link_count && !sent; k++) {
        size_t link = (self->next_link + k) % self->link_count;
        if (s_send(self->links[link], msg) == 0) {
            sent = true;
            call->link = (int)link;
            self->next_link = link + 1;
        }
    }
    zmsg_destroy(&msg);
    if (sent) {
        free(call->body);
        call->body = NULL;
        self->poke = true;
    }
    return sent;
}

/* ---------------------------------------------------------------- life */

static int s_add_link(void *arg, const char *endpoint)
{
    sl_client_t *self = arg;
    void **links = realloc(self->links, (self->link_count + 1) * sizeof *links);
    if (!links)
        return -1;
    self->links = links;
    void *sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!sock)
        return -1;
    if (curve_apply_client(&self->curve, sock) != 0) {
        int err = errno;
        zmq_close(sock);
        errno = err;
        return -1;
    }
    int on = 1, linger = S_LINGER_MS, ivl = S_HEARTBEAT_IVL_MS, ttl = S_HEARTBEAT_TTL_MS;
    zmq_setsockopt(sock, ZMQ_IMMEDIATE, &on, sizeof on);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &ttl, sizeof ttl);
    if (zmq_connect(sock, endpoint) != 0) {
        int err = errno;
        zmq_close(sock);
        errno = err;
        return -1;
    }
    self->links[self->link_count++] = sock;
    return 0;
}

sl_client_t *sl_client_new(const char *endpoints)
{
    return sl_client_new_curve(endpoints, NULL, NULL, NULL, 0);
}

sl_client_t *sl_client_new_curve(const char *endpoints, const char *cert_path,
                                 const char *broker_cert_path, char *why, size_t why_size)
{
    char reason[512];
    curve_t curve;
    if (curve_load(&curve, cert_path, broker_cert_path, false, reason, sizeof reason) != 0) {
        if (why && why_size)
            snprintf(why, why_size, "%s", reason);
        errno = EINVAL;
        return NULL;
    }
    sl_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->curve = curve;
    msgpack_zone_init(&self->zone, 4096);
    msgpack_sbuffer_init(&self->buf);
    self->ctx = zmq_ctx_new();
    self->calls = zhashx_new();
    self->unsent = zlistx_new();
    self->next_id = 1;
    self->next_expiry = INT64_MAX;
    if (!self->ctx || !self->calls || !self->unsent) {
        sl_client_destroy(&self);
        errno = ENOMEM;
        return NULL;
    }
    if (s_each_endpoint(endpoints, s_add_link, self) != 0) {
        int err = errno ? errno : EINVAL;
        sl_client_destroy(&self);
        errno = err;
        return NULL;
    }
    return self;
}

void sl_client_destroy(sl_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sl_client_t *self = *self_p;
    for (size_t i = 0; i < self->link_count; i++)
        zmq_close(self->links[i]);
    free(self->links);
    if (self->sub)
        zmq_close(self->sub);
    zhashx_destroy(&self->seen);
    free(self->ring);
    zlistx_destroy(&self->unsent);
    if (self->calls) {
        for (s_call_t *call = zhashx_first(self->calls); call; call = zhashx_next(self->calls))
            s_call_free(&call);
        zhashx_destroy(&self->calls);
    }
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    msgpack_zone_destroy(&self->zone);
    msgpack_sbuffer_destroy(&self->buf);
    free(self);
    *self_p = NULL;
}

/* ---------------------------------------------------------------- calls */

/* A request body must be what the broker accepts: one map with an "op" string. */
static bool s_body_ok(sl_client_t *self, const void *body, size_t size)
{
    const char *reason = NULL;
    if (!body || size == 0 || size > SMP_BODY_MAX || !mp_check(body, size, &reason))
        return false;
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(&self->zone);
    if (msgpack_unpack(body, size, &off, &self->zone, &obj) != MSGPACK_UNPACK_SUCCESS)
        return false;
    const char *op;
    size_t len;
    return obj.type == MSGPACK_OBJECT_MAP && mp_get_str(&obj, "op", &op, &len) && len >= 1 &&
           len <= SMP_OP_MAX;
}

int sl_client_send(sl_client_t *self, const char *service, const void *body, size_t size,
                   uint32_t deadline_ms, const sl_call_handlers_t *handlers, void *arg,
                   uint64_t *call_id)
{
    size_t service_len = service ? strlen(service) : 0;
    if (!self || service_len == 0 || service_len > SMP_SERVICE_MAX || !handlers ||
        !handlers->on_reply || !s_body_ok(self, body, size)) {
        errno = EINVAL;
        return -1;
    }
    s_call_t *call = calloc(1, sizeof *call);
    if (!call || !(call->body = malloc(size))) {
        free(call);
        errno = ENOMEM;
        return -1;
    }
    memcpy(call->body, body, size);
    call->size = size;
    call->id = self->next_id++;
    snprintf(call->rid, sizeof call->rid, "c%" PRIx64, call->id);
    memcpy(call->service, service, service_len + 1);
    int64_t now = clock_now_ms();
    call->deadline = now + (deadline_ms ? deadline_ms : SL_CLIENT_DEFAULT_DEADLINE_MS);
    call->link = -1;
    call->handlers = *handlers;
    call->arg = arg;
    zhashx_insert(self->calls, call->rid, call);
    if (call->deadline + SL_CLIENT_GRACE_MS < self->next_expiry)
        self->next_expiry = call->deadline + SL_CLIENT_GRACE_MS;
    /* calls keep their order: a new one never overtakes one waiting for a broker */
    if (zlistx_size(self->unsent) || !s_try_send(self, call, now)) {
        call->unsent_handle = zlistx_add_end(self->unsent, call);
        if (call->deadline < self->next_expiry)
            self->next_expiry = call->deadline;
    }
    if (call_id)
        *call_id = call->id;
    return 0;
}

static s_call_t *s_find(sl_client_t *self, uint64_t id)
{
    char rid[SMP_REQUEST_ID_MAX + 1];
    snprintf(rid, sizeof rid, "c%" PRIx64, id);
    return zhashx_lookup(self->calls, rid);
}

int sl_client_cancel(sl_client_t *self, uint64_t id)
{
    s_call_t *call = self ? s_find(self, id) : NULL;
    if (!call)
        return -1;
    if (call->link < 0) {
        call->cancelled = true; /* answered by the next dispatch, not from inside here */
        self->poke = true;
        return 0;
    }
    smp_msg_t m = {.command = SMP_CANCEL,
                   .request_id = {(const uint8_t *)call->rid, strlen(call->rid)}};
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    if (msg) {
        /* if the broker is unreachable now, the deadline answers the call anyway */
        s_send(self->links[call->link], msg);
        zmsg_destroy(&msg);
        self->poke = true;
    }
    return 0;
}

/* ---------------------------------------------------------------- blocking call */

typedef struct {
    bool done;
    sl_reply_t *reply;
    void (*on_partial)(void *arg, const uint8_t *body, size_t size);
    void *arg;
} s_wait_t;

static void s_wait_partial(void *arg, uint64_t call, const uint8_t *body, size_t size)
{
    (void)call;
    s_wait_t *wait = arg;
    if (wait->on_partial)
        wait->on_partial(wait->arg, body, size);
}

static void s_wait_reply(void *arg, uint64_t call, const sl_reply_t *reply)
{
    (void)call;
    s_wait_t *wait = arg;
    wait->done = true;
    wait->reply->status = reply->status;
    wait->reply->size = reply->size;
    wait->reply->local = reply->local;
    wait->reply->body = malloc(reply->size ? reply->size : 1);
    if (wait->reply->body)
        memcpy(wait->reply->body, reply->body, reply->size);
    else
        wait->reply->size = 0;
}

int sl_client_call(sl_client_t *self, const char *service, const void *body, size_t size,
                   uint32_t deadline_ms,
                   void (*on_partial)(void *arg, const uint8_t *body, size_t size), void *arg,
                   sl_reply_t *reply)
{
    if (!reply) {
        errno = EINVAL;
        return -1;
    }
    memset(reply, 0, sizeof *reply);
    s_wait_t wait = {false, reply, on_partial, arg};
    sl_call_handlers_t handlers = {s_wait_partial, s_wait_reply};
    uint64_t id;
    if (sl_client_send(self, service, body, size, deadline_ms, &handlers, &wait, &id) != 0)
        return -1;
    zmq_pollitem_t items[S_ENDPOINTS_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < self->link_count; i++)
        items[n++] = (zmq_pollitem_t){self->links[i], 0, ZMQ_POLLIN, 0};
    if (self->sub)
        items[n++] = (zmq_pollitem_t){self->sub, 0, ZMQ_POLLIN, 0};
    for (;;) {
        sl_client_dispatch(self);
        if (wait.done)
            return 0;
        int64_t timeout = sl_client_timeout_ms(self);
        /* a deadline always exists while our call is in progress */
        if (zmq_poll(items, (int)n, (long)(timeout < 0 ? S_RETRY_MS : timeout)) < 0 &&
            errno != EINTR)
            return -1; /* the context was terminated under us */
    }
}

void sl_reply_free(sl_reply_t *reply)
{
    if (reply) {
        free(reply->body);
        reply->body = NULL;
        reply->size = 0;
    }
}

/* ---------------------------------------------------------------- events */

typedef struct {
    void *sub;
    size_t count;
} s_sub_t;

static int s_connect_sub(void *arg, const char *endpoint)
{
    s_sub_t *s = arg;
    s->count++;
    return zmq_connect(s->sub, endpoint);
}

static size_t s_key_hash(const void *key)
{
    return (size_t)(uintptr_t)key;
}

static int s_key_compare(const void *a, const void *b)
{
    return (uintptr_t)a < (uintptr_t)b ? -1 : (uintptr_t)a > (uintptr_t)b;
}

/*  With several brokers a worker publishes each event to each, so the same event
    arrives once per broker, within milliseconds. An event byte-identical to one seen
    in the last S_DEDUPE_MS (same topic and body) is that copy, and is dropped. Sluice's
    events carry what makes them unique (an item's seq, a deleted id). */
static bool s_duplicate(sl_client_t *self, smp_bytes_t topic, const uint8_t *body, size_t size,
                        int64_t now)
{
    if (!self->seen || !self->ring)
        return false;
    while (self->ring_len && (self->ring[self->ring_head].at + S_DEDUPE_MS <= now ||
                              self->ring_len == S_DEDUPE_MAX)) {
        void *key = (void *)(uintptr_t)self->ring[self->ring_head].hash;
        if ((intptr_t)zhashx_lookup(self->seen, key) == self->ring[self->ring_head].at + 1)
            zhashx_delete(self->seen, key);
        self->ring_head = (self->ring_head + 1) % S_DEDUPE_MAX;
        self->ring_len--;
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over topic, a 0 byte, body */
    for (size_t i = 0; i < topic.size; i++)
        h = (h ^ topic.data[i]) * 1099511628211ULL;
    h *= 1099511628211ULL;
    for (size_t i = 0; i < size; i++)
        h = (h ^ body[i]) * 1099511628211ULL;
    h |= 1; /* never a NULL key */
    void *key = (void *)(uintptr_t)h;
    if (zhashx_lookup(self->seen, key))
        return true;
    size_t slot = (self->ring_head + self->ring_len) % S_DEDUPE_MAX;
    self->ring[slot].hash = h;
    self->ring[slot].at = now;
    self->ring_len++;
    zhashx_update(self->seen, key, (void *)(intptr_t)(now + 1));
    return false;
}

int sl_client_subscribe(sl_client_t *self, const char *endpoints, const char *prefix,
                        sl_event_fn *fn, void *arg)
{
    if (!self || !fn || !prefix || strlen(prefix) > SMP_TOPIC_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (!self->sub) {
        void *sub = zmq_socket(self->ctx, ZMQ_SUB);
        if (!sub)
            return -1;
        if (curve_apply_client(&self->curve, sub) != 0) {
            int err = errno;
            zmq_close(sub);
            errno = err;
            return -1;
        }
        int linger = 0;
        zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
        s_sub_t s = {sub, 0};
        if (s_each_endpoint(endpoints, s_connect_sub, &s) != 0) {
            int err = errno ? errno : EINVAL;
            zmq_close(sub);
            errno = err;
            return -1;
        }
        self->sub = sub;
        self->sub_count = s.count;
        if (s.count > 1) {
            self->seen = zhashx_new();
            self->ring = malloc(S_DEDUPE_MAX * sizeof *self->ring);
            if (self->seen) {
                zhashx_set_key_duplicator(self->seen, NULL);
                zhashx_set_key_destructor(self->seen, NULL);
                zhashx_set_key_hasher(self->seen, s_key_hash);
                zhashx_set_key_comparator(self->seen, s_key_compare);
            }
        }
    }
    self->event_fn = fn;
    self->event_arg = arg;
    return zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
}

/* ---------------------------------------------------------------- loop */

size_t sl_client_fd_count(const sl_client_t *self)
{
    return self ? self->link_count + (self->sub ? 1 : 0) : 0;
}

int sl_client_fd(const sl_client_t *self, size_t i)
{
    if (!self || i >= sl_client_fd_count(self))
        return -1;
    void *sock = i < self->link_count ? self->links[i] : self->sub;
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &len) != 0)
        return -1;
    return fd;
}

/* One message from a broker: a PARTIAL or the REPLY of a call in progress. Anything
   else (malformed, or for a call answered here already) is dropped. */
static void s_handle_reply(sl_client_t *self, zmsg_t *msg)
{
    smp_msg_t m;
    const char *reason = NULL;
    msgpack_zone_clear(&self->zone);
    if (smp_parse(msg, SMP_BROKER_TO_CLIENT, &self->zone, &m, &reason) != 0)
        return;
    char rid[SMP_REQUEST_ID_MAX + 1];
    memcpy(rid, m.request_id.data, m.request_id.size);
    rid[m.request_id.size] = 0;
    s_call_t *call = zhashx_lookup(self->calls, rid);
    if (!call || call->link < 0)
        return;
    if (m.command == SMP_PARTIAL) {
        if (call->handlers.on_partial)
            call->handlers.on_partial(call->arg, call->id, m.body.data, m.body.size);
    } else {
        s_finish(self, call, m.status, m.body.data, m.body.size, false);
    }
}

static void s_handle_event(sl_client_t *self, zmsg_t *msg)
{
    smp_bytes_t topic;
    msgpack_object obj;
    const char *reason = NULL;
    msgpack_zone_clear(&self->zone);
    if (smp_event_parse(msg, &self->zone, &topic, &obj, &reason) != 0)
        return;
    zframe_t *body = zmsg_last(msg);
    if (self->sub_count > 1 &&
        s_duplicate(self, topic, zframe_data(body), zframe_size(body), clock_now_ms()))
        return;
    if (self->event_fn)
        self->event_fn(self->event_arg, (const char *)topic.data, topic.size, zframe_data(body),
                       zframe_size(body));
}

/* Sends what waits for a broker, answers what waited too long, and answers calls
   whose broker never replied. */
static void s_janitor(sl_client_t *self, int64_t now)
{
    s_call_t *call;
    while ((call = zlistx_first(self->unsent))) {
        if (call->cancelled) {
            s_finish_error(self, call, 499, "cancelled", "cancelled by the client");
        } else if (call->deadline <= now) {
            s_finish_error(self, call, 503, "unavailable",
                           "no broker connection came up before the deadline");
        } else if (s_try_send(self, call, now)) {
            zlistx_delete(self->unsent, call->unsent_handle);
            call->unsent_handle = NULL;
        } else {
            break;
        }
    }
    if (now < self->next_expiry)
        return;
    /* collected first: a callback may start or cancel calls */
    zlistx_t *expired = zlistx_new();
    int64_t next = INT64_MAX;
    for (call = zhashx_first(self->calls); call; call = zhashx_next(self->calls)) {
        int64_t at = call->link < 0 ? call->deadline : call->deadline + SL_CLIENT_GRACE_MS;
        if (at <= now)
            zlistx_add_end(expired, call);
        else if (at < next)
            next = at;
    }
    self->next_expiry = next;
    for (call = zlistx_first(expired); call; call = zlistx_next(expired)) {
        if (call->link < 0)
            s_finish_error(self, call, 503, "unavailable",
                           "no broker connection came up before the deadline");
        else
            s_finish_error(self, call, 504, "timeout", "no reply from the broker in time");
    }
    zlistx_destroy(&expired);
}

int sl_client_dispatch(sl_client_t *self)
{
    if (!self)
        return 0;
    self->poke = false;
    int handled = 0;
    for (size_t i = 0; i < self->link_count; i++) {
        zmsg_t *msg;
        for (int k = 0; k < S_BATCH && (msg = s_recv(self->links[i])); k++, handled++) {
            s_handle_reply(self, msg);
            zmsg_destroy(&msg);
        }
    }
    if (self->sub) {
        zmsg_t *msg;
        for (int k = 0; k < S_BATCH && (msg = s_recv(self->sub)); k++, handled++) {
            s_handle_event(self, msg);
            zmsg_destroy(&msg);
        }
    }
    s_janitor(self, clock_now_ms());
    /* a full batch means more may wait: the next timeout says "now" */
    if (handled >= S_BATCH)
        self->poke = true;
    return handled;
}

int64_t sl_client_timeout_ms(const sl_client_t *self)
{
    if (!self)
        return -1;
    if (self->poke)
        return 0;
    int64_t now = clock_now_ms();
    int64_t timeout = -1;
    if (zlistx_size(self->unsent))
        timeout = S_RETRY_MS;
    if (self->next_expiry != INT64_MAX) {
        int64_t left = self->next_expiry - now;
        left = left < 0 ? 0 : left;
        if (timeout < 0 || left < timeout)
            timeout = left;
    }
    return timeout;
}

size_t sl_client_pending(const sl_client_t *self)
{
    return self ? zhashx_size(self->calls) : 0;
}
