/*  client.c - SMP/1 client with a pending-call table and an in-flight cap. See
    client.h. */
#include "client.h"
#include "brokerlink.h"
#include "idtable.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"
#include "smp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long after its deadline a sent call is given up: the broker answers 504 at
   the deadline itself, so only a broker that went away makes this fire. */
#define S_GRACE_MS 1000
/* A waiting call with less budget than this left is timed out here instead of sent:
   it would only reach a db worker as it expires, and be aborted there mid-query. */
#define S_MIN_SEND_MS 250

typedef enum { S_WAITING, S_SENT } s_state_t;

typedef struct {
    uint64_t id;
    s_state_t state;
    client_priority_t priority;
    char service[SMP_SERVICE_MAX + 1];
    void *body; /* while waiting: the packed request (owned) */
    size_t size;
    int64_t deadline_at; /* clock_now_ms() + budget */
    client_reply_fn *fn; /* NULL once forgotten */
    void *arg;
    timers_entry_t timer; /* deadline (+ grace once sent), or "now" for a send failure */
    bool send_failed;
    size_t broker;      /* once sent: the index of the link it went out on */
    void *queue_handle; /* in a waiting queue */
    client_t *owner;
} s_call_t;

/*  One link per broker, so that the calls a broker took with it when it went
    away are known: its connection's DISCONNECTED event answers them at once
    instead of at their deadlines, which for a begin or a finish is up to 30 s
    (actor.c retries those with their idempotency keys). */
typedef struct {
    client_t *owner;
    size_t index;
    brokerlink_t link;
} s_broker_t;

struct client_t {
    zloop_t *loop;
    timers_t *timers;
    s_broker_t *brokers;
    size_t broker_count;
    size_t next_broker; /* round robin */
    zhashx_t *calls;    /* id -> s_call_t, waiting or sent */
    zlistx_t *urgent;   /* waiting calls, FIFO */
    zlistx_t *background;
    size_t max_in_flight;
    size_t in_flight;
    uint64_t next_id;
    msgpack_zone zone; /* for parsing replies; cleared after each */
};

static void s_call_free(client_t *self, s_call_t *call)
{
    timers_clear(self->timers, &call->timer);
    if (call->queue_handle)
        zlistx_delete(call->priority == CLIENT_URGENT ? self->urgent : self->background,
                      call->queue_handle);
    if (call->state == S_SENT)
        self->in_flight--;
    zhashx_delete(self->calls, idtable_key(call->id));
    free(call->body);
    free(call);
}

/* A reply the client makes itself (timeout, cannot send), delivered like a real one. */
static void s_fake_reply(client_t *self, s_call_t *call, int status, const char *code,
                         const char *message)
{
    client_reply_fn *fn = call->fn;
    void *arg = call->arg;
    s_call_free(self, call);
    if (!fn)
        return;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    mp_error_body(&buf, status, code, message);
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(&self->zone);
    if (msgpack_unpack(buf.data, buf.size, &off, &self->zone, &obj) == MSGPACK_UNPACK_SUCCESS)
        fn(arg, status, &obj);
    msgpack_sbuffer_destroy(&buf);
}

static void s_pump(client_t *self);

static void s_on_timer(void *arg)
{
    s_call_t *call = arg;
    client_t *self = call->owner;
    if (call->send_failed)
        s_fake_reply(self, call, 503, "unavailable", "cannot send the request to the broker");
    else if (call->state == S_WAITING)
        s_fake_reply(self, call, 504, "timeout",
                     "the request waited its whole deadline in the stream worker");
    else
        s_fake_reply(self, call, 504, "timeout", "no reply from the broker within the deadline");
    s_pump(self);
}

static void s_send(client_t *self, s_call_t *call)
{
    int64_t now = clock_now_ms();
    int64_t left = call->deadline_at - now;
    call->state = S_SENT;
    self->in_flight++;
    char rid[24];
    snprintf(rid, sizeof rid, "s%" PRIx64, call->id);
    smp_msg_t m = {.command = SMP_REQUEST,
                   .service = smp_bytes_str(call->service),
                   .request_id = smp_bytes_str(rid),
                   .deadline_ms = left > 0 ? (uint32_t)left : 1,
                   .body = {call->body, call->size}};
    /* IMMEDIATE: a DEALER with no live connection refuses at once; then the next
       broker gets the call, with the message built again (a refused send may have
       consumed it), so the usual first-try success costs one build */
    bool sent = false;
    for (size_t tries = 0; !sent && tries < self->broker_count; tries++) {
        s_broker_t *broker = &self->brokers[self->next_broker++ % self->broker_count];
        zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
        if (!msg)
            break;
        if (zmsg_send(&msg, broker->link.sock) == 0) {
            sent = true;
            call->broker = broker->index;
        }
        zmsg_destroy(&msg);
    }
    if (!sent) {
        call->send_failed = true;
        timers_set(self->timers, &call->timer, now, s_on_timer, call);
    } else {
        timers_set(self->timers, &call->timer, call->deadline_at + S_GRACE_MS, s_on_timer, call);
    }
    free(call->body);
    call->body = NULL;
}

