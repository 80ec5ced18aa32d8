/*  events.c - PUB to every broker. See events.h. */
#include "events.h"
#include "slog.h"
#include "smp.h"

#include <czmq.h>

struct events_t {
    zsock_t *pub;
    uint64_t published;
};

events_t *events_new(const char *const *endpoints, size_t n, const curve_t *curve)
{
    events_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->pub = zsock_new(ZMQ_PUB);
    if (!self->pub) {
        free(self);
        return NULL;
    }
    if (curve_apply_client(curve, zsock_resolve(self->pub)) != 0) {
        slog_error("db: cannot set the CurveZMQ keys of the event publisher");
        events_destroy(&self);
        return NULL;
    }
    zsock_set_linger(self->pub, 1000); /* events of the last ops still leave on exit */
    zsock_set_sndhwm(self->pub, 100000);
    for (size_t i = 0; i < n; i++) {
        if (zsock_connect(self->pub, "%s", endpoints[i]) != 0) {
            slog_error("db: cannot connect the event publisher to %s", endpoints[i]);
            events_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void events_destroy(events_t **self_p)
{
    events_t *self = *self_p;
    if (!self)
        return;
    zsock_destroy(&self->pub);
    free(self);
    *self_p = NULL;
}

void events_publish(events_t *self, int64_t user_id, const void *body, size_t size)
{
    char topic[48];
    snprintf(topic, sizeof topic, "user/%" PRId64 "/", user_id);
    zmsg_t *msg = smp_event_build(topic, body, size);
    /* PUB never blocks: with no subscriber, or a full queue, the event is dropped,
       and devices recover from `after=seq` */
    if (zmsg_send(&msg, self->pub) != 0)
        zmsg_destroy(&msg);
    else
        self->published++;
}

uint64_t events_published(const events_t *self)
{
    return self->published;
}
