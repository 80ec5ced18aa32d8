/*  sys.h - the `sys` service, answered by the broker itself (protocol.md):
    `status` (broker counters, per-service load, the pool status each db worker last
    sent in its heartbeat), `services` (names of services with live workers),
    `workers` (every registered worker) and `drain` (an operator stops new work to a
    worker: sluicectl drain).
*/
#ifndef SLUICE_BROKER_SYS_H
#define SLUICE_BROKER_SYS_H

#include "router.h"
#include "smp.h"

#include <msgpack.h>

#define SYS_SERVICE "sys"

/*  Writes the REPLY body for the REQUEST m into buf (cleared first): 200 with data
    for a known op, 400 bad_request for an unknown op or bad args, 404 not_found for
    a drain of no known worker. Only `drain` changes the router. */
void sys_answer(router_t *router, const smp_msg_t *m, msgpack_sbuffer *buf);

#endif
