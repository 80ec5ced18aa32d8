/*  notify_msg.c - a notify WebSocket client's messages: fragments put together,
    then parsed (notify_msg.h). */
#include "notify_msg.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

notify_rx_result_t notify_rx_feed(notify_rx_t *rx, const void *data, size_t len, bool last,
                                  size_t remaining, size_t max, const uint8_t **msg,
                                  size_t *msg_len)
{
    if (rx->len + len + remaining > max) {
        notify_rx_reset(rx);
        return NOTIFY_RX_TOO_BIG;
    }
    if (last && rx->len == 0) { /* the common case: one frame, one chunk */
        *msg = data;
        *msg_len = len;
        return NOTIFY_RX_MESSAGE;
    }
    uint8_t *grown = realloc(rx->buf, rx->len + len + 1);
    if (!grown) {
        notify_rx_reset(rx);
        return NOTIFY_RX_NOMEM;
    }
    rx->buf = grown;
    if (len)
        memcpy(rx->buf + rx->len, data, len);
    rx->len += len;
    if (!last)
        return NOTIFY_RX_MORE;
    *msg = rx->buf;
    *msg_len = rx->len;
    return NOTIFY_RX_MESSAGE;
}

void notify_rx_reset(notify_rx_t *rx)
{
    free(rx->buf);
    rx->buf = NULL;
    rx->len = 0;
}

notify_msg_kind_t notify_msg_parse(const uint8_t *data, size_t len, bool binary, char *why,
                                   size_t why_size)
{
    if (binary) {
        snprintf(why, why_size, "messages are JSON text frames");
        return NOTIFY_MSG_BAD;
    }
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *type = msg ? json_object_get(msg, "type") : NULL;
    notify_msg_kind_t kind = NOTIFY_MSG_BAD;
    if (!msg)
        snprintf(why, why_size, "malformed JSON: %s", jerr.text);
    else if (!json_is_object(msg) || !json_is_string(type))
        snprintf(why, why_size, "a message is a JSON object with a string \"type\"");
    else if (strcmp(json_string_value(type), "ping") == 0)
        kind = NOTIFY_MSG_PING;
    else
        snprintf(why, why_size, "unknown message type; the only one is \"ping\"");
    json_decref(msg);
    return kind;
}
