/*  brokerlink.h - one DEALER to one broker's frontend, and a monitor that tells
    when its connection drops.

    A client that holds calls in flight on several brokers keeps one link per
    broker, so that when a broker dies (killed, restarted, or its link cut and
    silent past the ZeroMQ heartbeat timeout) the calls sent on that link are known
    and can be answered at once instead of at their deadlines. Used by the stream
    worker's client and the gateway's upstream; each polls the two sockets on its
    own loop.
*/
#ifndef SLUICE_BROKERLINK_H
#define SLUICE_BROKERLINK_H

#include "curve.h"

#include <czmq.h>

typedef struct {
    zsock_t *sock;    /* DEALER, connected to the broker's frontend */
    zsock_t *monitor; /* PAIR receiving the DEALER's connection events */
    char *endpoint;
} brokerlink_t;

/*  Opens the DEALER (CurveZMQ client when curve is on; IMMEDIATE, so a send with
    no live connection fails at once; no linger; ZeroMQ heartbeats 1 s / 3 s) and
    its monitor, and connects. Returns 0, or -1 after logging why (who: the
    caller's name for the log line). Close it either way. */
int brokerlink_open(brokerlink_t *self, const char *endpoint, const curve_t *curve,
                    const char *who);
void brokerlink_close(brokerlink_t *self);

/*  Reads every event the monitor has. Returns how many times the connection
    dropped (0 when it did not). */
int brokerlink_drops(brokerlink_t *self);

#endif
