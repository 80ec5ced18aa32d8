/*  sys.c - the `sys` service. See sys.h and docs/protocol.md ("Service sys"). */
#include "sys.h"
#include "clock.h"
#include "mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    msgpack_packer *pk;
    msgpack_zone *zone;
    bool live_only; /* `services`: names only, of services with live workers */
} s_ctx_t;

static void s_pack_service(const router_service_info_t *info, void *arg)
{
    s_ctx_t *ctx = arg;
    msgpack_packer *pk = ctx->pk;
    if (ctx->live_only) {
        if (info->workers)
            mp_pack_cstr(pk, info->name);
        return;
    }
    mp_pack_cstr(pk, info->name);
    msgpack_pack_map(pk, 7);
    mp_pack_kv_int(pk, "workers", (int64_t)info->workers);
    mp_pack_kv_int(pk, "queued", (int64_t)info->queued);
    mp_pack_kv_int(pk, "capacity", (int64_t)info->capacity);
    mp_pack_kv_int(pk, "in_flight", (int64_t)info->in_flight);
    mp_pack_kv_int(pk, "credit", (int64_t)info->credit);
    mp_pack_kv_int(pk, "queue_max", (int64_t)info->queue_max);
    mp_pack_kv_int(pk, "queue_free",
                   (int64_t)(info->queue_max > info->queued ? info->queue_max - info->queued : 0));
}

static void s_count_live(const router_service_info_t *info, void *arg)
{
    if (info->workers)
        (*(size_t *)arg)++;
}

/*  A pool entry is the worker's own heartbeat map plus "worker" naming it (unless
    the worker named itself there already). The map was checked by the codec when
    it arrived; if it somehow does not unpack, the entry is just the name. */
static void s_pack_pool(const router_status_info_t *info, void *arg)
{
    s_ctx_t *ctx = arg;
    msgpack_packer *pk = ctx->pk;
    msgpack_object obj;
    size_t off = 0;
    msgpack_zone_clear(ctx->zone);
    if (msgpack_unpack((const char *)info->status, info->status_size, &off, ctx->zone, &obj) !=
            MSGPACK_UNPACK_SUCCESS ||
        obj.type != MSGPACK_OBJECT_MAP) {
        msgpack_pack_map(pk, 1);
        mp_pack_kv_str(pk, "worker", info->worker);
        return;
    }
    bool named = mp_get(&obj, "worker") != NULL;
    msgpack_pack_map(pk, obj.via.map.size + (named ? 0 : 1));
    if (!named)
        mp_pack_kv_str(pk, "worker", info->worker);
    for (uint32_t i = 0; i < obj.via.map.size; i++) {
        msgpack_pack_object(pk, obj.via.map.ptr[i].key);
        msgpack_pack_object(pk, obj.via.map.ptr[i].val);
    }
}

static void s_status(const router_t *router, msgpack_packer *pk, msgpack_zone *zone)
{
    router_stats_t st;
    router_stats(router, &st);
    s_ctx_t ctx = {pk, zone, false};

    msgpack_pack_map(pk, 2);
    mp_pack_kv_int(pk, "status", 200);
    mp_pack_cstr(pk, "data");
    msgpack_pack_map(pk, 3);

    mp_pack_cstr(pk, "broker");
    msgpack_pack_map(pk, 20);
    mp_pack_kv_int(pk, "uptime_s", (clock_now_ms() - st.started_ms) / 1000);
    mp_pack_kv_str(pk, "version", SLUICE_VERSION);
    mp_pack_kv_int(pk, "pid", (int64_t)getpid());
    mp_pack_kv_bool(pk, "draining", st.draining);
    mp_pack_kv_int(pk, "workers", (int64_t)st.workers);
    mp_pack_kv_int(pk, "queued", (int64_t)st.queued);
    mp_pack_kv_int(pk, "in_flight", (int64_t)st.in_flight);
    mp_pack_kv_int(pk, "requests", (int64_t)st.requests);
    mp_pack_kv_int(pk, "replies", (int64_t)st.replies);
    mp_pack_kv_int(pk, "partials", (int64_t)st.partials);
    mp_pack_kv_int(pk, "unavailable", (int64_t)st.unavailable);
    mp_pack_kv_int(pk, "timeouts", (int64_t)st.timeouts);
    mp_pack_kv_int(pk, "worker_lost", (int64_t)st.worker_lost);
    mp_pack_kv_int(pk, "resent", (int64_t)st.resent);
    mp_pack_kv_int(pk, "cancelled", (int64_t)st.cancelled);
    mp_pack_kv_int(pk, "bad_request", (int64_t)st.bad_request);
    mp_pack_kv_int(pk, "dropped", (int64_t)st.dropped);
    mp_pack_kv_int(pk, "worker_errors", (int64_t)st.worker_errors);
    mp_pack_kv_int(pk, "late_replies", (int64_t)st.late_replies);
    mp_pack_kv_int(pk, "workers_lost", (int64_t)st.workers_lost);

    mp_pack_cstr(pk, "services");
    msgpack_pack_map(pk, (uint32_t)router_each_service(router, NULL, NULL));
    router_each_service(router, s_pack_service, &ctx);

    mp_pack_cstr(pk, "pools");
    msgpack_pack_array(pk, (uint32_t)router_each_status(router, NULL, NULL));
    router_each_status(router, s_pack_pool, &ctx);
}

static void s_services(const router_t *router, msgpack_packer *pk)
{
    size_t live = 0;
    router_each_service(router, s_count_live, &live);
    s_ctx_t ctx = {pk, NULL, true};
    msgpack_pack_map(pk, 2);
    mp_pack_kv_int(pk, "status", 200);
    mp_pack_cstr(pk, "data");
    msgpack_pack_array(pk, (uint32_t)live);
    router_each_service(router, s_pack_service, &ctx);
}

