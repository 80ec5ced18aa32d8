/*  libFuzzer target: the listener's request-head parser (gateway/http_head.c), which
    reads the first request of every connection before libwebsockets does. Whatever
    the bytes, it answers OK, INCOMPLETE, MALFORMED, TOO_BIG or BAD_ESCAPE, and on OK
    every field it filled is a NUL-terminated string inside the struct; the
    plausibility check and the decoder stay inside their buffers. */
#include "http_head.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_head_t h;
    http_head_result_t r = http_head_parse((const char *)data, size, &h);
    if (r == HTTP_HEAD_OK) {
        if (h.head_len > size || strlen(h.path) >= sizeof h.path ||
            strlen(h.authorization) >= sizeof h.authorization || h.nargs > HTTP_HEAD_ARGS_MAX)
            abort();
        for (size_t i = 0; i < h.nargs; i++)
            if (h.args[i] < h.query || h.args[i] >= h.query + sizeof h.query)
                abort();
    }
    (void)http_head_plausible((const char *)data, size);
    char out[64];
    if (http_head_decode((const char *)data, size, out, sizeof out, size & 1) >= (long)sizeof out)
        abort();
    return 0;
}
