/*  notify_msg.h - what a notify WebSocket client sends (/v1/sync/notify): its
    messages put together from fragments, and parsed. Pure (no libwebsockets, no
    connection), so that tests/fuzz/fuzz_gateway_ws.c can drive it with any bytes;
    notify.c calls it from notify_on_receive(). docs/api.md: the only client message
    is {"type":"ping"}; anything else gets a bad_request error and the socket stays
    open; a message above max_ws_message_bytes (all fragments together) closes it
    with 1009.
*/
#ifndef SLUICE_GATEWAY_NOTIFY_MSG_H
#define SLUICE_GATEWAY_NOTIFY_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fragments of one message received so far. Zeroed to start. */
typedef struct {
    uint8_t *buf; /* owned; NULL when nothing is kept */
    size_t len;
} notify_rx_t;

typedef enum {
    NOTIFY_RX_MORE,    /* kept; the message is not whole yet */
    NOTIFY_RX_MESSAGE, /* whole: *msg, *msg_len until notify_rx_reset() */
    NOTIFY_RX_TOO_BIG, /* over max: close with 1009 (what was kept is freed) */
    NOTIFY_RX_NOMEM,
} notify_rx_result_t;

/* One chunk of a frame: last is "final fragment and nothing of the frame left";
   remaining is what libwebsockets says is still to come of this frame (counted
   against max before it arrives). */
notify_rx_result_t notify_rx_feed(notify_rx_t *rx, const void *data, size_t len, bool last,
                                  size_t remaining, size_t max, const uint8_t **msg,
                                  size_t *msg_len);

/* Frees what is kept; rx is ready for the next message. */
void notify_rx_reset(notify_rx_t *rx);

typedef enum {
    NOTIFY_MSG_PING, /* answer {"type":"pong"} */
    NOTIFY_MSG_BAD,  /* answer a bad_request error with the reason in why */
} notify_msg_kind_t;

/* Parses one whole client message. On NOTIFY_MSG_BAD, why (why_size > 0 bytes)
   holds the reason: NUL-terminated, valid UTF-8 (it goes into a JSON string). */
notify_msg_kind_t notify_msg_parse(const uint8_t *data, size_t len, bool binary, char *why,
                                   size_t why_size);

#endif
