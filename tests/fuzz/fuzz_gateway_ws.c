/*  libFuzzer target: what a notify WebSocket client sends (gateway/notify_msg.c,
    called by notify_on_receive() in notify.c): frames arriving in chunks and
    fragments, put together up to a size limit, then parsed as a client message.

    Input: one byte (bit 0: binary frames; the rest sets the size limit, 1-1017),
    then chunks, each a control byte (bit 0: the frame's final fragment; bits 1-3:
    bytes libwebsockets says are still to come of the frame), a length byte and
    that many bytes. Checked, whatever the bytes:
    - a message handed out is exactly the chunks fed since the last one, and only
      once the last chunk came; TOO_BIG exactly when the total would pass the limit;
    - a message is PING only if it is a JSON text object whose "type" is "ping";
    - every other message gets a reason that fits and goes into the JSON error
      answer (json_pack needs valid UTF-8: a reason that is not would mean the
      client gets no answer at all, against docs/api.md);
    - nothing leaks (LeakSanitizer). */
#include "notify_msg.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_MODEL_MAX 65536

static void s_check_parse(const uint8_t *msg, size_t len, bool binary)
{
    char why[200];
    memset(why, 'x', sizeof why);
    notify_msg_kind_t kind = notify_msg_parse(msg, len, binary, why, sizeof why);
    if (kind == NOTIFY_MSG_PING) {
        json_t *j = binary ? NULL : json_loadb((const char *)msg, len, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (!type || strcmp(type, "ping") != 0)
            abort();
        json_decref(j);
        return;
    }
    if (kind != NOTIFY_MSG_BAD || memchr(why, 0, sizeof why) == NULL || why[0] == 0)
        abort();
    /* what s_send_error() in notify.c sends */
    json_t *o = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "code", "bad_request",
                          "message", why);
    if (!o)
        abort();
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool binary = data[0] & 1;
    size_t max = 1 + (size_t)(data[0] >> 1) * 8;
    static uint8_t model[S_MODEL_MAX]; /* what was fed since the last message */
    size_t model_len = 0;
    notify_rx_t rx = {0};
    size_t pos = 1;
    while (pos + 2 <= size) {
        bool last = data[pos] & 1;
        size_t remaining = (data[pos] >> 1) & 7;
        size_t len = data[pos + 1];
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        const uint8_t *chunk = data + pos;
        pos += len;
        if (last)
            remaining = 0; /* libwebsockets: the final chunk has nothing left to come */
        const uint8_t *msg = NULL;
        size_t msg_len = 0;
        bool too_big = model_len + len + remaining > max;
        notify_rx_result_t r =
            notify_rx_feed(&rx, chunk, len, last, remaining, max, &msg, &msg_len);
        if ((r == NOTIFY_RX_TOO_BIG) != too_big)
            abort();
        if (r == NOTIFY_RX_TOO_BIG) {
            if (rx.buf || rx.len)
                abort();
            model_len = 0; /* the socket would be closed; go on as a fresh one */
            continue;
        }
        if (r == NOTIFY_RX_NOMEM)
            abort();
        memcpy(model + model_len, chunk, len); /* model_len + len <= max < S_MODEL_MAX */
        model_len += len;
        if (r == NOTIFY_RX_MORE) {
            if (last)
                abort();
            continue;
        }
        if (!last || msg_len != model_len || (msg_len && memcmp(msg, model, msg_len) != 0))
            abort();
        s_check_parse(msg, msg_len, binary);
        notify_rx_reset(&rx);
        model_len = 0;
    }
    notify_rx_reset(&rx);
    return 0;
}
