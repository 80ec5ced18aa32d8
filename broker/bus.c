/*  bus.c - in-loop XSUB/XPUB forwarding. See bus.h. */
#include "bus.h"
#include "slog.h"

#include <errno.h>
#include <stdbool.h>

int bus_forward(zsock_t *from, zsock_t *to, int max)
{
    void *in = zsock_resolve(from);
    void *out = zsock_resolve(to);
    int moved = 0;
    zmq_msg_t part;
    zmq_msg_init(&part);
    while (moved < max) {
        if (zmq_msg_recv(&part, in, ZMQ_DONTWAIT) < 0)
            break; /* EAGAIN: nothing more ready */
        /* the rest of a message is already here once its first frame is; once one
           part cannot be sent (XPUB and XSUB drop, they do not block), the rest of
           that message is dropped too so no half message goes out */
        bool dropping = false;
        for (;;) {
            int more = zmq_msg_more(&part);
            if (!dropping &&
                zmq_msg_send(&part, out, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) < 0) {
                slog_debug("event bus: message dropped: %s", zmq_strerror(errno));
                dropping = true;
            }
            if (!more || zmq_msg_recv(&part, in, 0) < 0)
                break;
        }
        moved++;
    }
    zmq_msg_close(&part);
    return moved;
}
