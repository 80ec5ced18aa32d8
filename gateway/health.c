/*  health.c - /health and /metrics. See health.h.

    /health asks the broker two things at once: sys status (workers, queues,
    pools) and db.ping (through a DB worker to MariaDB). "ok" (200): a DB worker is
    live, db.ping answered, and every service the broker knows has a live worker;
    "degraded" (200): the database path works but some other service (e.g. chat)
    has no live worker; "down" (503): no DB worker, no answer from the database,
    or no broker.

    Both answers are built at most once per `health_cache_ms` (default 1 s): the
    requests that come meanwhile share the one in flight, or get the last answer
    while it is fresh. However hard a client hammers /health, the broker and MariaDB
    see one sys status and one db.ping a second from each gateway.
*/
#include "health.h"
#include "auth_cache.h"
#include "clock.h"
#include "events.h"
#include "listener.h"
#include "login_throttle.h"
#include "metrics.h"
#include "mp.h"
#include "notify.h"
#include "outbound.h"
#include "render.h"
#include "throttle.h"
#include "upstream.h"
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_DEADLINE_MS 2000

/* A request waiting for the answer being built. */
struct health_call_t {
    health_call_t *next;
    health_fn *fn;
    void *arg;
};

/* One answer (/health or /metrics): the build in flight, who waits for it, and the
   last one built. */
typedef struct {
    gw_t *gw;
    bool metrics;
    health_call_t *waiters;
    bool building;
    upstream_call_t *sys;
    upstream_call_t *ping;
    int pending;      /* calls still out */
    bool started;     /* health_start has returned */
    json_t *sys_data; /* /health: the sys status data, rendered */
    int sys_status;
    int ping_status;
    char *body; /* the last answer, kept for cache_ms */
    size_t len;
    int status;
    const char *type;
    int64_t built_ms;
} s_answer_t;

struct health_t {
    s_answer_t answers[2]; /* [0] /health, [1] /metrics */
    int64_t cache_ms;
};

health_t *health_new(gw_t *gw, int64_t cache_ms)
{
    health_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    for (int i = 0; i < 2; i++) {
        self->answers[i].gw = gw;
        self->answers[i].metrics = i == 1;
    }
    self->cache_ms = cache_ms;
    return self;
}

void health_destroy(health_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    health_t *self = *self_p;
    for (int i = 0; i < 2; i++) {
        s_answer_t *a = &self->answers[i];
        upstream_cancel(a->gw->upstream, &a->sys, false);
        upstream_cancel(a->gw->upstream, &a->ping, false);
        json_decref(a->sys_data);
        while (a->waiters) {
            health_call_t *w = a->waiters;
            a->waiters = w->next;
            free(w);
        }
        free(a->body);
    }
    free(self);
    *self_p = NULL;
}

static metrics_gauges_t s_gauges(gw_t *gw)
{
    metrics_gauges_t g = {
        .connections = gw->connections,
        .websockets = notify_count(gw->notify),
        .streams = gw->streams_open,
        .upstream_pending = upstream_pending(gw->upstream),
        .topics = events_topics(gw->events),
        .auth_cache_entries = auth_cache_size(gw->auth),
        .rate_limit_entries = gw->throttle ? throttle_entries(gw->throttle) : 0,
        .unfinished = (gw->listener ? listener_pending(gw->listener) : 0) + gw->bodies_pending,
        .login_throttle_entries = gw->logins ? login_throttle_entries(gw->logins) : 0,
        .outbound_bytes = gw->outbound ? outbound_total(gw->outbound) : 0,
        .outbound_budget = gw->outbound ? outbound_budget(gw->outbound) : 0,
        .events_received = events_received(gw->events),
    };
    return g;
}

/*  /metrics from the broker's cached sys data (packed MessagePack in a->body, empty
    when the broker did not answer) and the gateway's own counters as they are now:
    only what costs the broker is cached. */
