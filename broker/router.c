/*  router.c - services, workers, queues and requests in flight. See router.h.

    Who owns a request: its service's queue while it waits, the in-flight table
    (keyed by the route the broker made up for it) once a worker holds it. The
    clients index (client identity + request id) only points at requests whose
    client still waits, so a CANCEL or a duplicate id can find them.

    A request is answered exactly once: every path that answers goes through
    s_answer, which takes it out of the clients index and marks it answered. A
    worker that holds an answered request (timed out, cancelled) keeps its credit
    slot until its REPLY comes back or it dies; that reply is then dropped. Routes
    are never reused, so a reply for a request that was resent elsewhere is    recognised as late
   and dropped too.

    A route is a capability: it is a 64-bit value no one can guess (a bijective mix
    of a counter and a per-process random key), and a REPLY or PARTIAL is matched
    by route and request id whichever connection it comes on. A worker that lost
    its connection and came back with a new routing id (common/worker.c does that
    on DISCONNECT) can so still deliver what it held; the credit goes back to the
    worker entry that holds the request.

    Credit: READY sets a worker's credit total; CREDIT replaces the total; the
    credit left is total - requests it holds. A REPLY returns one credit because
    the worker then holds one request fewer.
*/
#include "router.h"
#include "clock.h"
#include "mp.h"
#include "queue.h"
#include "request.h"
#include "slog.h"
#include "smp.h"
#include "sys.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define S_TICK_MAX_MS 50       /* janitor period, at most */
#define S_PEER_LOGS_PER_SEC 20 /* warnings about peer input, then counted and summarised */
#define S_NAME_SIZE (2 * REQUEST_IDENTITY_MAX + 1)

struct service_t {
    char name[SMP_SERVICE_MAX + 1];
    zlistx_t *workers; /* worker_t *, least recently used first */
    queue_t *queue;    /* requests waiting for credit */
    size_t live;       /* workers not draining */
    size_t in_flight;  /* requests its workers hold */
};

struct worker_t {
    request_key_t key;      /* [size][routing id]: key of the workers table */
    char name[S_NAME_SIZE]; /* routing id, printable or hex, for logs and `sys` */
    service_t *service;
    void *lru_handle;   /* place in service->workers */
    uint32_t capacity;  /* credit total, from READY or the last CREDIT */
    uint32_t in_flight; /* requests it holds, answered or not */
    int64_t expiry;     /* monotonic ms: dead when silent until then */
    bool draining;      /* sent or was sent DISCONNECT, or held: gets no new requests */
    bool held;          /* drained by an operator (sys drain): stays registered when empty */
    bool db_down;       /* its status says "db_up": false (a DB worker without MariaDB) */
    uint8_t *status;    /* last non-empty heartbeat body (MessagePack map) */
    size_t status_size;
};

struct router_t {
    router_config_t cfg;
    char *pool_service;    /* cfg.pool_service, owned */
    zsock_t *frontend;     /* clients, not owned */
    zsock_t *backend;      /* workers, not owned */
    void *frontend_handle; /* their libzmq handles, for the hot path */
    void *backend_handle;
    zhashx_t *services;  /* name -> service_t */
    zhashx_t *workers;   /* request_key_t * (in the worker) -> worker_t */
    zhashx_t *in_flight; /* route (integer in the key pointer) -> request_t, owned */
    zhashx_t *clients;   /* request_key_t * (in the request) -> request_t, unanswered only */
    zhashx_t *queue_max; /* service name -> size_t *, per-service queue bounds */
    uint64_t next_route; /* counter behind the routes: they are never reused */
    uint64_t route_key;  /* random, mixed into every route so none can be guessed */
    size_t unanswered;   /* requests in flight whose client still waits */
    int64_t next_heartbeat;
    bool draining; /* router_shutdown was called */
    router_stats_t stats;
    msgpack_zone zone;   /* for parsing one message at a time */
    msgpack_sbuffer buf; /* for building one body at a time */
    void **scratch;      /* items collected while iterating a table, then handled */
    size_t scratch_cap;
    int64_t log_window; /* rate limit of warnings about peer input */
    unsigned log_count;
    unsigned log_suppressed;
};

static void s_worker_delete(router_t *self, worker_t *worker, const char *reason);

/* ---------------------------------------------------------------- helpers */

/* Lines about what peers send, and about requests refused under load, are rate
   limited: a peer spraying garbage or an overload must not turn the broker's log
   into its amplifier. Everything is counted in `sys status` anyway. */