/* Sends waiting calls while there is room, urgent ones first. */
static void s_pump(client_t *self)
{
    while (self->in_flight < self->max_in_flight) {
        zlistx_t *queue = zlistx_size(self->urgent) ? self->urgent : self->background;
        s_call_t *call = zlistx_first(queue);
        if (!call)
            return;
        zlistx_delete(queue, call->queue_handle);
        call->queue_handle = NULL;
        if (call->deadline_at - clock_now_ms() < S_MIN_SEND_MS) {
            s_fake_reply(self, call, 504, "timeout",
                         "the request waited its whole deadline in the stream worker");
            continue;
        }
        s_send(self, call);
    }
}

static void s_on_reply(client_t *self, zmsg_t *zmsg)
{
    smp_msg_t m;
    const char *why = NULL;
    msgpack_zone_clear(&self->zone);
    if (smp_parse(zmsg, SMP_BROKER_TO_CLIENT, &self->zone, &m, &why) != 0) {
        slog_warn("client: bad message from the broker: %s", why);
        return;
    }
    if (m.command != SMP_REPLY)
        return; /* the ops we call do not stream */
    char rid[24];
    uint64_t id = 0;
    if (m.request_id.size < 2 || m.request_id.size >= sizeof rid || m.request_id.data[0] != 's')
        return;
    memcpy(rid, m.request_id.data + 1, m.request_id.size - 1);
    rid[m.request_id.size - 1] = 0;
    char *end;
    id = strtoull(rid, &end, 16);
    if (*end || id == 0)
        return;
    s_call_t *call = zhashx_lookup(self->calls, idtable_key(id));
    if (!call || call->state != S_SENT) {
        slog_debug("client: reply to a call no longer waiting (s%s)", rid);
        return;
    }
    client_reply_fn *fn = call->fn;
    void *arg = call->arg;
    s_call_free(self, call);
    if (fn)
        fn(arg, m.status, &m.body_obj);
}

static int s_on_readable(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    s_broker_t *broker = arg;
    client_t *self = broker->owner;
    for (int n = 0; n < 1000 && (zsock_events(sock) & ZMQ_POLLIN); n++) {
        zmsg_t *msg = zmsg_recv_nowait(sock);
        if (!msg)
            break;
        s_on_reply(self, msg);
        zmsg_destroy(&msg);
    }
    s_pump(self);
    return 0;
}

/*  The connection to a broker went away (killed, restarted, or silent past the
    ZeroMQ heartbeat timeout): what we sent on it will never be answered. Each such
    call is answered 503 now; it may or may not have been applied, which the
    callers handle (idempotency keys, the finish's 409 check). */
static void s_broker_lost(client_t *self, s_broker_t *broker)
{
    size_t count = 0, cap = zhashx_size(self->calls);
    uint64_t *ids = cap ? malloc(cap * sizeof *ids) : NULL;
    for (s_call_t *call = zhashx_first(self->calls); ids && call; call = zhashx_next(self->calls))
        if (call->state == S_SENT && !call->send_failed && call->broker == broker->index)
            ids[count++] = call->id;
    if (count)
        slog_warn("client: lost the connection to the broker at %s with %zu request(s) in "
                  "flight; answering them 503",
                  broker->link.endpoint, count);
    /* by id, looked up again: a callback may forget or finish other calls */
    for (size_t i = 0; i < count; i++) {
        s_call_t *call = zhashx_lookup(self->calls, idtable_key(ids[i]));
        if (call && call->state == S_SENT)
            s_fake_reply(self, call, 503, "broker_lost",
                         "the connection to the broker was lost with the request in flight; "
                         "it may or may not have been applied");
    }
    free(ids);
    s_pump(self);
}

static int s_on_monitor(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    s_broker_t *broker = arg;
    if (brokerlink_drops(&broker->link))
        s_broker_lost(broker->owner, broker);
    return 0;
}

static int s_broker_open(client_t *self, s_broker_t *broker, const char *endpoint,
                         const curve_t *curve)
{
    broker->owner = self;
    if (brokerlink_open(&broker->link, endpoint, curve, "client") != 0)
        return -1;
    if (zloop_reader(self->loop, broker->link.sock, s_on_readable, broker) != 0 ||
        zloop_reader(self->loop, broker->link.monitor, s_on_monitor, broker) != 0)
        return -1;
    return 0;
}

static void s_broker_close(client_t *self, s_broker_t *broker)
{
    if (broker->link.monitor)
        zloop_reader_end(self->loop, broker->link.monitor);
    if (broker->link.sock)
        zloop_reader_end(self->loop, broker->link.sock);
    brokerlink_close(&broker->link);
}

