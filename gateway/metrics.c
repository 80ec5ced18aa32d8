/*  metrics.c - counters, histograms and the Prometheus text. See metrics.h. */
#include "metrics.h"
#include "mp.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* statuses the gateway answers; anything else is counted as "other" */
static const int s_statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 409,
                                 411, 413, 426, 429, 431, 500, 502, 503, 504};
#define S_STATUS_COUNT (sizeof s_statuses / sizeof s_statuses[0])
#define S_STATUS_OTHER S_STATUS_COUNT

/* latency buckets, microseconds (rendered as seconds) */
static const int64_t s_buckets_us[] = {500,    1000,   2500,   5000,    10000,   25000,   50000,
                                       100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
#define S_BUCKET_COUNT (sizeof s_buckets_us / sizeof s_buckets_us[0])

typedef struct {
    uint64_t by_status[S_STATUS_COUNT + 1];
    uint64_t buckets[S_BUCKET_COUNT]; /* non-cumulative here, summed when rendered */
    uint64_t count;
    double sum_s;
} s_route_t;

struct metrics_t {
    s_route_t routes[ROUTE_COUNT + 1]; /* + ROUTE_UNMATCHED */
    zhashx_t *counters;                /* name -> uint64_t* (owned) */
};

static void s_free(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

metrics_t *metrics_new(void)
{
    metrics_t *self = calloc(1, sizeof *self);
    self->counters = zhashx_new();
    zhashx_set_destructor(self->counters, s_free);
    return self;
}

void metrics_destroy(metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy(&(*self_p)->counters);
    free(*self_p);
    *self_p = NULL;
}

void metrics_request(metrics_t *self, route_id_t route, int status, int64_t latency_us)
{
    if (route > ROUTE_UNMATCHED)
        route = ROUTE_UNMATCHED;
    s_route_t *r = &self->routes[route];
    size_t i = 0;
    while (i < S_STATUS_COUNT && s_statuses[i] != status)
        i++;
    r->by_status[i]++;
    for (size_t b = 0; b < S_BUCKET_COUNT; b++) {
        if (latency_us <= s_buckets_us[b]) {
            r->buckets[b]++;
            break;
        }
    }
    r->count++;
    r->sum_s += (double)latency_us / 1e6;
}

void metrics_count(metrics_t *self, const char *name)
{
    uint64_t *n = zhashx_lookup(self->counters, name);
    if (!n) {
        n = calloc(1, sizeof *n);
        zhashx_insert(self->counters, name, n);
    }
    (*n)++;
}

/* A label value with \, " and newline escaped as the format asks. */
static void s_label(FILE *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' || s[i] == '"')
            fputc('\\', out);
        if (s[i] == '\n') {
            fputs("\\n", out);
            continue;
        }
        fputc(s[i], out);
    }
}

/* A metric name part: [a-z0-9_] only. */
static void s_name(FILE *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        fputc(ok ? c : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : '_', out);
    }
}

static bool s_number(const msgpack_object *v, double *out)
{
    int64_t i;
    if (mp_as_int(v, &i)) {
        *out = (double)i;
        return true;
    }
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64) {
        *out = v->via.f64;
        return true;
    }
    if (v->type == MSGPACK_OBJECT_BOOLEAN) {
        *out = v->via.boolean ? 1 : 0;
        return true;
    }
    return false;
}

