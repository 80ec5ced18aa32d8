/*  libFuzzer target: the listener's request-head parser (gateway/http_head.c), which
    reads the first request of every connection before libwebsockets does. Whatever
    the bytes, it answers OK, INCOMPLETE, MALFORMED or TOO_BIG, and on OK every
    field it filled is a NUL-terminated string inside the struct. */
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
    char out[64];
    http_head_decode((const char *)data, size, out, sizeof out, size & 1);
    return 0;
}
