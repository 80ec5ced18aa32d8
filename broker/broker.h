/*  broker.h - the broker process's context: its four sockets, the router, and the
    one loop that drives them (plus the janitor tick and signals).

    Shutdown (SIGTERM or SIGINT): new requests get 503, queued ones are answered 503
    at once, workers are sent DISCONNECT; the loop then waits up to drain_ms for
    replies to what workers still hold, answers the rest 503, and returns 0. A
    second signal stops the wait.
*/
#ifndef SLUICE_BROKER_BROKER_H
#define SLUICE_BROKER_BROKER_H

#include "curve.h"
#include "router.h"

#include <stdint.h>

typedef struct broker_t broker_t;

/* A SIGHUP, called on the broker's loop. */
typedef void(broker_reload_fn)(void *arg, broker_t *broker);

typedef struct {
    const char *frontend;    /* ROUTER bind endpoint for clients */
    const char *backend;     /* ROUTER bind endpoint for workers */
    const char *events_in;   /* XSUB bind endpoint for publishers */
    const char *events_out;  /* XPUB bind endpoint for subscribers */
    int64_t drain_ms;        /* on shutdown, how long to wait for in-flight replies */
    const char *curve_cert;  /* CurveZMQ key pair (curve.h); NULL or "": plain TCP */
    const char *curve_allow; /* folder of the public certificates of allowed peers */
    router_config_t router;
    broker_reload_fn *on_reload; /* SIGHUP (NULL: ignored) */
    void *reload_arg;
} broker_config_t;

/*  Checks every setting of cfg, CurveZMQ files included, without making a socket:
    0, or -1 with the reason (naming the setting) in why. A program calls it before
    broker_new, so a bad setting is reported as such even when a port is taken. */
int broker_check(const broker_config_t *cfg, char *why, size_t why_size);

/* Binds every socket. Returns NULL after logging why (bad setting, port in use). */
broker_t *broker_new(const broker_config_t *cfg);

/*  CurveZMQ on: zauth reads folder anew (it may be another folder than at start),
    so a key removed from it is refused from the next handshake on and a key added
    is let in; connections already made stay. Returns the number of public keys
    found, or -1 with why (CurveZMQ off, not a folder): nothing changed then. */
int broker_curve_allow(broker_t *self, const char *folder, char *why, size_t why_size);

/* The broker's own keys (disabled when CurveZMQ is off). */
const curve_t *broker_curve(const broker_t *self);

/* Runs until a signal asks it to stop and shutdown is done. Returns 0. */
int broker_run(broker_t *self);

void broker_destroy(broker_t **self_p);

#endif
