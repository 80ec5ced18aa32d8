/*  worker.c - the worker side of SMP/1. See worker.h. */
#include "worker.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"

#include <errno.h>

#include <string.h>

typedef struct {
    char *endpoint;       /* broker backend */
    zsock_t *sock;        /* DEALER; replaced when the broker is taken for dead */
    uint64_t epoch;       /* bumped on every new socket */
    int64_t last_recv_ms; /* anything heard from the broker */
    int64_t next_hb_ms;   /* when our next heartbeat is due */
} s_link_t;

struct worker_t {
    char *service;
    s_link_t *links;
    size_t link_count;
    worker_callbacks_t cb;
    void *arg;
    uint32_t credit; /* total capacity advertised */
    bool started;
    zlistx_t *inflight; /* worker_request_t*, in arrival order */
    zloop_t *loop;      /* when attached */
    int timer_id;
    const curve_t *curve; /* NULL: plain TCP */
};

static zsock_t *s_link_open(const worker_t *self, s_link_t *link)
{
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    if (!sock)
        return NULL;
    if (curve_apply_client(self->curve, zsock_resolve(sock)) != 0) {
        slog_error("worker: cannot set the CurveZMQ keys: %s", zmq_strerror(errno));
        zsock_destroy(&sock);
        return NULL;
    }
    zsock_set_linger(sock, 0);
    /* a reply must never block the loop: a broker that cannot take it is dead */
    zsock_set_sndhwm(sock, 100000);
    zsock_set_sndtimeo(sock, 0);
    if (zsock_connect(sock, "%s", link->endpoint) != 0) {
        slog_error("worker: cannot connect to %s", link->endpoint);
        zsock_destroy(&sock);
        return NULL;
    }
    return sock;
}

static void s_send(worker_t *self, size_t i, smp_msg_t *m)
{
    s_link_t *link = &self->links[i];
    if (!link->sock)
        return;
    zmsg_t *msg = smp_build(m, SMP_WORKER_TO_BROKER);
    if (msg && zmsg_send(&msg, link->sock) != 0) {
        slog_warn("worker: send to %s failed (%s)", link->endpoint, zmq_strerror(zmq_errno()));
        zmsg_destroy(&msg);
    }
}

static void s_send_ready(worker_t *self, size_t i)
{
    smp_msg_t m = {
        .command = SMP_READY, .service = smp_bytes_str(self->service), .credit = self->credit};
    s_send(self, i, &m);
}

static void s_send_heartbeat(worker_t *self, size_t i)
{
    smp_msg_t m = {.command = SMP_HEARTBEAT};
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    if (self->cb.on_status) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        self->cb.on_status(self->arg, &pk);
        m.body.data = (const uint8_t *)buf.data;
        m.body.size = buf.size;
    }
    s_send(self, i, &m);
    msgpack_sbuffer_destroy(&buf);
}

static int s_on_readable(zloop_t *loop, zsock_t *reader, void *arg);

/* A new socket for link i, READY on it: used at start and when the broker went away. */
static void s_link_reset(worker_t *self, size_t i, const char *reason)
{
    s_link_t *link = &self->links[i];
    if (link->sock) {
        slog_warn("worker: broker %s: %s; reconnecting", link->endpoint, reason);
        if (self->loop)
            zloop_reader_end(self->loop, link->sock);
        zsock_destroy(&link->sock);
    }
    link->sock = s_link_open(self, link);
    link->epoch++;
    int64_t now = clock_now_ms();
    link->last_recv_ms = now;
    link->next_hb_ms = now + WORKER_HEARTBEAT_MS;
    if (link->sock && self->loop)
        zloop_reader(self->loop, link->sock, s_on_readable, self);
    s_send_ready(self, i);
}

worker_t *worker_new(const char *service, const char *const *endpoints, size_t n,
                     const worker_callbacks_t *callbacks, void *arg)
{
    if (!service || !*service || strlen(service) > SMP_SERVICE_MAX || n == 0 || !callbacks ||
        !callbacks->on_request)
        return NULL;
    worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = strdup(service);
    self->links = calloc(n, sizeof *self->links);
    self->link_count = n;
    self->cb = *callbacks;
    self->arg = arg;
    self->inflight = zlistx_new();
    self->timer_id = -1;
    for (size_t i = 0; i < n; i++)
        self->links[i].endpoint = strdup(endpoints[i]);
    return self;
}