static void s_render_sys(FILE *out, const msgpack_object *sys)
{
    const msgpack_object *broker = mp_get(sys, "broker");
    if (broker && broker->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < broker->via.map.size; i++) {
            const msgpack_object *k = &broker->via.map.ptr[i].key;
            double v;
            if (k->type != MSGPACK_OBJECT_STR || !s_number(&broker->via.map.ptr[i].val, &v))
                continue;
            fputs("sluice_broker_", out);
            s_name(out, k->via.str.ptr, k->via.str.size);
            fprintf(out, " %.17g\n", v);
        }
    }
    const msgpack_object *services = mp_get(sys, "services");
    if (services && services->type == MSGPACK_OBJECT_MAP) {
        fputs("# HELP sluice_broker_queue_depth Requests queued in the broker, by service.\n"
              "# TYPE sluice_broker_queue_depth gauge\n",
              out);
        for (uint32_t i = 0; i < services->via.map.size; i++) {
            const msgpack_object *k = &services->via.map.ptr[i].key;
            const msgpack_object *s = &services->via.map.ptr[i].val;
            int64_t queued;
            if (k->type != MSGPACK_OBJECT_STR || !mp_get_int(s, "queued", &queued))
                continue;
            fputs("sluice_broker_queue_depth{service=\"", out);
            s_label(out, k->via.str.ptr, k->via.str.size);
            fprintf(out, "\"} %" PRId64 "\n", queued);
        }
        for (uint32_t i = 0; i < services->via.map.size; i++) {
            const msgpack_object *k = &services->via.map.ptr[i].key;
            const msgpack_object *s = &services->via.map.ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR || s->type != MSGPACK_OBJECT_MAP)
                continue;
            for (uint32_t j = 0; j < s->via.map.size; j++) {
                const msgpack_object *f = &s->via.map.ptr[j].key;
                double v;
                if (f->type != MSGPACK_OBJECT_STR || mp_str_eq(f, "queued") ||
                    !s_number(&s->via.map.ptr[j].val, &v))
                    continue;
                fputs("sluice_service_", out);
                s_name(out, f->via.str.ptr, f->via.str.size);
                fputs("{service=\"", out);
                s_label(out, k->via.str.ptr, k->via.str.size);
                fprintf(out, "\"} %.17g\n", v);
            }
        }
    }
    const msgpack_object *pools = mp_get(sys, "pools");
    if (pools && pools->type == MSGPACK_OBJECT_ARRAY) {
        fputs("# HELP sluice_pool_checked_out DB connections in use, per DB worker (all "
              "sluice_pool_* are per-worker pool gauges from heartbeats).\n",
              out);
        for (uint32_t i = 0; i < pools->via.array.size; i++) {
            const msgpack_object *p = &pools->via.array.ptr[i];
            const char *worker;
            size_t wlen;
            if (!mp_get_str(p, "worker", &worker, &wlen))
                continue;
            for (uint32_t j = 0; j < p->via.map.size; j++) {
                const msgpack_object *f = &p->via.map.ptr[j].key;
                double v;
                if (f->type != MSGPACK_OBJECT_STR || !s_number(&p->via.map.ptr[j].val, &v))
                    continue;
                fputs("sluice_pool_", out);
                s_name(out, f->via.str.ptr, f->via.str.size);
                fputs("{worker=\"", out);
                s_label(out, worker, wlen);
                fprintf(out, "\"} %.17g\n", v);
            }
        }
    }
}

