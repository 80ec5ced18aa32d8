/*  health.c - /health and /metrics. See health.h.

    /health asks the broker two things at once: sys status (workers, queues,
    pools) and db.ping (through a DB worker to MariaDB). "ok" (200): a DB worker is
    live, db.ping answered, and every service the broker knows has a live worker;
    "degraded" (200): the database path works but some other service (e.g. chat)
    has no live worker; "down" (503): no DB worker, no answer from the database,
    or no broker.
*/
#include "health.h"
#include "auth_cache.h"
#include "events.h"
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

struct health_call_t {
    gw_t *gw;
    bool metrics;
    health_fn *fn;
    void *arg;
    upstream_call_t *sys;
    upstream_call_t *ping;
    int pending;  /* calls still out */
    bool started; /* health_start has returned */
    bool done;
    json_t *sys_data; /* /health: the sys status data, rendered */
    int sys_status;
    int ping_status;
};

static void s_packed(const char *op, msgpack_sbuffer *buf)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    validate_pack_head(&pk, op, 0, 0, NULL, true, NULL);
    msgpack_pack_map(&pk, 0);
}

static void s_finish(health_call_t *h, int status, char *body, size_t len, const char *type)
{
    h->done = true;
    h->fn(h->arg, status, body, len, type);
    json_decref(h->sys_data);
    free(h);
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
        .outbound_bytes = gw->outbound ? outbound_total(gw->outbound) : 0,
        .outbound_budget = gw->outbound ? outbound_budget(gw->outbound) : 0,
        .events_received = events_received(gw->events),
    };
    return g;
}

static void s_health_done(health_call_t *h)
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
    health_call_t *h = arg;
    if (!final)
        return;
    h->sys = NULL;
    h->pending--;
    h->sys_status = status;
    const msgpack_object *data = status == 200 ? mp_get(body, "data") : NULL;
    if (h->metrics) {
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        metrics_gauges_t g = s_gauges(h->gw);
        metrics_render(h->gw->metrics, out, &g, data);
        fclose(out);
        s_finish(h, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
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
    health_call_t *h = arg;
    if (!final)
        return;
    h->ping = NULL;
    h->pending--;
    h->ping_status = status;
    if (h->pending == 0 && h->started)
        s_health_done(h);
}

health_call_t *health_start(gw_t *gw, bool metrics, health_fn *fn, void *arg)
{
    health_call_t *h = calloc(1, sizeof *h);
    h->gw = gw;
    h->metrics = metrics;
    h->fn = fn;
    h->arg = arg;
    h->sys_status = 503;
    h->ping_status = 503;
    msgpack_sbuffer buf;
    s_packed("status", &buf);
    h->sys = upstream_call(gw->upstream, "sys", buf.data, buf.size, S_DEADLINE_MS, s_on_sys, h);
    msgpack_sbuffer_destroy(&buf);
    if (h->sys)
        h->pending++;
    if (!metrics) {
        s_packed("db.ping", &buf);
        h->ping =
            upstream_call(gw->upstream, "db", buf.data, buf.size, S_DEADLINE_MS, s_on_ping, h);
        msgpack_sbuffer_destroy(&buf);
        if (h->ping)
            h->pending++;
    }
    h->started = true;
    if (h->pending > 0)
        return h;
    /* nothing could be sent: answer now */
    if (metrics) {
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        metrics_gauges_t g = s_gauges(gw);
        metrics_render(gw->metrics, out, &g, NULL);
        fclose(out);
        s_finish(h, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
    } else {
        s_health_done(h);
    }
    return NULL;
}

void health_cancel(gw_t *gw, health_call_t **call_p)
{
    if (!call_p || !*call_p)
        return;
    health_call_t *h = *call_p;
    upstream_cancel(gw->upstream, &h->sys, false);
    upstream_cancel(gw->upstream, &h->ping, false);
    json_decref(h->sys_data);
    free(h);
    *call_p = NULL;
}