static void s_log_limited(router_t *self, slog_level_t level, smp_bytes_t rid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_log_limited(router_t *self, slog_level_t level, smp_bytes_t rid, const char *fmt, ...)
{
    if (!slog_enabled(level))
        return;
    int64_t now = clock_now_ms();
    if (now - self->log_window >= 1000) {
        if (self->log_suppressed)
            slog_warn("%u more warnings about peer input suppressed", self->log_suppressed);
        self->log_window = now;
        self->log_count = 0;
        self->log_suppressed = 0;
    }
    if (++self->log_count > S_PEER_LOGS_PER_SEC) {
        self->log_suppressed++;
        return;
    }
    char text[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    slog_write(level, rid.data, rid.size, "%s", text);
}

/* Service names are printable ASCII without spaces: they are map keys in `sys
   status`, log words and C strings here. */
static bool s_service_name_ok(smp_bytes_t name)
{
    if (name.size == 0 || name.size > SMP_SERVICE_MAX)
        return false;
    for (size_t i = 0; i < name.size; i++)
        if (name.data[i] < 0x21 || name.data[i] > 0x7e)
            return false;
    return true;
}

static void s_cstr(char *out, smp_bytes_t b)
{
    memcpy(out, b.data, b.size);
    out[b.size] = 0;
}

static void s_identity_key(request_key_t *key, smp_bytes_t identity)
{
    key->data[0] = (uint8_t)identity.size;
    memcpy(key->data + 1, identity.data, identity.size);
    key->size = (uint16_t)(1 + identity.size);
}

static void s_name(char *out, smp_bytes_t identity)
{
    bool printable = true;
    for (size_t i = 0; i < identity.size; i++)
        if (identity.data[i] < 0x21 || identity.data[i] > 0x7e)
            printable = false;
    if (printable) {
        s_cstr(out, identity);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < identity.size; i++) {
        out[2 * i] = hex[identity.data[i] >> 4];
        out[2 * i + 1] = hex[identity.data[i] & 15];
    }
    out[2 * identity.size] = 0;
}

static smp_bytes_t s_worker_identity(const worker_t *worker)
{
    smp_bytes_t b = {worker->key.data + 1, worker->key.data[0]};
    return b;
}

/* The scratch array holds what one loop collected from a table it may not modify
   while iterating. Out of memory aborts, as everywhere in czmq. */
static void s_scratch_reserve(router_t *self, size_t n)
{
    if (n <= self->scratch_cap)
        return;
    size_t cap = self->scratch_cap ? self->scratch_cap : 64;
    while (cap < n)
        cap *= 2;
    void **p = realloc(self->scratch, cap * sizeof *p);
    if (!p) {
        slog_error("out of memory");
        abort();
    }
    self->scratch = p;
    self->scratch_cap = cap;
}

/* ---------------------------------------------------------------- sending */

/*  The messages of the hot path (REQUEST to a worker, REPLY and PARTIAL to a
    client) are written frame by frame straight to the socket, in the order
    smp_build would put them (docs/protocol.md; the tests check every frame).
    Building a czmq zmsg first costs a few allocations per frame, which measured
    more than all the routing work together. Rare commands go through smp_build. */
/* Sends n frames, each with more to follow. Returns false when one could not go. */
static bool s_send_head(void *sock, const smp_bytes_t *frames, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* a ROUTER drops what it cannot deliver instead of failing or blocking */
        if (zmq_send(sock, frames[i].data, frames[i].size, ZMQ_SNDMORE) < 0) {
            slog_debug("send failed: %s", zmq_strerror(errno));
            return false;
        }
    }
    return true;
}

static void s_send_frames(void *sock, const smp_bytes_t *frames, size_t n)
{
    if (s_send_head(sock, frames, n - 1) &&
        zmq_send(sock, frames[n - 1].data, frames[n - 1].size, 0) < 0)
        slog_debug("send failed: %s", zmq_strerror(errno));
}

static const smp_bytes_t s_empty = {(const uint8_t *)"", 0};
static const smp_bytes_t s_protocol = {(const uint8_t *)SMP_PROTOCOL, 4};

static void s_send(zsock_t *sock, smp_bytes_t identity, zmsg_t *msg)
{
    if (!msg)
        return; /* smp_build logged our own mistake */
    zmsg_pushmem(msg, identity.data, identity.size);
    /* ROUTER sockets never block: a gone or overloaded peer's message is dropped */
    if (zmsg_send(&msg, sock) != 0)
        slog_debug("send failed: %s", zmq_strerror(errno));
    zmsg_destroy(&msg);
}

/*  REPLY or PARTIAL: [identity, "", "SMP1", command, request_id, body]. When the
    body is a received part (a worker's reply or partial), it is sent from there:
    ZeroMQ takes the buffer instead of a copy. */
static void s_send_client_part(router_t *self, smp_bytes_t identity, smp_command_t command,
                               smp_bytes_t rid, smp_bytes_t body, zmq_msg_t *part)
{
    uint8_t cmd = (uint8_t)command;
    smp_bytes_t frames[] = {identity, s_empty, s_protocol, {&cmd, 1}, rid, body};
    if (!part)
        s_send_frames(self->frontend_handle, frames, 6);
    else if (s_send_head(self->frontend_handle, frames, 5) &&
             zmq_msg_send(part, self->frontend_handle, 0) < 0)
        slog_debug("send failed: %s", zmq_strerror(errno));
}

static void s_send_client(router_t *self, smp_bytes_t identity, smp_command_t command,
                          smp_bytes_t rid, smp_bytes_t body)
{
    s_send_client_part(self, identity, command, rid, body, NULL);
}

static void s_send_error(router_t *self, smp_bytes_t identity, smp_bytes_t rid, int status,
                         const char *code, const char *message)
{
    mp_error_body(&self->buf, status, code, message);
    smp_bytes_t body = {(const uint8_t *)self->buf.data, self->buf.size};
    s_send_client(self, identity, SMP_REPLY, rid, body);
}

static void s_send_worker(router_t *self, const worker_t *worker, const smp_msg_t *out)
{
    s_send(self->backend, s_worker_identity(worker), smp_build(out, SMP_BROKER_TO_WORKER));
}

static void s_send_worker_command(router_t *self, smp_bytes_t identity, smp_command_t command)
{
    smp_msg_t out = {.command = command};
    s_send(self->backend, identity, smp_build(&out, SMP_BROKER_TO_WORKER));
}

/*  The next route: splitmix64's finaliser over counter ^ key. Each step is
    invertible, so distinct counters give distinct routes; 0 ("not sent") is
    skipped. */
static uint64_t s_next_route(router_t *self)
{
    for (;;) {
        uint64_t z = self->next_route++ ^ self->route_key;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        if (z)
            return z;
    }
}

static void s_route_bytes(uint8_t out[8], uint64_t route)
{
    smp_put_u32(out, (uint32_t)(route >> 32));
    smp_put_u32(out + 4, (uint32_t)route);
}

/* ---------------------------------------------------------------- answering */

/*  The one place a request gets its final REPLY. A request still held by a worker
    stays in the in-flight table, answered, until the worker gives it back; any
    other request is freed here. */
static void s_answer_part(router_t *self, request_t *req, smp_bytes_t body, zmq_msg_t *part)
{
    assert(!req->answered);
    s_send_client_part(self, request_identity(req), SMP_REPLY, request_id(req), body, part);
    zhashx_delete(self->clients, &req->key);
    if (req->route) {
        self->unanswered--;
        request_set_answered(req);
    } else {
        request_destroy(&req);
    }
}

static void s_answer(router_t *self, request_t *req, smp_bytes_t body)
{
    s_answer_part(self, req, body, NULL);
}

static void s_answer_error(router_t *self, request_t *req, int status, const char *code,
                           const char *message)
{
    slog_level_t level = status == 503 && strcmp(code, "worker_lost") == 0 ? SLOG_WARN
                         : status == 504                                   ? SLOG_INFO
                                                                           : SLOG_DEBUG;
    s_log_limited(self, level, request_id(req), "answered %d %s: %s", status, code, message);
    mp_error_body(&self->buf, status, code, message);
    smp_bytes_t body = {(const uint8_t *)self->buf.data, self->buf.size};
    s_answer(self, req, body);
}

static void s_answer_unavailable(router_t *self, request_t *req, const char *message)
{
    self->stats.unavailable++;
    s_answer_error(self, req, 503, "unavailable", message);
}

static void s_answer_timeout(router_t *self, request_t *req)
{
    self->stats.timeouts++;
    s_answer_error(self, req, 504, "timeout", "deadline passed before a worker replied");
}

/* ---------------------------------------------------------------- services */

static service_t *s_service_new(router_t *self, const char *name)
{
    service_t *service = calloc(1, sizeof *service);
    if (!service)
        return NULL;
    snprintf(service->name, sizeof service->name, "%s", name);
    size_t *bound = zhashx_lookup(self->queue_max, name);
    service->workers = zlistx_new();
    service->queue = queue_new(bound ? *bound : self->cfg.queue_max);
    if (!service->workers || !service->queue || zhashx_insert(self->services, name, service)) {
        zlistx_destroy(&service->workers);
        queue_destroy(&service->queue);
        free(service);
        return NULL;
    }
    slog_info("service %s: registered (queue bound %zu)", name, queue_max(service->queue));
    return service;
}

static void s_service_destroy(service_t **service_p)
{
    service_t *service = *service_p;
    zlistx_destroy(&service->workers);
    queue_destroy(&service->queue);
    free(service);
    *service_p = NULL;
}

/*  Every live worker of the service reports that its database is unreachable
    (heartbeat "db_up": false). A DB worker's credit is 0 then, so a queued request
    could only wait for its deadline: it is answered 503 at once instead, which a
    client can retry on (issue 7). One worker whose database is up is enough to
    queue and route as usual. */
static bool s_service_db_down(service_t *service)
{
    size_t down = 0;
    for (worker_t *w = zlistx_first(service->workers); w; w = zlistx_next(service->workers)) {
        if (w->draining)
            continue;
        if (!w->db_down)
            return false;
        down++;
    }
    return down > 0;
}

static worker_t *s_worker_with_credit(service_t *service)
{
    for (worker_t *w = zlistx_first(service->workers); w; w = zlistx_next(service->workers))
        if (!w->draining && w->in_flight < w->capacity)
            return w;
    return NULL;
}

/* Hands req to worker: a new route, the deadline left, one credit used, and the
   worker goes to the end of the least-recently-used order. */
static void s_send_request(router_t *self, worker_t *worker, request_t *req, int64_t now)
{
    uint8_t route[8];
    req->route = s_next_route(self);
    req->worker = worker;
    s_route_bytes(route, req->route);
    int64_t left = req->deadline - now;
    uint8_t deadline[4], cmd = SMP_REQUEST;
    smp_put_u32(deadline, (uint32_t)(left < 1 ? 1 : left > UINT32_MAX ? UINT32_MAX : left));
    /* [identity, "", "SMP1", 0x01, route, request_id, deadline_ms, body] */
    smp_bytes_t frames[] = {
        s_worker_identity(worker), s_empty,      s_protocol, {&cmd, 1}, {route, 8},
        request_id(req),           {deadline, 4}};
    if (s_send_head(self->backend_handle, frames, 7) &&
        request_send_body(req, self->backend_handle) < 0)
        slog_debug("send failed: %s", zmq_strerror(errno));
    int rc = zhashx_insert(self->in_flight, (void *)(uintptr_t)req->route, req);
    assert(rc == 0); /* routes are unique by construction */
    (void)rc;
    worker->in_flight++;
    worker->service->in_flight++;
    self->unanswered++;
    zlistx_move_end(worker->service->workers, worker->lru_handle);
}

/* Sends queued requests while some worker has credit; an expired one is answered
   504 instead, so a request past its deadline is never sent. */
static void s_dispatch(router_t *self, service_t *service)
{
    if (queue_size(service->queue) == 0)
        return;
    int64_t now = clock_now_ms();
    worker_t *worker;
    while (queue_size(service->queue) && (worker = s_worker_with_credit(service))) {
        request_t *req = queue_pop(service->queue);
        if (req->deadline <= now)
            s_answer_timeout(self, req);
        else
            s_send_request(self, worker, req, now);
    }
}

/*  With no live worker, nothing queued can be served: fail fast rather than hold.
    A service without workers is removed. Returns false when service was freed. */
static bool s_service_check(router_t *self, service_t *service)
{
    if (service->live > 0)
        return true;
    request_t *req;
    while ((req = queue_pop(service->queue)))
        s_answer_unavailable(self, req,
                             self->draining ? "broker is shutting down"
                                            : "no live worker for this service");
    if (zlistx_size(service->workers) == 0) {
        slog_info("service %s: no workers left", service->name);
        zhashx_delete(self->services, service->name);
        s_service_destroy(&service);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- workers */

static worker_t *s_worker_new(router_t *self, smp_bytes_t identity, service_t *service,
                              uint32_t credit)
{
    worker_t *worker = calloc(1, sizeof *worker);
    if (!worker)
        return NULL;
    s_identity_key(&worker->key, identity);
    s_name(worker->name, identity);
    worker->service = service;
    worker->capacity = credit;
    worker->expiry = clock_now_ms() + self->cfg.heartbeat_ms * self->cfg.liveness;
    /* never used yet, so it is the least recently used */
    worker->lru_handle = zlistx_add_start(service->workers, worker);
    if (!worker->lru_handle || zhashx_insert(self->workers, &worker->key, worker)) {
        if (worker->lru_handle)
            zlistx_delete(service->workers, worker->lru_handle);
        free(worker);
        return NULL;
    }
    service->live++;
    return worker;
}

static void s_worker_set_draining(router_t *self, worker_t *worker)
{
    worker->held = false; /* a DISCONNECT ends an operator's drain: removed once empty */
    if (worker->draining)
        return;
    worker->draining = true;
    worker->service->live--;
    s_service_check(self, worker->service);
}

/* Takes req back from its worker: out of the in-flight table, one credit returned. */
static void s_release(router_t *self, request_t *req)
{
    if (!req->answered)
        self->unanswered--;
    zhashx_delete(self->in_flight, (void *)(uintptr_t)req->route);
    req->worker->in_flight--;
    req->worker->service->in_flight--;
    req->worker = NULL;
    req->route = 0;
}

/*  Removes worker. What it still held is lost: answered requests are simply freed;
    an idempotent request not yet resent goes first in the queue for another live
    worker; every other one is answered 503 worker_lost. The service goes when its
    last worker does. */
static void s_worker_delete(router_t *self, worker_t *worker, const char *reason)
{
    service_t *service = worker->service;
    slog_info("worker %s (%s): removed: %s; it held %u request(s)", worker->name, service->name,
              reason, worker->in_flight);
    zhashx_delete(self->workers, &worker->key);
    zlistx_delete(service->workers, worker->lru_handle);
    if (!worker->draining)
        service->live--;

    size_t n = 0;
    s_scratch_reserve(self, worker->in_flight);
    if (worker->in_flight)
        for (request_t *req = zhashx_first(self->in_flight); req;
             req = zhashx_next(self->in_flight))
            if (req->worker == worker && n < worker->in_flight)
                self->scratch[n++] = req;
    for (size_t i = 0; i < n; i++) {
        request_t *req = self->scratch[i];
        s_release(self, req);
        if (req->answered) {
            request_destroy(&req);
        } else if (req->idempotent && !req->resent && service->live > 0 && !self->draining) {
            req->resent = true;
            self->stats.resent++;
            slog_write(SLOG_INFO, request_id(req).data, request_id(req).size,
                       "worker %s lost: idempotent request resent", worker->name);
            queue_push_front(service->queue, req);
        } else {
            self->stats.worker_lost++;
            s_answer_error(self, req, 503, "worker_lost",
                           "the worker handling this request was lost");
        }
    }
    free(worker->status);
    free(worker);
    if (s_service_check(self, service))
        s_dispatch(self, service);
}

/* ---------------------------------------------------------------- clients */

/* body_part holds m->body: a request that is kept takes it. */
static void s_client_request(router_t *self, smp_bytes_t identity, const smp_msg_t *m,
                             zmq_msg_t *body_part)
{
    self->stats.requests++;
    if (!s_service_name_ok(m->service)) {
        self->stats.bad_request++;
        s_send_error(self, identity, m->request_id, 400, "bad_request",
                     "service name must be printable ASCII without spaces");
        return;
    }
    if (self->draining) {
        self->stats.unavailable++;
        s_send_error(self, identity, m->request_id, 503, "unavailable", "broker is shutting down");
        return;
    }
    if (smp_bytes_eq(m->service, SYS_SERVICE)) {
        sys_answer(self, m, &self->buf);
        smp_bytes_t body = {(const uint8_t *)self->buf.data, self->buf.size};
        s_send_client(self, identity, SMP_REPLY, m->request_id, body);
        return;
    }
    request_key_t key;
    if (request_key_make(&key, identity, m->request_id) != 0)
        return; /* cannot happen for frames the codec and ROUTER accepted */
    if (zhashx_lookup(self->clients, &key)) {
        self->stats.bad_request++;
        s_send_error(self, identity, m->request_id, 400, "bad_request",
                     "request id already used by a request in progress");
        return;
    }
    char name[SMP_SERVICE_MAX + 1];
    s_cstr(name, m->service);
    service_t *service = zhashx_lookup(self->services, name);
    if (!service || service->live == 0) {
        self->stats.unavailable++;
        s_send_error(self, identity, m->request_id, 503, "unavailable",
                     "no live worker for this service");
        return;
    }
    worker_t *worker = queue_size(service->queue) ? NULL : s_worker_with_credit(service);
    if (!worker && s_service_db_down(service)) {
        self->stats.unavailable++;
        s_send_error(self, identity, m->request_id, 503, "unavailable",
                     "the database is unavailable");
        return;
    }
    if (!worker && queue_size(service->queue) >= queue_max(service->queue)) {
        self->stats.unavailable++;
        s_send_error(self, identity, m->request_id, 503, "unavailable", "service queue is full");
        return;
    }
    int64_t now = clock_now_ms();
    uint32_t budget = m->deadline_ms ? m->deadline_ms : (uint32_t)self->cfg.default_deadline_ms;
    request_t *req = request_new(identity, m, body_part, now + budget);
    if (!req) {
        self->stats.unavailable++;
        s_send_error(self, identity, m->request_id, 503, "unavailable", "broker out of memory");
        return;
    }
    req->service = service;
    zhashx_insert(self->clients, &req->key, req);
    if (worker)
        s_send_request(self, worker, req, now);
    else
        queue_push(service->queue, req); /* room checked above */
}

/*  CANCEL: a queued request is removed; one a worker holds is cancelled at the
    worker. Either way the client gets its one REPLY now, 499 cancelled, and
    whatever the worker sends later is dropped. Unknown ids (already answered) are
    ignored: there is nothing left to cancel. */
static void s_client_cancel(router_t *self, smp_bytes_t identity, const smp_msg_t *m)
{
    request_key_t key;
    if (request_key_make(&key, identity, m->request_id) != 0)
        return;
    request_t *req = zhashx_lookup(self->clients, &key);
    if (!req) {
        slog_write(SLOG_DEBUG, m->request_id.data, m->request_id.size,
                   "CANCEL for no request in progress: ignored");
        return;
    }
    if (req->queue_handle) {
        queue_remove(req->service->queue, req);
    } else if (req->worker) {
        uint8_t route[8];
        s_route_bytes(route, req->route);
        smp_msg_t out = {.command = SMP_CANCEL, .route = {route, 8}, .request_id = request_id(req)};
        s_send_worker(self, req->worker, &out);
    }
    self->stats.cancelled++;
    s_answer_error(self, req, 499, "cancelled", "cancelled by the client");
}

void router_client_message(router_t *self, wire_t *wire)
{
    smp_bytes_t identity = wire_identity(wire);
    size_t count;
    const smp_bytes_t *frames = wire_frames(wire, &count);
    smp_msg_t m;
    const char *reason = NULL;
    if (identity.size == 0 || identity.size > REQUEST_IDENTITY_MAX) {
        self->stats.dropped++; /* a ROUTER always gives a routing id: not reachable */
    } else if (smp_parse_frames(frames, count, SMP_CLIENT_TO_BROKER, &self->zone, &m, &reason) !=
               0) {
        if (m.request_id.size) {
            self->stats.bad_request++;
            s_log_limited(self, SLOG_WARN, m.request_id,
                          "malformed client message: %s: answered 400", reason);
            s_send_error(self, identity, m.request_id, 400, "bad_request", reason);
        } else {
            self->stats.dropped++;
            s_log_limited(self, SLOG_WARN, m.request_id, "malformed client message dropped: %s",
                          reason);
        }
    } else if (m.command == SMP_REQUEST) {
        s_client_request(self, identity, &m, wire_take(wire, count - 1)); /* body: the last */
    } else {
        s_client_cancel(self, identity, &m);
    }
    msgpack_zone_clear(&self->zone);
}

/* ---------------------------------------------------------------- workers' messages */

/*  READY from a registered worker means it started over (it restarted, or gave up
    on this broker and came back): what it held is lost, and it registers afresh.
    A READY for a name that is not allowed is ignored like any malformed message;
    an unregistered sender is also told DISCONNECT, so it does not wait for work. */
static void s_worker_ready(router_t *self, smp_bytes_t identity, worker_t *worker,
                           const smp_msg_t *m)
{
    if (!s_service_name_ok(m->service) || smp_bytes_eq(m->service, SYS_SERVICE)) {
        self->stats.worker_errors++;
        s_log_limited(self, SLOG_WARN, m->request_id,
                      "READY for a service name that is not allowed: ignored");
        if (!worker)
            s_send_worker_command(self, identity, SMP_DISCONNECT);
        return;
    }
    if (worker)
        s_worker_delete(self, worker, "sent READY again, so it started over");
    if (self->draining) {
        s_send_worker_command(self, identity, SMP_DISCONNECT);
        return;
    }
    char name[SMP_SERVICE_MAX + 1];
    s_cstr(name, m->service);
    service_t *service = zhashx_lookup(self->services, name);
    if (!service && !(service = s_service_new(self, name)))
        return;
    worker = s_worker_new(self, identity, service, m->credit);
    if (!worker) {
        s_service_check(self, service);
        return;
    }
    slog_info("worker %s (%s): ready, credit %u", worker->name, service->name, m->credit);
    s_dispatch(self, service);
}

/* REPLY or PARTIAL: the request in flight under that route, with the same request
   id; anything else is late or wrong, and dropped. */
static request_t *s_held_request(router_t *self, const smp_msg_t *m)
{
    if (m->route.size != 8)
        return NULL;
    uint64_t route = ((uint64_t)smp_get_u32(m->route.data) << 32) | smp_get_u32(m->route.data + 4);
    request_t *req = route ? zhashx_lookup(self->in_flight, (void *)(uintptr_t)route) : NULL;
    if (!req)
        return NULL;
    smp_bytes_t rid = request_id(req);
    if (rid.size != m->request_id.size || memcmp(rid.data, m->request_id.data, rid.size) != 0)
        return NULL;
    return req;
}

/* Returns false when the reply matched nothing in flight. body_part holds m->body. */
static bool s_worker_reply(router_t *self, const smp_msg_t *m, zmq_msg_t *body_part)
{
    request_t *req = s_held_request(self, m);
    if (!req) {
        self->stats.late_replies++;
        slog_write(SLOG_DEBUG, m->request_id.data, m->request_id.size,
                   "reply for no request in flight: dropped");
        return false;
    }
    worker_t *worker = req->worker; /* the holder, whichever connection replied */
    s_release(self, req);
    if (req->answered) {
        self->stats.late_replies++;
        request_destroy(&req);
    } else {
        self->stats.replies++;
        s_answer_part(self, req, m->body, body_part);
    }
    service_t *service = worker->service;
    if (worker->draining && !worker->held && worker->in_flight == 0)
        s_worker_delete(self, worker, "drained after DISCONNECT");
    else
        s_dispatch(self, service);
    return true;
}

/* Returns false when the partial matched nothing in flight. body_part holds m->body. */
static bool s_worker_partial(router_t *self, const smp_msg_t *m, zmq_msg_t *body_part)
{
    request_t *req = s_held_request(self, m);
    if (!req)
        return false;
    if (req->answered) {
        self->stats.late_replies++;
        return true;
    }
    self->stats.partials++;
    s_send_client_part(self, request_identity(req), SMP_PARTIAL, request_id(req), m->body,
                       body_part);
    return true;
}

static void s_worker_heartbeat(router_t *self, worker_t *worker, const smp_msg_t *m)
{
    if (m->body.size == 0)
        return;
    bool up = true, was_down = worker->db_down;
    worker->db_down = mp_get_bool(&m->body_obj, "db_up", &up) && !up;
    if (worker->db_down && !was_down && s_service_db_down(worker->service)) {
        request_t *req;
        while ((req = queue_pop(worker->service->queue)))
            s_answer_unavailable(self, req, "the database is unavailable");
    }
    if (worker->status_size != m->body.size) {
        uint8_t *status = realloc(worker->status, m->body.size);
        if (!status)
            return;
        worker->status = status;
        worker->status_size = m->body.size;
    }
    memcpy(worker->status, m->body.data, m->body.size);
}

void router_worker_message(router_t *self, wire_t *wire)
{
    smp_bytes_t identity = wire_identity(wire);
    size_t count;
    const smp_bytes_t *frames = wire_frames(wire, &count);
    if (identity.size == 0 || identity.size > REQUEST_IDENTITY_MAX)
        return;
    request_key_t key;
    s_identity_key(&key, identity);
    worker_t *worker = zhashx_lookup(self->workers, &key);
    if (worker) /* any message shows it is alive, even a wrong one */
        worker->expiry = clock_now_ms() + self->cfg.heartbeat_ms * self->cfg.liveness;

    smp_msg_t m;
    const char *reason = NULL;
    if (smp_parse_frames(frames, count, SMP_WORKER_TO_BROKER, &self->zone, &m, &reason) != 0) {
        self->stats.worker_errors++;
        char name[S_NAME_SIZE];
        s_name(name, identity);
        s_log_limited(self, SLOG_WARN, m.request_id, "malformed message from worker %s ignored: %s",
                      name, reason);
        goto done;
    }
    /* answers are matched by route, whoever sends them (see the top of this file);
       their body is the last frame */
    bool answer = m.command == SMP_REPLY || m.command == SMP_PARTIAL;
    zmq_msg_t *body_part = answer ? wire_take(wire, count - 1) : NULL;
    if (m.command == SMP_REPLY && (s_worker_reply(self, &m, body_part) || worker))
        goto done;
    if (m.command == SMP_PARTIAL && (s_worker_partial(self, &m, body_part) || worker))
        goto done;
    if (!worker && self->draining) {
        /* a worker that reconnected while the broker shuts down: nothing to say to
           it (a DISCONNECT would only make it reconnect again at once) */
        slog_debug("message 0x%02x from an unregistered worker while draining: ignored",
                   (unsigned)m.command);
        goto done;
    }
    if (m.command == SMP_READY) {
        s_worker_ready(self, identity, worker, &m);
        goto done;
    }
    if (!worker) {
        /* not (or no longer) registered, e.g. declared dead or the broker restarted:
           DISCONNECT tells it to start over with READY */
        if (m.command != SMP_DISCONNECT) {
            self->stats.worker_errors++;
            char name[S_NAME_SIZE];
            s_name(name, identity);
            s_log_limited(self, SLOG_WARN, m.request_id,
                          "message 0x%02x from unknown worker %s: DISCONNECT", (unsigned)m.command,
                          name);
            s_send_worker_command(self, identity, SMP_DISCONNECT);
        }
        goto done;
    }
    switch (m.command) {
    case SMP_HEARTBEAT:
        s_worker_heartbeat(self, worker, &m);
        break;
    case SMP_CREDIT:
        worker->capacity = m.credit;
        slog_debug("worker %s: credit total %u", worker->name, m.credit);
        s_dispatch(self, worker->service);
        break;
    case SMP_DISCONNECT:
        slog_info("worker %s (%s): DISCONNECT, holding %u", worker->name, worker->service->name,
                  worker->in_flight);
        if (worker->in_flight == 0) {
            s_worker_delete(self, worker, "disconnected");
        } else {
            s_worker_set_draining(self, worker);
        }
        break;
    default:
        break; /* the codec accepts nothing else from a worker */
    }
done:
    msgpack_zone_clear(&self->zone);
}

/* ---------------------------------------------------------------- janitor */

static void s_queued_expired(request_t *req, void *arg)
{
    s_answer_timeout(arg, req);
}

/*  A request a worker holds past its deadline is answered 504 now; the worker is
    sent CANCEL (it may stop early) and keeps the credit slot until it replies. */
static void s_expire_in_flight(router_t *self, int64_t now)
{
    if (self->unanswered == 0)
        return;
    s_scratch_reserve(self, self->unanswered);
    size_t n = 0;
    for (request_t *req = zhashx_first(self->in_flight); req; req = zhashx_next(self->in_flight))
        if (!req->answered && req->deadline <= now && n < self->scratch_cap)
            self->scratch[n++] = req;
    for (size_t i = 0; i < n; i++) {
        request_t *req = self->scratch[i];
        uint8_t route[8];
        s_route_bytes(route, req->route);
        smp_msg_t out = {.command = SMP_CANCEL, .route = {route, 8}, .request_id = request_id(req)};
        s_send_worker(self, req->worker, &out);
        s_answer_timeout(self, req);
    }
}

/* One dead worker at a time: deleting one uses the scratch array and may free other
   state, so the table is searched again after each (workers are few). */
static void s_expire_workers(router_t *self, int64_t now)
{
    for (;;) {
        worker_t *worker = zhashx_first(self->workers);
        while (worker && worker->expiry > now)
            worker = zhashx_next(self->workers);
        if (!worker)
            break;
        self->stats.workers_lost++;
        /* if it is only slow, DISCONNECT makes it start over rather than talk to a
           broker that forgot it */
        s_send_worker_command(self, s_worker_identity(worker), SMP_DISCONNECT);
        s_worker_delete(self, worker, "silent for too long (heartbeat)");
    }
}

static void s_heartbeat_workers(router_t *self)
{
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers))
        s_send_worker_command(self, s_worker_identity(w), SMP_HEARTBEAT);
}

void router_tick(router_t *self, int64_t now)
{
    for (service_t *s = zhashx_first(self->services); s; s = zhashx_next(self->services))
        queue_expire(s->queue, now, s_queued_expired, self);
    s_expire_in_flight(self, now);
    s_expire_workers(self, now);
    if (now >= self->next_heartbeat) {
        s_heartbeat_workers(self);
        self->next_heartbeat = now + self->cfg.heartbeat_ms;
    }
    if (self->log_suppressed && now - self->log_window >= 1000) {
        slog_warn("%u more warnings about peer input suppressed", self->log_suppressed);
        self->log_suppressed = 0;
        self->log_count = 0;
        self->log_window = now;
    }
}

int64_t router_tick_ms(const router_t *self)
{
    int64_t tick = self->cfg.heartbeat_ms / 2;
    return tick > S_TICK_MAX_MS ? S_TICK_MAX_MS : tick < 1 ? 1 : tick;
}

/* ---------------------------------------------------------------- shutdown */

void router_shutdown(router_t *self)
{
    if (self->draining)
        return;
    self->draining = true;
    s_scratch_reserve(self, zhashx_size(self->workers));
    size_t n = 0;
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers))
        self->scratch[n++] = w;
    for (size_t i = 0; i < n; i++) {
        worker_t *worker = self->scratch[i];
        s_send_worker_command(self, s_worker_identity(worker), SMP_DISCONNECT);
        /* may answer the queue and free the worker's service, never the worker */
        s_worker_set_draining(self, worker);
    }
}

