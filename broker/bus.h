/*  bus.h - the event bus: workers PUB into the broker's XSUB, gateways SUB from its
    XPUB. The broker forwards events one way and subscriptions the other, in its own
    loop (what czmq's zproxy does in a thread, without the thread). Events are not
    inspected: the broker is a switchboard for them, not a filter.
*/
#ifndef SLUICE_BROKER_BUS_H
#define SLUICE_BROKER_BUS_H

#include <czmq.h>

/*  Moves up to max whole messages that are ready on from to to, without copying
    and without blocking. Returns how many were moved. */
int bus_forward(zsock_t *from, zsock_t *to, int max);

#endif
