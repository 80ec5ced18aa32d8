/*  events.c - reference-counted topic subscriptions on one SUB. See events.h. */
#include "events.h"
#include "clock.h"
#include "slog.h"
#include "smp.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>

#define S_DRAIN_MAX 1024

typedef struct {
    size_t refs;      /* holders of this subscription */
    int64_t ready_ms; /* subscribed at + settle */
} s_topic_t;

struct events_t {
    zsock_t *sub;
    uv_poll_t poll;
    zhashx_t *topics; /* "user/<id>/" -> s_topic_t (owned) */
    int64_t settle_ms;
    events_fn *fn;
    void *arg;
    msgpack_zone zone;
    bool draining;
    uint64_t received;
    /* Every worker publishes to every broker, so each event arrives once per
       broker: a copy byte-identical to one seen in the last S_DEDUPE_MS is
       dropped (events carry what makes them unique: item.seq, ids). */
    zhashx_t *seen; /* hash of topic + body (hex) -> time seen + 1 */
    zlistx_t *fifo; /* s_seen_t, oldest first */
    uint64_t duplicates;
};

#define S_DEDUPE_MS 2000

typedef struct {
    char key[17];
    int64_t at;
} s_seen_t;

static void s_on_poll(uv_poll_t *handle, int status, int events)
{
    (void)status;
    (void)events;
    events_drain(handle->data);
}

static void s_topic_free(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

events_t *events_new(uv_loop_t *loop, const char *endpoints, const curve_t *curve, int64_t settle_ms,
                     events_fn *fn, void *arg)
{
    events_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->sub = zsock_new(ZMQ_SUB);
    if (!self->sub || curve_apply_client(curve, zsock_resolve(self->sub)) != 0) {
        slog_error("events: cannot make the SUB socket (CurveZMQ keys?)");
        zsock_destroy(&self->sub);
        free(self);
        return NULL;
    }
    zsock_set_linger(self->sub, 0);
    zsock_set_rcvhwm(self->sub, 100000);
    zsock_set_rcvtimeo(self->sub, 0);
    char *list = strdup(endpoints);
    int ok = 0;
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (zsock_connect(self->sub, "%s", ep) != 0) {
            slog_error("events: cannot connect to '%s'", ep);
            ok = -1;
            break;
        }
        ok++;
    }
    free(list);
    if (ok <= 0) {
        zsock_destroy(&self->sub);
        free(self);
        return NULL;
    }
    self->seen = zhashx_new();
    zhashx_set_destructor(self->seen, NULL);
    self->fifo = zlistx_new();
    zlistx_set_destructor(self->fifo, s_topic_free);
    self->topics = zhashx_new();
    zhashx_set_destructor(self->topics, s_topic_free);
    self->settle_ms = settle_ms;
    self->fn = fn;
    self->arg = arg;
    msgpack_zone_init(&self->zone, 4096);
    uv_poll_init(loop, &self->poll, zsock_fd(self->sub));
    self->poll.data = self;
    uv_poll_start(&self->poll, UV_READABLE, s_on_poll);
    return self;
}

static void s_poll_closed(uv_handle_t *handle)
{
    events_t *self = handle->data;
    zsock_destroy(&self->sub);
    free(self);
}

void events_destroy(events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    events_t *self = *self_p;
    zhashx_destroy(&self->topics);
    zhashx_destroy(&self->seen);
    zlistx_destroy(&self->fifo);
    msgpack_zone_destroy(&self->zone);
    uv_poll_stop(&self->poll);
    uv_close((uv_handle_t *)&self->poll, s_poll_closed);
    *self_p = NULL;
}

static void s_topic_name(char out[40], int64_t user_id)
{
    snprintf(out, 40, "user/%" PRId64 "/", user_id);
}

void events_subscribe(events_t *self, int64_t user_id)
{
    char name[40];
    s_topic_name(name, user_id);
    s_topic_t *t = zhashx_lookup(self->topics, name);
    if (!t) {
        t = calloc(1, sizeof *t);
        t->ready_ms = clock_now_ms() + self->settle_ms;
        zhashx_insert(self->topics, name, t);
        zsock_set_subscribe(self->sub, name);
    }
    t->refs++;
}