static void s_answer_metrics(const s_answer_t *a, health_fn *fn, void *arg)
{
    msgpack_unpacked data;
    msgpack_unpacked_init(&data);
    size_t off = 0;
    bool have = a->len > 0 && msgpack_unpack_next(&data, a->body, a->len, &off) ==
                                  MSGPACK_UNPACK_SUCCESS;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    metrics_gauges_t g = s_gauges(a->gw);
    metrics_render(a->gw->metrics, out, &g, have ? &data.data : NULL);
    fclose(out);
    msgpack_unpacked_destroy(&data);
    fn(arg, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* A malloc'd copy of the cached answer for one waiter (the callee owns it). */
static void s_answer_one(const s_answer_t *a, health_fn *fn, void *arg)
{
    if (a->metrics) {
        s_answer_metrics(a, fn, arg);
        return;
    }
    char *copy = malloc(a->len + 1);
    if (copy) {
        memcpy(copy, a->body, a->len);
        copy[a->len] = 0;
    }
    fn(arg, copy ? a->status : 500, copy, copy ? a->len : 0, a->type);
}

static void s_packed(const char *op, msgpack_sbuffer *buf)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    validate_pack_head(&pk, op, 0, 0, NULL, true, NULL);
    msgpack_pack_map(&pk, 0);
}

/* The answer is built: keep it, and give it to everyone waiting. */
static void s_finish(s_answer_t *h, int status, char *body, size_t len, const char *type)
{
    free(h->body);
    h->body = body ? body : strdup("");
    h->len = body ? len : 0;
    h->status = status;
    h->type = type;
    h->built_ms = clock_now_ms();
    h->building = false;
    json_decref(h->sys_data);
    h->sys_data = NULL;
    health_call_t *w = h->waiters;
    h->waiters = NULL;
    while (w) {
        health_call_t *next = w->next;
        s_answer_one(h, w->fn, w->arg);
        free(w);
        w = next;
    }
}


static void s_health_done(s_answer_t *h)
{
    gw_t *gw = h->gw;
    json_t *services = h->sys_data ? json_object_get(h->sys_data, "services") : NULL;
    json_t *db = services ? json_object_get(services, "db") : NULL;
    json_int_t db_workers = db ? json_integer_value(json_object_get(db, "workers")) : 0;
    bool db_ok = h->sys_status == 200 && db_workers >= 1 && h->ping_status == 200;
    bool all_served = true;
    const char *name;
    json_t *svc;
    if (services) {
        json_object_foreach(services, name, svc)
        {
            if (json_integer_value(json_object_get(svc, "workers")) < 1)
                all_served = false;
        }
    }
    const char *status = !db_ok ? "down" : all_served ? "ok" : "degraded";
    json_t *out = json_object();
    json_object_set_new(out, "status", json_string(status));
    json_t *broker = h->sys_data ? json_object_get(h->sys_data, "broker") : NULL;
    json_t *pools = h->sys_data ? json_object_get(h->sys_data, "pools") : NULL;
    json_object_set_new(out, "broker", broker ? json_incref(broker) : json_object());
    json_object_set_new(out, "services", services ? json_incref(services) : json_object());
    json_object_set_new(out, "pools", pools ? json_incref(pools) : json_array());
    json_object_set_new(
        out, "database",
        json_pack("{s:b,s:i}", "answered", h->ping_status == 200, "status", h->ping_status));
    metrics_gauges_t g = s_gauges(gw);
    json_object_set_new(out, "gateway",
                        json_pack("{s:I,s:I,s:I,s:I,s:b}", "websockets", (json_int_t)g.websockets,
                                  "connections", (json_int_t)g.connections, "pending",
                                  (json_int_t)g.upstream_pending, "streams", (json_int_t)g.streams,
                                  "stopping", gw->stopping));
    size_t len = 0;
    char *text = render_dump(out, &len);
    s_finish(h, db_ok && !gw->stopping ? 200 : 503, text, len, "application/json");
}

static void s_on_sys(void *arg, bool final, int status, const msgpack_object *body)
{
    s_answer_t *h = arg;
    if (!final)
        return;
    h->sys = NULL;
    h->pending--;
    h->sys_status = status;
    const msgpack_object *data = status == 200 ? mp_get(body, "data") : NULL;
    if (h->metrics) {
        msgpack_sbuffer packed;
        msgpack_sbuffer_init(&packed);
        if (data) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, &packed, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, *data);
        }
        s_finish(h, 200, packed.data, packed.size, NULL);
        return;
    }
    if (data)
        h->sys_data = render_json(data, NULL);
    if (h->pending == 0 && h->started)
        s_health_done(h);
}

static void s_on_ping(void *arg, bool final, int status, const msgpack_object *body)
{
    (void)body;
    s_answer_t *h = arg;
    if (!final)
        return;
    h->ping = NULL;
    h->pending--;
    h->ping_status = status;
    if (h->pending == 0 && h->started)
        s_health_done(h);
}

/* Sends the calls one answer is built from; it may be finished before the return. */
static void s_build(s_answer_t *h)
{
    gw_t *gw = h->gw;
    h->building = true;
    h->started = false;
    h->pending = 0;
    h->sys_status = 503;
    h->ping_status = 503;
    msgpack_sbuffer buf;
    s_packed("status", &buf);
    h->sys = upstream_call(gw->upstream, "sys", buf.data, buf.size, S_DEADLINE_MS, s_on_sys, h);
    msgpack_sbuffer_destroy(&buf);
    if (h->sys)
        h->pending++;
    if (!h->metrics) {
        s_packed("db.ping", &buf);
        h->ping =
            upstream_call(gw->upstream, "db", buf.data, buf.size, S_DEADLINE_MS, s_on_ping, h);
        msgpack_sbuffer_destroy(&buf);
        if (h->ping)
            h->pending++;
    }
    h->started = true;
    if (h->pending > 0 || !h->building)
        return;
    /* nothing could be sent: answer now */
    if (h->metrics) {
        s_finish(h, 200, NULL, 0, NULL);
    } else {
        s_health_done(h);
    }
}

health_call_t *health_start(gw_t *gw, bool metrics, health_fn *fn, void *arg)
{
    health_t *self = gw->health;
    s_answer_t *h = &self->answers[metrics ? 1 : 0];
    if (!h->building && h->body && clock_now_ms() - h->built_ms < self->cache_ms) {
        s_answer_one(h, fn, arg);
        return NULL;
    }
    health_call_t *w = calloc(1, sizeof *w);
    if (!w) {
        fn(arg, 500, NULL, 0, "application/json");
        return NULL;
    }
    w->fn = fn;
    w->arg = arg;
    w->next = h->waiters;
    h->waiters = w;
    if (!h->building)
        s_build(h);
    /* answered already (no broker): w was freed with the other waiters */
    return h->building ? w : NULL;
}

void health_cancel(gw_t *gw, health_call_t **call_p)
{
    if (!call_p || !*call_p)
        return;
    health_call_t *w = *call_p;
    /* the build goes on for the others, and for the cache */
    for (int i = 0; i < 2; i++) {
        for (health_call_t **p = &gw->health->answers[i].waiters; *p; p = &(*p)->next) {
            if (*p == w) {
                *p = w->next;
                free(w);
                *call_p = NULL;
                return;
            }
        }
    }
    *call_p = NULL;
}