static void s_request_free(worker_request_t **req_p)
{
    worker_request_t *req = *req_p;
    if (!req)
        return;
    msgpack_zone_destroy(&req->zone);
    zmsg_destroy(&req->zmsg);
    free(req);
    *req_p = NULL;
}

void worker_destroy(worker_t **self_p)
{
    worker_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->link_count; i++) {
        s_link_t *link = &self->links[i];
        if (self->started) {
            smp_msg_t m = {.command = SMP_DISCONNECT};
            s_send(self, i, &m);
        }
        if (link->sock && self->loop)
            zloop_reader_end(self->loop, link->sock);
        /* the last replies and the DISCONNECT still leave (a live broker takes them
           at once; a dead one costs at most this) */
        if (link->sock)
            zsock_set_linger(link->sock, 500);
        zsock_destroy(&link->sock);
        free(link->endpoint);
    }
    if (self->loop && self->timer_id >= 0)
        zloop_timer_end(self->loop, self->timer_id);
    worker_request_t *req = zlistx_first(self->inflight);
    while (req) {
        s_request_free(&req);
        req = zlistx_next(self->inflight);
    }
    zlistx_destroy(&self->inflight);
    free(self->links);
    free(self->service);
    free(self);
    *self_p = NULL;
}

int worker_start(worker_t *self, uint32_t credit)
{
    self->credit = credit;
    self->started = true;
    for (size_t i = 0; i < self->link_count; i++) {
        s_link_reset(self, i, "start");
        if (!self->links[i].sock)
            return -1;
    }
    return 0;
}

void worker_set_curve(worker_t *self, const curve_t *curve)
{
    self->curve = curve;
}

void worker_set_credit(worker_t *self, uint32_t credit)
{
    if (credit == self->credit)
        return;
    self->credit = credit;
    if (!self->started)
        return;
    smp_msg_t m = {.command = SMP_CREDIT, .credit = credit};
    for (size_t i = 0; i < self->link_count; i++)
        s_send(self, i, &m);
}

uint32_t worker_credit(const worker_t *self)
{
    return self->credit;
}

void worker_stop(worker_t *self)
{
    worker_set_credit(self, 0);
}

size_t worker_link_count(const worker_t *self)
{
    return self->link_count;
}

zsock_t *worker_link_socket(const worker_t *self, size_t link)
{
    return link < self->link_count ? self->links[link].sock : NULL;
}

size_t worker_in_flight(const worker_t *self)
{
    return zlistx_size(self->inflight);
}

static worker_request_t *s_find(worker_t *self, size_t link, smp_bytes_t route, smp_bytes_t rid)
{
    for (worker_request_t *r = zlistx_first(self->inflight); r; r = zlistx_next(self->inflight)) {
        if (r->link == link && r->msg.request_id.size == rid.size &&
            memcmp(r->msg.request_id.data, rid.data, rid.size) == 0 &&
            r->msg.route.size == route.size &&
            memcmp(r->msg.route.data, route.data, route.size) == 0)
            return r;
    }
    return NULL;
}

static void s_dispatch(worker_t *self, size_t i, zmsg_t *zmsg)
{
    s_link_t *link = &self->links[i];
    link->last_recv_ms = clock_now_ms();
    worker_request_t *req = calloc(1, sizeof *req);
    if (!req) {
        zmsg_destroy(&zmsg);
        return;
    }
    msgpack_zone_init(&req->zone, 2048);
    req->zmsg = zmsg;
    const char *reason = NULL;
    if (smp_parse(zmsg, SMP_BROKER_TO_WORKER, &req->zone, &req->msg, &reason) != 0) {
        /* A REQUEST whose body is bad still gets an answer, so the client is not
           left waiting for its deadline. */
        if (req->msg.command == SMP_REQUEST && req->msg.route.size && req->msg.request_id.size) {
            msgpack_sbuffer buf;
            msgpack_sbuffer_init(&buf);
            mp_error_body(&buf, 400, "bad_request", reason);
            smp_msg_t m = {.command = SMP_REPLY,
                           .route = req->msg.route,
                           .request_id = req->msg.request_id,
                           .body = {(const uint8_t *)buf.data, buf.size}};
            s_send(self, i, &m);
            msgpack_sbuffer_destroy(&buf);
        }
        slog_warn("worker: bad message from broker %s: %s", link->endpoint, reason);
        s_request_free(&req);
        return;
    }
    switch (req->msg.command) {
    case SMP_REQUEST: {
        req->received_ms = link->last_recv_ms;
        uint32_t budget = req->msg.deadline_ms ? req->msg.deadline_ms : SMP_DEFAULT_DEADLINE_MS;
        req->deadline_ms = req->received_ms + budget;
        req->link = i;
        req->link_epoch = link->epoch;
        req->handle = zlistx_add_end(self->inflight, req);
        self->cb.on_request(self->arg, req);
        return;
    }
    case SMP_CANCEL: {
        worker_request_t *r = s_find(self, i, req->msg.route, req->msg.request_id);
        if (r && !r->cancelled) {
            r->cancelled = true;
            if (self->cb.on_cancel)
                self->cb.on_cancel(self->arg, r);
        }
        break;
    }
    case SMP_HEARTBEAT:
        break;
    case SMP_DISCONNECT:
        s_request_free(&req);
        s_link_reset(self, i, "broker sent DISCONNECT");
        return;
    default:
        break;
    }
    s_request_free(&req);
}