size_t router_in_flight(const router_t *self)
{
    return self->unanswered;
}

void router_abort(router_t *self)
{
    if (self->unanswered == 0)
        return;
    s_scratch_reserve(self, self->unanswered);
    size_t n = 0;
    for (request_t *req = zhashx_first(self->in_flight); req; req = zhashx_next(self->in_flight))
        if (!req->answered && n < self->scratch_cap)
            self->scratch[n++] = req;
    for (size_t i = 0; i < n; i++)
        s_answer_unavailable(self, self->scratch[i], "broker is shutting down");
}

/* ---------------------------------------------------------------- life */

/* "db=2000,chat=100" -> table; table NULL: only checked */
static int s_parse_queue_max(zhashx_t *table, const char *text, const char **reason)
{
    *reason = "service_queue_max must be name=count[,name=count...] with counts 0-1000000";
    const char *p = text;
    while (p && *p) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        if (!eq || eq > end || eq == p || eq - p > SMP_SERVICE_MAX)
            return -1;
        char name[SMP_SERVICE_MAX + 1];
        smp_bytes_t b = {(const uint8_t *)p, (size_t)(eq - p)};
        if (!s_service_name_ok(b))
            return -1;
        s_cstr(name, b);
        char *stop;
        errno = 0;
        long long n = strtoll(eq + 1, &stop, 10);
        if (errno || stop != end || stop == eq + 1 || n < 0 || n > 1000000)
            return -1;
        p = *end ? end + 1 : end;
        if (!table)
            continue;
        size_t *bound = malloc(sizeof *bound);
        if (!bound)
            return -1;
        *bound = (size_t)n;
        zhashx_update(table, name, bound);
    }
    return 0;
}