void events_unsubscribe(events_t *self, int64_t user_id)
{
    char name[40];
    s_topic_name(name, user_id);
    s_topic_t *t = zhashx_lookup(self->topics, name);
    if (!t)
        return;
    if (--t->refs == 0) {
        zsock_set_unsubscribe(self->sub, name);
        zhashx_delete(self->topics, name);
    }
}

int64_t events_ready_at(events_t *self, int64_t user_id)
{
    char name[40];
    s_topic_name(name, user_id);
    s_topic_t *t = zhashx_lookup(self->topics, name);
    return t ? t->ready_ms : 0;
}

/* "user/<digits>/" -> id; -1 for any other topic */
static int64_t s_user_of(smp_bytes_t topic)
{
    if (topic.size < 7 || memcmp(topic.data, "user/", 5) != 0 || topic.data[topic.size - 1] != '/')
        return -1;
    int64_t id = 0;
    for (size_t i = 5; i + 1 < topic.size; i++) {
        uint8_t c = topic.data[i];
        if (c < '0' || c > '9' || id > (INT64_MAX - 9) / 10)
            return -1;
        id = id * 10 + (c - '0');
    }
    return id;
}

/* true when msg is a copy of an event seen in the last S_DEDUPE_MS */
static bool s_duplicate(events_t *self, zmsg_t *msg)
{
    int64_t now = clock_now_ms();
    s_seen_t *old;
    while ((old = zlistx_first(self->fifo)) && now - old->at > S_DEDUPE_MS) {
        if ((intptr_t)zhashx_lookup(self->seen, old->key) == old->at + 1)
            zhashx_delete(self->seen, old->key);
        zlistx_delete(self->fifo, zlistx_cursor(self->fifo));
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over every frame, lengths included */
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg)) {
        size_t n = zframe_size(f);
        const uint8_t *d = zframe_data(f);
        for (size_t i = 0; i < sizeof n; i++)
            h = (h ^ ((n >> (8 * i)) & 0xff)) * 1099511628211ULL;
        for (size_t i = 0; i < n; i++)
            h = (h ^ d[i]) * 1099511628211ULL;
    }
    s_seen_t *seen = calloc(1, sizeof *seen);
    if (!seen)
        return false; /* no memory to remember it: deliver, a duplicate beats a loss */
    snprintf(seen->key, sizeof seen->key, "%016" PRIx64, h);
    if (zhashx_lookup(self->seen, seen->key)) {
        free(seen);
        return true;
    }
    seen->at = now;
    zhashx_update(self->seen, seen->key, (void *)(intptr_t)(now + 1));
    zlistx_add_end(self->fifo, seen);
    return false;
}

void events_drain(events_t *self)
{
    if (self->draining)
        return;
    self->draining = true;
    int n = 0;
    while (n < S_DRAIN_MAX && (zsock_events(self->sub) & ZMQ_POLLIN)) {
        zmsg_t *msg = zmsg_recv(self->sub);
        if (!msg)
            break;
        n++;
        if (s_duplicate(self, msg)) {
            self->duplicates++;
            zmsg_destroy(&msg);
            continue;
        }
        smp_bytes_t topic;
        msgpack_object body;
        const char *reason = NULL;
        msgpack_zone_clear(&self->zone);
        if (smp_event_parse(msg, &self->zone, &topic, &body, &reason) != 0) {
            slog_warn("events: malformed event dropped: %s", reason);
        } else {
            int64_t user = s_user_of(topic);
            if (user < 0) {
                slog_debug("events: event on a topic that is not a user's dropped");
            } else {
                self->received++;
                self->fn(self->arg, user, &body);
            }
        }
        zmsg_destroy(&msg);
    }
    self->draining = false;
}

size_t events_topics(const events_t *self)
{
    return zhashx_size(self->topics);
}

uint64_t events_received(const events_t *self)
{
    return self->received;
}
