/*  upstream.c - SMP client on the libuv loop. See upstream.h.

    Request ids are a counter rendered in hex: unique for this gateway, which is
    all protocol.md asks. The pending table is a zhashx keyed by that text.
*/
#include "upstream.h"
#include "brokerlink.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"
#include "smp.h"

#include <czmq.h>
#include <inttypes.h>

/* A broker that restarted while holding a request never answers it; past its
   deadline plus this, the call is failed here. */
#define S_GRACE_MS 1000
#define S_DRAIN_MAX 1024 /* messages read per drain before letting the loop breathe */

struct upstream_call_t {
    char id[20]; /* request id, hex counter */
    upstream_fn *fn;
    void *arg;
    int64_t expires_ms; /* deadline + grace, monotonic */
    size_t broker;      /* the link it was sent on */
};

/*  One link per broker: when a broker's connection drops, the calls sent on it
    are answered 503 at once (they will never get a reply) instead of at their
    deadline plus the grace period. */
typedef struct {
    brokerlink_t link;
    uv_poll_t poll;         /* the DEALER's ZMQ_FD */
    uv_poll_t monitor_poll; /* the monitor's ZMQ_FD */
} s_broker_t;

struct upstream_t {
    s_broker_t *brokers;
    size_t broker_count;
    size_t next_broker;  /* round robin */
    size_t open_handles; /* uv handles still to close before self is freed */
    zhashx_t *pending;   /* id -> upstream_call_t (owned) */
    uint64_t next_id;
    msgpack_zone zone;
    bool draining; /* re-entry guard: a callback may send and call drain */
};

static void s_on_poll(uv_poll_t *handle, int status, int events)
{
    (void)status;
    (void)events;
    upstream_drain(handle->data);
}

static size_t s_count_endpoints(const char *endpoints)
{
    size_t n = 1;
    for (const char *p = endpoints; *p; p++)
        n += *p == ',';
    return n;
}

static void s_handle_closed(uv_handle_t *handle)
{
    upstream_t *self = handle->data;
    if (--self->open_handles)
        return;
    for (size_t i = 0; i < self->broker_count; i++)
        brokerlink_close(&self->brokers[i].link);
    free(self->brokers);
    free(self);
}

upstream_t *upstream_new(uv_loop_t *loop, const char *endpoints, const curve_t *curve)
{
    upstream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    size_t cap = s_count_endpoints(endpoints);
    self->brokers = calloc(cap, sizeof *self->brokers);
    char *list = strdup(endpoints);
    bool ok = self->brokers && list;
    for (char *save = NULL, *ep = ok ? strtok_r(list, ",", &save) : NULL; ok && ep;
         ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        s_broker_t *b = &self->brokers[self->broker_count++];
        ok = brokerlink_open(&b->link, ep, curve, "upstream") == 0;
    }
    free(list);
    if (!ok || self->broker_count == 0) {
        if (ok)
            slog_error("upstream: no broker endpoint given");
        for (size_t i = 0; self->brokers && i < self->broker_count; i++)
            brokerlink_close(&self->brokers[i].link);
        free(self->brokers);
        free(self);
        return NULL;
    }
    self->pending = zhashx_new();
    zhashx_set_destructor(self->pending, NULL);
    msgpack_zone_init(&self->zone, 4096);
    for (size_t i = 0; i < self->broker_count; i++) {
        s_broker_t *b = &self->brokers[i];
        uv_poll_init(loop, &b->poll, zsock_fd(b->link.sock));
        uv_poll_init(loop, &b->monitor_poll, zsock_fd(b->link.monitor));
        b->poll.data = b->monitor_poll.data = self;
        uv_poll_start(&b->poll, UV_READABLE, s_on_poll);
        uv_poll_start(&b->monitor_poll, UV_READABLE, s_on_poll);
        self->open_handles += 2;
    }
    return self;
}