static void s_free_size(void **item)
{
    free(*item);
    *item = NULL;
}

int router_config_check(const router_config_t *cfg, const char **reason)
{
    if (cfg->heartbeat_ms < 10 || cfg->heartbeat_ms > 3600000)
        *reason = "heartbeat_ms must be 10-3600000";
    else if (cfg->liveness < 1 || cfg->liveness > 100)
        *reason = "liveness must be 1-100";
    else if (cfg->default_deadline_ms < 1 || cfg->default_deadline_ms > UINT32_MAX)
        *reason = "default_deadline_ms must be 1-4294967295";
    else if (cfg->queue_max > 1000000)
        *reason = "queue_max must be 0-1000000";
    else if (cfg->service_queue_max && s_parse_queue_max(NULL, cfg->service_queue_max, reason))
        return -1;
    else
        return 0;
    return -1;
}

router_t *router_new(const router_config_t *cfg, zsock_t *frontend, zsock_t *backend,
                     const char **reason)
{
    if (router_config_check(cfg, reason) != 0)
        return NULL;
    router_t *self = calloc(1, sizeof *self);
    if (!self) {
        *reason = "out of memory";
        return NULL;
    }
    msgpack_zone_init(&self->zone, 4096);
    msgpack_sbuffer_init(&self->buf);
    self->cfg = *cfg;
    self->pool_service = strdup(cfg->pool_service ? cfg->pool_service : "");
    self->cfg.pool_service = self->pool_service;
    self->cfg.service_queue_max = NULL;
    self->frontend = frontend;
    self->backend = backend;
    self->frontend_handle = zsock_resolve(frontend);
    self->backend_handle = zsock_resolve(backend);
    self->services = zhashx_new();
    self->workers = zhashx_new();
    self->in_flight = zhashx_new();
    self->clients = zhashx_new();
    self->queue_max = zhashx_new();
    if (!self->pool_service || !self->services || !self->workers || !self->in_flight ||
        !self->clients || !self->queue_max) {
        *reason = "out of memory";
        router_destroy(&self);
        return NULL;
    }
    zhashx_set_key_duplicator(self->workers, NULL);
    zhashx_set_key_destructor(self->workers, NULL);
    zhashx_set_key_hasher(self->workers, request_key_hash);
    zhashx_set_key_comparator(self->workers, request_key_compare);
    zhashx_set_key_duplicator(self->clients, NULL);
    zhashx_set_key_destructor(self->clients, NULL);
    zhashx_set_key_hasher(self->clients, request_key_hash);
    zhashx_set_key_comparator(self->clients, request_key_compare);
    zhashx_set_key_duplicator(self->in_flight, NULL);
    zhashx_set_key_destructor(self->in_flight, NULL);
    zhashx_set_key_hasher(self->in_flight, request_route_hash);
    zhashx_set_key_comparator(self->in_flight, request_route_compare);
    zhashx_set_destructor(self->queue_max, s_free_size);
    if (cfg->service_queue_max &&
        s_parse_queue_max(self->queue_max, cfg->service_queue_max, reason)) {
        router_destroy(&self);
        return NULL;
    }
    self->next_route = 1;
    if (getrandom(&self->route_key, sizeof self->route_key, 0) != sizeof self->route_key)
        self->route_key = ((uint64_t)getpid() << 32) ^ (uint64_t)clock_now_us();
    self->stats.started_ms = clock_now_ms();
    self->next_heartbeat = self->stats.started_ms + cfg->heartbeat_ms;
    return self;
}