void worker_handle(worker_t *self, size_t i)
{
    if (i >= self->link_count)
        return;
    /* bounded, so one busy broker cannot starve the rest of the loop */
    for (int n = 0; n < 1000; n++) {
        zsock_t *sock = self->links[i].sock;
        if (!sock || !(zsock_events(sock) & ZMQ_POLLIN))
            return;
        zmsg_t *msg = zmsg_recv_nowait(sock);
        if (!msg)
            return;
        s_dispatch(self, i, msg);
    }
}

int64_t worker_tick(worker_t *self)
{
    int64_t now = clock_now_ms();
    int64_t next = WORKER_HEARTBEAT_MS;
    if (!self->started)
        return next;
    for (size_t i = 0; i < self->link_count; i++) {
        s_link_t *link = &self->links[i];
        if (now - link->last_recv_ms > (int64_t)WORKER_LIVENESS * WORKER_HEARTBEAT_MS) {
            s_link_reset(self, i, "silent for 3 heartbeat intervals");
            now = clock_now_ms();
        }
        if (now >= link->next_hb_ms) {
            s_send_heartbeat(self, i);
            link->next_hb_ms = now + WORKER_HEARTBEAT_MS;
        }
        int64_t wait = link->next_hb_ms - now;
        if (wait < next)
            next = wait;
    }
    return next < 0 ? 0 : next;
}

static int s_on_readable(zloop_t *loop, zsock_t *reader, void *arg)
{
    (void)loop;
    worker_t *self = arg;
    for (size_t i = 0; i < self->link_count; i++) {
        if (self->links[i].sock == reader) {
            worker_handle(self, i);
            break;
        }
    }
    return 0;
}

static int s_on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    worker_tick(arg);
    return 0;
}

int worker_attach(worker_t *self, zloop_t *loop)
{
    self->loop = loop;
    for (size_t i = 0; i < self->link_count; i++)
        if (self->links[i].sock && zloop_reader(loop, self->links[i].sock, s_on_readable, self))
            return -1;
    self->timer_id = zloop_timer(loop, 100, 0, s_on_timer, self);
    return self->timer_id >= 0 ? 0 : -1;
}

static void s_send_answer(worker_t *self, worker_request_t *req, smp_command_t command,
                          const void *body, size_t size)
{
    if (req->link >= self->link_count)
        return;
    /* a request from a broker connection that has since been reset is answered on
       the new one: the broker drops a route it does not know */
    smp_msg_t m = {.command = command,
                   .route = req->msg.route,
                   .request_id = req->msg.request_id,
                   .body = {body, size}};
    s_send(self, req->link, &m);
}

int worker_partial(worker_t *self, worker_request_t *req, const void *body, size_t size)
{
    if (!req || !body || size == 0)
        return -1;
    s_send_answer(self, req, SMP_PARTIAL, body, size);
    return 0;
}

void worker_reply(worker_t *self, worker_request_t **req_p, const void *body, size_t size)
{
    worker_request_t *req = *req_p;
    if (!req)
        return;
    s_send_answer(self, req, SMP_REPLY, body, size);
    if (req->handle)
        zlistx_delete(self->inflight, req->handle);
    s_request_free(req_p);
}