/* The name a worker gives itself in its heartbeat map ("worker"), if any. */
static bool s_own_name(const router_worker_info_t *info, msgpack_zone *zone, const char **name,
                       size_t *len)
{
    msgpack_object obj;
    size_t off = 0;
    if (!info->status_size)
        return false;
    msgpack_zone_clear(zone);
    return msgpack_unpack((const char *)info->status, info->status_size, &off, zone, &obj) ==
               MSGPACK_UNPACK_SUCCESS &&
           mp_get_str(&obj, "worker", name, len);
}

static void s_pack_worker(const router_worker_info_t *info, void *arg)
{
    s_ctx_t *ctx = arg;
    msgpack_packer *pk = ctx->pk;
    const char *name;
    size_t len;
    bool named = s_own_name(info, ctx->zone, &name, &len);
    msgpack_pack_map(pk, named ? 7 : 6);
    mp_pack_kv_str(pk, "worker", info->worker);
    if (named) {
        mp_pack_cstr(pk, "name");
        mp_pack_strn(pk, name, len);
    }
    mp_pack_kv_str(pk, "service", info->service);
    mp_pack_kv_int(pk, "capacity", (int64_t)info->capacity);
    mp_pack_kv_int(pk, "in_flight", (int64_t)info->in_flight);
    mp_pack_kv_bool(pk, "draining", info->draining);
    mp_pack_kv_bool(pk, "held", info->held);
}

static void s_workers(const router_t *router, msgpack_packer *pk, msgpack_zone *zone)
{
    s_ctx_t ctx = {pk, zone, false};
    msgpack_pack_map(pk, 2);
    mp_pack_kv_int(pk, "status", 200);
    mp_pack_cstr(pk, "data");
    msgpack_pack_array(pk, (uint32_t)router_each_worker(router, NULL, NULL));
    router_each_worker(router, s_pack_worker, &ctx);
}

#define S_DRAIN_MAX 64 /* workers one drain can match (one name, several brokers' ids) */

typedef struct {
    const char *want; /* the name asked for */
    size_t want_len;
    msgpack_zone *zone;
    char matched[S_DRAIN_MAX][2 * 255 + 1]; /* routing-id names, copied: draining may
                                               change the table */
    size_t count;
} s_drain_t;

static void s_match_worker(const router_worker_info_t *info, void *arg)
{
    s_drain_t *d = arg;
    const char *name;
    size_t len;
    bool match =
        (strlen(info->worker) == d->want_len && memcmp(info->worker, d->want, d->want_len) == 0) ||
        (s_own_name(info, d->zone, &name, &len) && len == d->want_len &&
         memcmp(name, d->want, len) == 0);
    if (match && d->count < S_DRAIN_MAX)
        snprintf(d->matched[d->count++], sizeof d->matched[0], "%s", info->worker);
}

/*  `drain` {"args": {"worker": NAME}}: NAME is a worker's routing-id name or the
    name it gives itself in its heartbeat ("worker"), as `workers` lists them. Every
    match is drained (see router_drain_worker). 200 {"drained": [routing-id names]},
    404 not_found when none matched. */
static void s_drain(router_t *router, const smp_msg_t *m, msgpack_sbuffer *buf, msgpack_packer *pk,
                    msgpack_zone *zone)
{
    const msgpack_object *args = mp_get(&m->body_obj, "args");
    s_drain_t *d = calloc(1, sizeof *d);
    if (!d) {
        mp_error_body(buf, 503, "unavailable", "broker out of memory");
        return;
    }
    if (!args || !mp_get_str(args, "worker", &d->want, &d->want_len) || d->want_len == 0) {
        mp_error_body(buf, 400, "bad_request", "drain needs args {\"worker\": name}");
        free(d);
        return;
    }
    d->zone = zone;
    router_each_worker(router, s_match_worker, d);
    if (d->count == 0) {
        mp_error_body(buf, 404, "not_found", "no worker with that name at this broker");
        free(d);
        return;
    }
    for (size_t i = 0; i < d->count; i++)
        router_drain_worker(router, d->matched[i]);
    /* draining a service's last worker answers its queue, in buf (the router's own
       buffer): the reply is written only after that */
    msgpack_sbuffer_clear(buf);
    msgpack_pack_map(pk, 2);
    mp_pack_kv_int(pk, "status", 200);
    mp_pack_cstr(pk, "data");
    msgpack_pack_map(pk, 1);
    mp_pack_cstr(pk, "drained");
    msgpack_pack_array(pk, (uint32_t)d->count);
    for (size_t i = 0; i < d->count; i++)
        mp_pack_cstr(pk, d->matched[i]);
    free(d);
}

void sys_answer(router_t *router, const smp_msg_t *m, msgpack_sbuffer *buf)
{
    smp_bytes_t op = m->op;
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    if (smp_bytes_eq(op, "status")) {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 1024);
        s_status(router, &pk, &zone);
        msgpack_zone_destroy(&zone);
    } else if (smp_bytes_eq(op, "services")) {
        s_services(router, &pk);
    } else if (smp_bytes_eq(op, "workers") || smp_bytes_eq(op, "drain")) {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 1024);
        if (smp_bytes_eq(op, "workers"))
            s_workers(router, &pk, &zone);
        else
            s_drain(router, m, buf, &pk, &zone);
        msgpack_zone_destroy(&zone);
    } else {
        mp_error_body(buf, 400, "bad_request",
                      "unknown sys op: use status, services, workers or drain");
    }
}