void router_destroy(router_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    router_t *self = *self_p;
    if (self->in_flight) {
        for (request_t *req = zhashx_first(self->in_flight); req;
             req = zhashx_next(self->in_flight))
            request_destroy(&req);
        zhashx_destroy(&self->in_flight);
    }
    if (self->services) {
        for (service_t *s = zhashx_first(self->services); s; s = zhashx_next(self->services)) {
            request_t *req;
            while ((req = queue_pop(s->queue)))
                request_destroy(&req);
            s_service_destroy(&s);
        }
        zhashx_destroy(&self->services);
    }
    if (self->workers) {
        for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
            free(w->status);
            free(w);
        }
        zhashx_destroy(&self->workers);
    }
    zhashx_destroy(&self->clients);
    zhashx_destroy(&self->queue_max);
    msgpack_zone_destroy(&self->zone);
    msgpack_sbuffer_destroy(&self->buf);
    free(self->pool_service);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

/* ---------------------------------------------------------------- views */

void router_stats(const router_t *self, router_stats_t *out)
{
    *out = self->stats;
    out->workers = zhashx_size(self->workers);
    out->in_flight = zhashx_size(self->in_flight);
    out->queued = 0;
    for (service_t *s = zhashx_first(self->services); s; s = zhashx_next(self->services))
        out->queued += queue_size(s->queue);
    out->draining = self->draining;
}