/* The loop must still run once for the poll handles to close; main does that. */
void upstream_destroy(upstream_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    upstream_t *self = *self_p;
    upstream_call_t *call;
    for (call = zhashx_first(self->pending); call; call = zhashx_next(self->pending))
        free(call);
    zhashx_destroy(&self->pending);
    msgpack_zone_destroy(&self->zone);
    for (size_t i = 0; i < self->broker_count; i++) {
        s_broker_t *b = &self->brokers[i];
        uv_poll_stop(&b->poll);
        uv_poll_stop(&b->monitor_poll);
        uv_close((uv_handle_t *)&b->poll, s_handle_closed);
        uv_close((uv_handle_t *)&b->monitor_poll, s_handle_closed);
    }
    *self_p = NULL;
}

upstream_call_t *upstream_call(upstream_t *self, const char *service, const void *body, size_t size,
                               uint32_t deadline_ms, upstream_fn *fn, void *arg)
{
    upstream_call_t *call = calloc(1, sizeof *call);
    snprintf(call->id, sizeof call->id, "%" PRIx64, ++self->next_id);
    call->fn = fn;
    call->arg = arg;
    call->expires_ms = clock_now_ms() + deadline_ms + S_GRACE_MS;
    smp_msg_t m = {0};
    m.command = SMP_REQUEST;
    m.service = smp_bytes_str(service);
    m.request_id = smp_bytes_str(call->id);
    m.deadline_ms = deadline_ms;
    m.body.data = body;
    m.body.size = size;
    /* IMMEDIATE: a link with no live connection refuses at once, and the next
       broker gets the call, with the message built again (a refused send may have
       consumed it) */
    bool sent = false;
    for (size_t tries = 0; !sent && tries < self->broker_count; tries++) {
        size_t i = self->next_broker++ % self->broker_count;
        zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
        if (!msg)
            break;
        if (zmsg_send(&msg, self->brokers[i].link.sock) == 0) {
            sent = true;
            call->broker = i;
        }
        zmsg_destroy(&msg);
    }
    if (!sent) {
        slog_debug("upstream: request to %s not sent: %s", service, zmq_strerror(zmq_errno()));
        free(call);
        return NULL;
    }
    zhashx_insert(self->pending, call->id, call);
    return call;
}

void upstream_cancel(upstream_t *self, upstream_call_t **call_p, bool tell_broker)
{
    if (!call_p || !*call_p)
        return;
    upstream_call_t *call = *call_p;
    if (tell_broker) {
        smp_msg_t m = {0};
        m.command = SMP_CANCEL;
        m.request_id = smp_bytes_str(call->id);
        zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
        if (msg && zmsg_send(&msg, self->brokers[call->broker].link.sock) != 0)
            zmsg_destroy(&msg);
    }
    zhashx_delete(self->pending, call->id);
    free(call);
    *call_p = NULL;
}

/* Fails a call with a reply made here; the call is already out of the table. */
static void s_fail(upstream_t *self, upstream_call_t *call, int status, const char *code,
                   const char *message)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    mp_error_body(&buf, status, code, message);
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(&self->zone);
    msgpack_unpack(buf.data, buf.size, &off, &self->zone, &obj);
    call->fn(call->arg, true, status, &obj);
    msgpack_sbuffer_destroy(&buf);
    free(call);
}

