/*  events.h - the DB worker's event publisher: one PUB socket connected to every
    broker's events-in endpoint, so each event reaches every gateway once per
    broker. Frames [topic, "SMP1", body] (smp_event_build). Callers publish only
    after the transaction that made the change has committed.
*/
#ifndef SLUICE_DB_EVENTS_H
#define SLUICE_DB_EVENTS_H

#include "curve.h"

#include <stddef.h>
#include <stdint.h>

typedef struct events_t events_t;

/* endpoints: the brokers' events-in (XSUB) endpoints. NULL on failure. */
events_t *events_new(const char *const *endpoints, size_t n, const curve_t *curve);
void events_destroy(events_t **self_p);

/* Publishes body (one MessagePack map) on topic "user/<user_id>/". */
void events_publish(events_t *self, int64_t user_id, const void *body, size_t size);
uint64_t events_published(const events_t *self);

#endif
