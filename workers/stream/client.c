/*  client.c - SMP/1 client with a pending-call table and an in-flight cap. See
    client.h. */
#include "client.h"
#include "idtable.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"
#include "smp.h"

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
/* ZeroMQ-level PINGs to each broker, and how long one may stay silent before its
   connection is taken for cut (the same numbers as common/client.c) */
#define S_HEARTBEAT_IVL_MS 1000
#define S_HEARTBEAT_TTL_MS 3000

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
    void *queue_handle; /* in a waiting queue */
    client_t *owner;
} s_call_t;

struct client_t {
    zloop_t *loop;
    timers_t *timers;
    zsock_t *sock;    /* DEALER to the broker frontend(s) */
    zhashx_t *calls;  /* id -> s_call_t, waiting or sent */
    zlistx_t *urgent; /* waiting calls, FIFO */
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
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    if (!msg || zmsg_send(&msg, self->sock) != 0) {
        zmsg_destroy(&msg);
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
    client_t *self = arg;
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

client_t *client_new(zloop_t *loop, timers_t *timers, const char *endpoints, size_t max_in_flight)
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
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->calls || !self->urgent || !self->background || !self->sock) {
        client_destroy(&self);
        return NULL;
    }
    zsock_set_linger(self->sock, 0);
    zsock_set_sndhwm(self->sock, 100000);
    zsock_set_rcvhwm(self->sock, 100000);
    zsock_set_sndtimeo(self->sock, 0); /* never block the loop */
    /* Several brokers: a request must only go to one that is connected. Without
       IMMEDIATE the DEALER keeps a pipe for a broker that died and round-robins
       every other request into it; without heartbeats a cut link (no FIN ever
       comes) looks connected for as long as TCP retransmits. With both, a broker
       that is gone or silent for S_HEARTBEAT_TTL_MS is skipped until it is back. */
    zsock_set_immediate(self->sock, 1);
    zsock_set_heartbeat_ivl(self->sock, S_HEARTBEAT_IVL_MS);
    zsock_set_heartbeat_timeout(self->sock, S_HEARTBEAT_TTL_MS);
    char *list = strdup(endpoints);
    int connected = 0;
    for (char *save = NULL, *ep = strtok_r(list, ", ", &save); ep;
         ep = strtok_r(NULL, ", ", &save)) {
        if (zsock_connect(self->sock, "%s", ep) != 0) {
            slog_error("client: cannot connect to %s", ep);
            connected = -1;
            break;
        }
        connected++;
    }
    free(list);
    if (connected <= 0 || zloop_reader(loop, self->sock, s_on_readable, self) != 0) {
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
    if (self->sock && self->loop)
        zloop_reader_end(self->loop, self->sock);
    zsock_destroy(&self->sock);
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
