/*  libFuzzer target: the gateway's request mapping (validate.c) and reply rendering
    (render.c), the pure half of every HTTP request.

    Input: one byte selecting the route (values >= 0x80: render the rest as a
    MessagePack reply instead), then NUL-separated fields: path parameter, query
    ("a=1&b=2"), Idempotency-Key, and the body (the rest, NULs and all). Whatever
    comes in, the answer is either a packed body that parses as one MessagePack map
    with "op" and "args", or a 4xx with a message: never a crash, never a 5xx. A
    reply renders to the same text (or the same refusal) through render_text as
    through render_json + render_dump, and a body parses to the same value (or
    the same refusal) through body_json_load as through json_loadb. */
#include "body_json.h"
#include "mp.h"
#include "render.h"
#include "routes.h"
#include "validate.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_ARGS 16

static void s_render(const uint8_t *data, size_t size)
{
    const char *why;
    if (!mp_check(data, size, &why))
        return;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack((const char *)data, size, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS) {
        /* the direct writer and the tree say the same, byte for byte */
        size_t len = 0, tlen = 0;
        char *text = render_dump(render_json(&obj, NULL), &len);
        char *direct = render_text(&obj, &tlen);
        if (!text != !direct || (text && (len != tlen || memcmp(text, direct, len) != 0)))
            __builtin_trap();
        free(text);
        free(direct);
    }
    msgpack_zone_destroy(&zone);
}

/* body_json_load is json_loadb(JSON_REJECT_DUPLICATES): the same value, keys in
   the same order (the compact dumps are equal), or both refuse. */
static void s_body(const uint8_t *data, size_t size)
{
    json_error_t e1, e2;
    json_t *fast = body_json_load((const char *)data, size, &e1);
    json_t *slow = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e2);
    if (!fast != !slow)
        __builtin_trap();
    if (fast) {
        char *a = json_dumps(fast, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(slow, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!json_equal(fast, slow) || !a || !b || strcmp(a, b) != 0)
            __builtin_trap();
        free(a);
        free(b);
    }
    json_decref(fast);
    json_decref(slow);
}

/* The next NUL-terminated field of data (copied), advancing *pos. */
static char *s_field(const uint8_t *data, size_t size, size_t *pos)
{
    size_t start = *pos;
    while (*pos < size && data[*pos] != 0)
        (*pos)++;
    size_t len = *pos - start;
    char *out = malloc(len + 1);
    memcpy(out, data + start, len);
    out[len] = 0;
    if (*pos < size)
        (*pos)++;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] >= 0x80) {
        s_render(data + 1, size - 1);
        return 0;
    }
    const route_t *route = routes_get((route_id_t)(data[0] % ROUTE_COUNT));
    size_t pos = 1;
    char *param = s_field(data, size, &pos);
    char *query = s_field(data, size, &pos);
    char *idem = s_field(data, size, &pos);
    const char *args[S_ARGS];
    size_t nargs = 0;
    for (char *save = NULL, *a = strtok_r(query, "&", &save); a && nargs < S_ARGS;
         a = strtok_r(NULL, "&", &save))
        args[nargs++] = a;
    s_body(data + pos, size - pos);
    validate_in_t in = {
        .route = route,
        .param = param,
        .args = args,
        .nargs = nargs,
        .body = data + pos,
        .body_len = size - pos,
        .idem = idem[0] ? idem : NULL,
        .trace = "fuzz",
        .authed = true,
        .user_id = 1,
        .device_id = 2,
        .max_item_bytes = 64,
    };
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    gw_err_t err;
    if (validate_request(&in, &buf, &err) == 0) {
        const char *why;
        if (!mp_check(buf.data, buf.size, &why))
            abort();
        msgpack_zone zone;
        msgpack_zone_init(&zone, 4096);
        msgpack_object obj;
        size_t off = 0;
        if (msgpack_unpack(buf.data, buf.size, &off, &zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
            !mp_get(&obj, "op") || !mp_get(&obj, "args"))
            abort();
        msgpack_zone_destroy(&zone);
    } else if (route->service && (err.status < 400 || err.status > 499)) {
        abort(); /* a client's input never makes a 5xx */
    }
    int64_t after;
    const char *token;
    size_t token_len;
    validate_notify_query(args, nargs, &token, &token_len, &after, &err);
    validate_bearer(idem, &token, &token_len);
    msgpack_sbuffer_destroy(&buf);
    free(param);
    free(query);
    free(idem);
    return 0;
}
