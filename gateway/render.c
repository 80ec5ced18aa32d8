/*  render.c - MessagePack -> JSON. See render.h. */
#include "render.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_KEY_MAX 64

static bool s_is_id_key(const char *key)
{
    if (!key)
        return false;
    size_t n = strlen(key);
    return strcmp(key, "id") == 0 || (n > 3 && strcmp(key + n - 3, "_id") == 0);
}

json_t *render_json(const msgpack_object *obj, const char *key)
{
    char buf[32];
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(obj->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (s_is_id_key(key) || obj->via.u64 > (uint64_t)INT64_MAX) {
            snprintf(buf, sizeof buf, "%" PRIu64, obj->via.u64);
            return json_string(buf);
        }
        return json_integer((json_int_t)obj->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        if (s_is_id_key(key)) {
            snprintf(buf, sizeof buf, "%" PRId64, obj->via.i64);
            return json_string(buf);
        }
        return json_integer((json_int_t)obj->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(obj->via.f64);
    case MSGPACK_OBJECT_STR:
        /* json_stringn checks UTF-8 and refuses what is not */
        if (obj->via.str.size == 0) /* msgpack-c may give an empty str a NULL pointer */
            return json_string("");
        return json_stringn(obj->via.str.ptr, obj->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < obj->via.array.size; i++) {
            /* elements of "ids"-like arrays are not ids by key; none exist today */
            json_t *v = render_json(&obj->via.array.ptr[i], NULL);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *o = json_object();
        for (uint32_t i = 0; i < obj->via.map.size; i++) {
            const msgpack_object *k = &obj->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= S_KEY_MAX ||
                (k->via.str.size && memchr(k->via.str.ptr, 0, k->via.str.size)))
                continue; /* JSON keys are strings; nothing we send has others */
            char name[S_KEY_MAX];
            if (k->via.str.size) /* an empty str may carry a NULL pointer */
                memcpy(name, k->via.str.ptr, k->via.str.size);
            name[k->via.str.size] = 0;
            json_t *v = render_json(&obj->via.map.ptr[i].val, name);
            if (!v || json_object_set_new(o, name, v) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    default: /* bin and ext carry nothing a client is meant to see */
        return json_null();
    }
}

char *render_dump(json_t *value, size_t *len)
{
    if (!value)
        return NULL;
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(value);
    if (text)
        *len = strlen(text);
    return text;
}

char *render_error(const char *code, const char *message, size_t *len)
{
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    if (!o) /* a message that is not UTF-8 would make pack fail: say something */
        o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", "error");
    return render_dump(o, len);
}