size_t router_each_service(const router_t *self, router_service_fn *fn, void *arg)
{
    size_t n = 0;
    for (service_t *s = zhashx_first(self->services); s; s = zhashx_next(self->services)) {
        router_service_info_t info = {.name = s->name,
                                      .workers = s->live,
                                      .queued = queue_size(s->queue),
                                      .queue_max = queue_max(s->queue),
                                      .in_flight = s->in_flight};
        for (worker_t *w = zlistx_first(s->workers); w; w = zlistx_next(s->workers)) {
            if (w->draining)
                continue;
            info.capacity += w->capacity;
            if (w->in_flight < w->capacity)
                info.credit += w->capacity - w->in_flight;
        }
        if (fn)
            fn(&info, arg);
        n++;
    }
    return n;
}

size_t router_each_status(const router_t *self, router_status_fn *fn, void *arg)
{
    size_t n = 0;
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        if (!w->status_size || strcmp(w->service->name, self->pool_service) != 0)
            continue;
        router_status_info_t info = {.worker = w->name,
                                     .service = w->service->name,
                                     .status = w->status,
                                     .status_size = w->status_size};
        if (fn)
            fn(&info, arg);
        n++;
    }
    return n;
}

size_t router_each_worker(const router_t *self, router_worker_fn *fn, void *arg)
{
    size_t n = 0;
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        router_worker_info_t info = {.worker = w->name,
                                     .service = w->service->name,
                                     .capacity = w->capacity,
                                     .in_flight = w->in_flight,
                                     .draining = w->draining,
                                     .held = w->held,
                                     .status = w->status,
                                     .status_size = w->status_size};
        if (fn)
            fn(&info, arg);
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------- operator drain */

/*  sys drain: the worker gets no new requests; it keeps what it holds, and stays
    registered (its heartbeats keep it alive) with in_flight going to 0, when an
    operator can stop it without losing anything. If it was its service's last live
    worker, the queue is answered 503 like when the last worker leaves. A READY
    from it (a restart, or a reconnect) registers it afresh, undrained. */
int router_drain_worker(router_t *self, const char *name)
{
    for (worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        if (strcmp(w->name, name) != 0)
            continue;
        if (!w->draining) {
            w->draining = true;
            w->held = true;
            w->service->live--;
            slog_info("worker %s (%s): drained by an operator, holding %u", w->name,
                      w->service->name, w->in_flight);
            s_service_check(self, w->service);
        }
        return 0;
    }
    return -1;
}
