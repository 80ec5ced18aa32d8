/*  broker.h - the broker process's context: its four sockets, the router, and the
    one loop that drives them (plus the janitor tick and signals).

    Shutdown (SIGTERM or SIGINT): new requests get 503, queued ones are answered 503
    at once, workers are sent DISCONNECT; the loop then waits up to drain_ms for
    replies to what workers still hold, answers the rest 503, and returns 0. A
    second signal stops the wait.
*/
#ifndef SLUICE_BROKER_BROKER_H
#define SLUICE_BROKER_BROKER_H

#include "router.h"

#include <stdint.h>

typedef struct broker_t broker_t;

typedef struct {
    const char *frontend;   /* ROUTER bind endpoint for clients */
    const char *backend;    /* ROUTER bind endpoint for workers */
    const char *events_in;  /* XSUB bind endpoint for publishers */
    const char *events_out; /* XPUB bind endpoint for subscribers */
    int64_t drain_ms;       /* on shutdown, how long to wait for in-flight replies */
    const char *curve_cert;  /* CurveZMQ key pair (curve.h); NULL or "": plain TCP */
    const char *curve_allow; /* folder of the public certificates of allowed peers */
    router_config_t router;
} broker_config_t;

/* Binds every socket. Returns NULL after logging why (bad setting, port in use). */
broker_t *broker_new(const broker_config_t *cfg);

/* Runs until a signal asks it to stop and shutdown is done. Returns 0. */
int broker_run(broker_t *self);

void broker_destroy(broker_t **self_p);

#endif