void metrics_render(metrics_t *self, FILE *out, const metrics_gauges_t *g,
                    const msgpack_object *sys_status)
{
    fputs("# HELP sluice_gateway_http_requests_total HTTP requests answered, by route and "
          "status.\n# TYPE sluice_gateway_http_requests_total counter\n",
          out);
    for (size_t r = 0; r <= ROUTE_COUNT; r++) {
        for (size_t i = 0; i <= S_STATUS_COUNT; i++) {
            if (!self->routes[r].by_status[i])
                continue;
            fprintf(out, "sluice_gateway_http_requests_total{route=\"%s\",status=\"",
                    routes_label(r));
            if (i < S_STATUS_COUNT)
                fprintf(out, "%d", s_statuses[i]);
            else
                fputs("other", out);
            fprintf(out, "\"} %" PRIu64 "\n", self->routes[r].by_status[i]);
        }
    }
    fputs("# HELP sluice_gateway_http_request_duration_seconds Time from request head to "
          "response, by route.\n# TYPE sluice_gateway_http_request_duration_seconds histogram\n",
          out);
    for (size_t r = 0; r <= ROUTE_COUNT; r++) {
        const s_route_t *rt = &self->routes[r];
        if (!rt->count)
            continue;
        uint64_t cum = 0;
        for (size_t b = 0; b < S_BUCKET_COUNT; b++) {
            cum += rt->buckets[b];
            fprintf(out,
                    "sluice_gateway_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                    "%" PRIu64 "\n",
                    routes_label(r), (double)s_buckets_us[b] / 1e6, cum);
        }
        fprintf(
            out,
            "sluice_gateway_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
            "\n",
            routes_label(r), rt->count);
        fprintf(out, "sluice_gateway_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
                routes_label(r), rt->sum_s);
        fprintf(out,
                "sluice_gateway_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
                routes_label(r), rt->count);
    }
    fprintf(out,
            "# HELP sluice_gateway_open_websockets Open /v1/sync/notify WebSockets.\n"
            "# TYPE sluice_gateway_open_websockets gauge\n"
            "sluice_gateway_open_websockets %zu\n"
            "# HELP sluice_gateway_active_streams Open chat streams (SSE).\n"
            "# TYPE sluice_gateway_active_streams gauge\n"
            "sluice_gateway_active_streams %zu\n"
            "# HELP sluice_gateway_connections Client connections held.\n"
            "# TYPE sluice_gateway_connections gauge\n"
            "sluice_gateway_connections %zu\n"
            "# HELP sluice_gateway_broker_requests_pending SMP requests awaiting a reply.\n"
            "# TYPE sluice_gateway_broker_requests_pending gauge\n"
            "sluice_gateway_broker_requests_pending %zu\n"
            "# HELP sluice_gateway_event_topics Event topics subscribed.\n"
            "# TYPE sluice_gateway_event_topics gauge\n"
            "sluice_gateway_event_topics %zu\n"
            "# HELP sluice_gateway_auth_cache_entries Tokens cached.\n"
            "# TYPE sluice_gateway_auth_cache_entries gauge\n"
            "sluice_gateway_auth_cache_entries %zu\n"
            "# HELP sluice_gateway_rate_limit_entries Addresses and tokens tracked by the rate "
            "and connection limits.\n"
            "# TYPE sluice_gateway_rate_limit_entries gauge\n"
            "sluice_gateway_rate_limit_entries %zu\n"
            "# HELP sluice_gateway_unfinished_requests Requests whose head or body is still "
            "arriving (bounded by max_pending).\n"
            "# TYPE sluice_gateway_unfinished_requests gauge\n"
            "sluice_gateway_unfinished_requests %zu\n"
            "# HELP sluice_gateway_login_throttle_entries Usernames and addresses with failed "
            "logins counted.\n"
            "# TYPE sluice_gateway_login_throttle_entries gauge\n"
            "sluice_gateway_login_throttle_entries %zu\n"
            "# HELP sluice_gateway_outbound_bytes Bytes held for clients not reading them.\n"
            "# TYPE sluice_gateway_outbound_bytes gauge\n"
            "sluice_gateway_outbound_bytes %zu\n"
            "# HELP sluice_gateway_outbound_budget_bytes Their limit (outbound_budget_bytes).\n"
            "# TYPE sluice_gateway_outbound_budget_bytes gauge\n"
            "sluice_gateway_outbound_budget_bytes %zu\n"
            "# HELP sluice_gateway_events_received_total Events received from the brokers.\n"
            "# TYPE sluice_gateway_events_received_total counter\n"
            "sluice_gateway_events_received_total %" PRIu64 "\n",
            g->websockets, g->streams, g->connections, g->upstream_pending, g->topics,
            g->auth_cache_entries, g->rate_limit_entries, g->unfinished,
            g->login_throttle_entries, g->outbound_bytes, g->outbound_budget, g->events_received);
    if (zhashx_size(self->counters)) {
        fputs("# HELP sluice_gateway_events_total Refusals and closes, by reason.\n"
              "# TYPE sluice_gateway_events_total counter\n",
              out);
        for (uint64_t *n = zhashx_first(self->counters); n; n = zhashx_next(self->counters)) {
            const char *name = zhashx_cursor(self->counters);
            fprintf(out, "sluice_gateway_events_total{reason=\"");
            s_label(out, name, strlen(name));
            fprintf(out, "\"} %" PRIu64 "\n", *n);
        }
    }
    if (sys_status)
        s_render_sys(out, sys_status);
}