client_t *client_new(zloop_t *loop, timers_t *timers, const char *endpoints, const curve_t *curve,
                     size_t max_in_flight)
{
    client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->loop = loop;
    self->timers = timers;
    self->max_in_flight = max_in_flight ? max_in_flight : 1;
    self->next_id = 1;
    msgpack_zone_init(&self->zone, 4096);
    self->calls = idtable_new(false);
    self->urgent = zlistx_new();
    self->background = zlistx_new();
    char *list = strdup(endpoints ? endpoints : "");
    size_t n = 0;
    for (const char *c = list; c && *c; c++)
        n += *c == ',';
    self->brokers = calloc(n + 1, sizeof *self->brokers);
    if (!self->calls || !self->urgent || !self->background || !list || !self->brokers) {
        free(list);
        client_destroy(&self);
        return NULL;
    }
    int rc = 0;
    for (char *save = NULL, *ep = strtok_r(list, ", ", &save); ep && rc == 0;
         ep = strtok_r(NULL, ", ", &save)) {
        s_broker_t *broker = &self->brokers[self->broker_count];
        broker->index = self->broker_count++;
        rc = s_broker_open(self, broker, ep, curve);
    }
    free(list);
    if (rc != 0 || self->broker_count == 0) {
        if (self->broker_count == 0)
            slog_error("client: no broker endpoint given");
        client_destroy(&self);
        return NULL;
    }
    return self;
}

void client_destroy(client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    client_t *self = *self_p;
    if (self->calls) {
        s_call_t *call;
        while ((call = zhashx_first(self->calls)))
            s_call_free(self, call);
    }
    for (size_t i = 0; self->brokers && i < self->broker_count; i++)
        s_broker_close(self, &self->brokers[i]);
    free(self->brokers);
    zhashx_destroy(&self->calls);
    zlistx_destroy(&self->urgent);
    zlistx_destroy(&self->background);
    msgpack_zone_destroy(&self->zone);
    free(self);
    *self_p = NULL;
}

uint64_t client_call(client_t *self, const char *service, const void *body, size_t size,
                     uint32_t deadline_ms, client_priority_t priority, client_reply_fn *fn,
                     void *arg)
{
    s_call_t *call = calloc(1, sizeof *call);
    if (!call)
        return 0;
    call->body = malloc(size ? size : 1);
    if (!call->body) {
        free(call);
        return 0;
    }
    memcpy(call->body, body, size);
    call->size = size;
    call->id = self->next_id++;
    call->owner = self;
    call->priority = priority;
    snprintf(call->service, sizeof call->service, "%s", service);
    call->deadline_at = clock_now_ms() + (deadline_ms ? deadline_ms : SMP_DEFAULT_DEADLINE_MS);
    call->fn = fn;
    call->arg = arg;
    call->state = S_WAITING;
    zhashx_insert(self->calls, idtable_key(call->id), call);
    if (self->in_flight < self->max_in_flight && zlistx_size(self->urgent) == 0 &&
        (priority == CLIENT_URGENT || zlistx_size(self->background) == 0)) {
        s_send(self, call);
    } else {
        call->queue_handle =
            zlistx_add_end(priority == CLIENT_URGENT ? self->urgent : self->background, call);
        timers_set(self->timers, &call->timer, call->deadline_at, s_on_timer, call);
    }
    return call->id;
}

void client_forget(client_t *self, uint64_t id)
{
    if (!id)
        return;
    s_call_t *call = zhashx_lookup(self->calls, idtable_key(id));
    if (!call)
        return;
    if (call->state == S_WAITING)
        s_call_free(self, call);
    else
        call->fn = NULL; /* still counted in flight until its reply or timeout */
}

static msgpack_packer s_request_start(msgpack_sbuffer *buf, const char *op, int64_t user_id,
                                      int64_t device_id, uint32_t nargs, const char *idem)
{
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, idem ? 5 : 3);
    mp_pack_kv_str(&pk, "op", op);
    if (idem) {
        mp_pack_kv_str(&pk, "idem", idem);
        mp_pack_kv_bool(&pk, "idempotent", true);
    }
    mp_pack_cstr(&pk, "auth");
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "user_id", user_id);
    mp_pack_kv_int(&pk, "device_id", device_id);
    mp_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, nargs);
    return pk;
}

msgpack_packer client_request_start(msgpack_sbuffer *buf, const char *op, int64_t user_id,
                                    int64_t device_id, uint32_t nargs)
{
    return s_request_start(buf, op, user_id, device_id, nargs, NULL);
}

msgpack_packer client_request_start_idem(msgpack_sbuffer *buf, const char *op, int64_t user_id,
                                         int64_t device_id, uint32_t nargs, const char *idem)
{
    return s_request_start(buf, op, user_id, device_id, nargs, idem);
}

size_t client_in_flight(const client_t *self)
{
    return self->in_flight;
}

size_t client_waiting(const client_t *self)
{
    return zlistx_size(self->urgent) + zlistx_size(self->background);
}