static void s_handle(upstream_t *self, zmsg_t *msg)
{
    smp_msg_t m;
    const char *reason = NULL;
    msgpack_zone_clear(&self->zone);
    int rc = smp_parse(msg, SMP_BROKER_TO_CLIENT, &self->zone, &m, &reason);
    char id[SMP_REQUEST_ID_MAX + 1] = "";
    if (m.request_id.size && m.request_id.size <= SMP_REQUEST_ID_MAX) {
        memcpy(id, m.request_id.data, m.request_id.size);
        id[m.request_id.size] = 0;
    }
    upstream_call_t *call = id[0] ? zhashx_lookup(self->pending, id) : NULL;
    if (rc != 0) {
        slog_warn("upstream: bad message from broker: %s", reason);
        if (call) {
            zhashx_delete(self->pending, id);
            s_fail(self, call, 502, "internal", "the broker sent a malformed reply");
        }
        return;
    }
    if (!call) {
        slog_debug("upstream: reply to unknown or cancelled request %s", id);
        return;
    }
    if (m.command == SMP_PARTIAL) {
        call->fn(call->arg, false, 0, &m.body_obj);
        return;
    }
    zhashx_delete(self->pending, id);
    call->fn(call->arg, true, m.status, &m.body_obj);
    free(call);
}

/*  Fails every call sent on the link to broker index, whose connection dropped:
    ids first, looked up again, since a callback may cancel other calls. */
static void s_broker_lost(upstream_t *self, size_t index)
{
    zlist_t *lost = zlist_new();
    zlist_autofree(lost);
    for (upstream_call_t *call = zhashx_first(self->pending); call;
         call = zhashx_next(self->pending))
        if (call->broker == index)
            zlist_append(lost, call->id);
    if (zlist_size(lost))
        slog_warn("upstream: lost the connection to the broker at %s with %zu request(s) in "
                  "flight; answering them 503",
                  self->brokers[index].link.endpoint, zlist_size(lost));
    for (char *id = zlist_first(lost); id; id = zlist_next(lost)) {
        upstream_call_t *call = zhashx_lookup(self->pending, id);
        if (!call)
            continue;
        zhashx_delete(self->pending, id);
        s_fail(self, call, 503, "unavailable",
               "the connection to the broker was lost with the request in flight; it may or "
               "may not have been applied");
    }
    zlist_destroy(&lost);
}

void upstream_drain(upstream_t *self)
{
    if (self->draining)
        return;
    self->draining = true;
    for (size_t i = 0; i < self->broker_count; i++) {
        zsock_t *sock = self->brokers[i].link.sock;
        int n = 0;
        while (n < S_DRAIN_MAX && (zsock_events(sock) & ZMQ_POLLIN)) {
            zmsg_t *msg = zmsg_recv(sock);
            if (!msg)
                break;
            s_handle(self, msg);
            zmsg_destroy(&msg);
            n++;
        }
        /* after the replies: one that arrived before the drop is still delivered */
        if (brokerlink_drops(&self->brokers[i].link))
            s_broker_lost(self, i);
    }
    self->draining = false;
}

void upstream_janitor(upstream_t *self, int64_t now_ms)
{
    /* ids first: a failed call's callback may cancel another expired call */
    zlist_t *expired = NULL;
    for (upstream_call_t *call = zhashx_first(self->pending); call;
         call = zhashx_next(self->pending)) {
        if (call->expires_ms <= now_ms) {
            if (!expired) {
                expired = zlist_new();
                zlist_autofree(expired);
            }
            zlist_append(expired, call->id);
        }
    }
    if (!expired)
        return;
    for (char *id = zlist_first(expired); id; id = zlist_next(expired)) {
        upstream_call_t *call = zhashx_lookup(self->pending, id);
        if (!call)
            continue;
        zhashx_delete(self->pending, id);
        slog_warn("upstream: no reply to request %s by its deadline", id);
        s_fail(self, call, 504, "timeout", "no reply from the broker before the deadline");
    }
    zlist_destroy(&expired);
}

size_t upstream_fail_all(upstream_t *self, int status, const char *code, const char *message)
{
    size_t n = 0;
    upstream_call_t *call;
    /* one at a time from the top: a callback may cancel other calls */
    while ((call = zhashx_first(self->pending))) {
        zhashx_delete(self->pending, call->id);
        s_fail(self, call, status, code, message);
        n++;
    }
    return n;
}

size_t upstream_pending(const upstream_t *self)
{
    return zhashx_size(self->pending);
}
