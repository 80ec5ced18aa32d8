/*  sys.h - the `sys` service, answered by the broker itself (protocol.md):
    `status` (broker counters, per-service load, the pool status each db worker last
    sent in its heartbeat) and `services` (names of services with live workers).
*/
#ifndef SLUICE_BROKER_SYS_H
#define SLUICE_BROKER_SYS_H

#include "router.h"
#include "smp.h"

#include <msgpack.h>

#define SYS_SERVICE "sys"

/*  Writes the REPLY body for op into buf (cleared first): 200 with data for a known
    op, 400 bad_request otherwise. */
void sys_answer(const router_t *router, smp_bytes_t op, msgpack_sbuffer *buf);

#endif
