/*  upstream.c - SMP client on the libuv loop. See upstream.h.

    Request ids are a counter rendered in hex: unique for this DEALER, which is
    all protocol.md asks. The pending table is a zhashx keyed by that text.
*/
#include "upstream.h"
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
};

struct upstream_t {
    zsock_t *dealer;
    uv_poll_t poll;
    bool poll_started;
    zhashx_t *pending; /* id -> upstream_call_t (owned) */
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

upstream_t *upstream_new(uv_loop_t *loop, const char *endpoints, const curve_t *curve)
{
    upstream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer || curve_apply_client(curve, zsock_resolve(self->dealer)) != 0) {
        slog_error("upstream: cannot make the DEALER to the brokers (CurveZMQ keys?)");
        zsock_destroy(&self->dealer);
        free(self);
        return NULL;
    }
    zsock_set_linger(self->dealer, 0);
    zsock_set_immediate(self->dealer, 1); /* no broker connected: fail the send, not queue */
    zsock_set_sndhwm(self->dealer, 100000);
    zsock_set_rcvhwm(self->dealer, 100000);
    zsock_set_sndtimeo(self->dealer, 0);
    zsock_set_rcvtimeo(self->dealer, 0);
    /* a broker whose link is cut (no FIN ever comes) must stop getting requests:
       ZeroMQ PINGs each broker and drops the connection after 3 s of silence */
    zsock_set_heartbeat_ivl(self->dealer, 1000);
    zsock_set_heartbeat_timeout(self->dealer, 3000);
    char *list = strdup(endpoints);
    int connected = 0;
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (zsock_connect(self->dealer, "%s", ep) != 0) {
            slog_error("upstream: cannot connect to broker '%s'", ep);
            connected = -1;
            break;
        }
        connected++;
    }
    free(list);
    if (connected <= 0) {
        zsock_destroy(&self->dealer);
        free(self);
        return NULL;
    }
    self->pending = zhashx_new();
    zhashx_set_destructor(self->pending, NULL);
    msgpack_zone_init(&self->zone, 4096);
    uv_poll_init(loop, &self->poll, zsock_fd(self->dealer));
    self->poll.data = self;
    uv_poll_start(&self->poll, UV_READABLE, s_on_poll);
    self->poll_started = true;
    return self;
}

static void s_poll_closed(uv_handle_t *handle)
{
    upstream_t *self = handle->data;
    zsock_destroy(&self->dealer);
    free(self);
}

/* The loop must still run once for the poll handle to close; main does that. */
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
    uv_poll_stop(&self->poll);
    uv_close((uv_handle_t *)&self->poll, s_poll_closed);
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
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    if (!msg || zmsg_send(&msg, self->dealer) != 0) {
        zmsg_destroy(&msg);
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
        if (msg && zmsg_send(&msg, self->dealer) != 0)
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

void upstream_drain(upstream_t *self)
{
    if (self->draining)
        return;
    self->draining = true;
    int n = 0;
    while (n < S_DRAIN_MAX && (zsock_events(self->dealer) & ZMQ_POLLIN)) {
        zmsg_t *msg = zmsg_recv(self->dealer);
        if (!msg)
            break;
        s_handle(self, msg);
        zmsg_destroy(&msg);
        n++;
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
