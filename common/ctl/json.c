/*  json.c - JSON <-> MessagePack for sluicectl. See json.h. */
#include "json.h"
#include "mp.h"

#include <stdlib.h>
#include <string.h>

void json_pack_msgpack(msgpack_packer *pk, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, (uint32_t)json_object_size(value));
        const char *key;
        json_t *item;
        json_object_foreach((json_t *)value, key, item)
        {
            mp_pack_cstr(pk, key);
            json_pack_msgpack(pk, item);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, (uint32_t)json_array_size(value));
        size_t i;
        json_t *item;
        json_array_foreach(value, i, item) json_pack_msgpack(pk, item);
        break;
    }
    case JSON_STRING:
        mp_pack_strn(pk, json_string_value(value), json_string_length(value));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, (int64_t)json_integer_value(value));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(value));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    default:
        msgpack_pack_nil(pk);
        break;
    }
}

static json_t *s_hex(const char *data, size_t size)
{
    static const char digits[] = "0123456789abcdef";
    char *text = malloc(2 * size + 1);
    if (!text)
        return json_null();
    for (size_t i = 0; i < size; i++) {
        text[2 * i] = digits[(unsigned char)data[i] >> 4];
        text[2 * i + 1] = digits[(unsigned char)data[i] & 15];
    }
    json_t *out = json_stringn(text, 2 * size);
    free(text);
    return out;
}

/* Text that is not UTF-8 is shown as hex rather than refused. */
static json_t *s_text(const char *data, size_t size)
{
    json_t *out = json_stringn(data, size);
    return out ? out : s_hex(data, size);
}

json_t *json_from_object(const msgpack_object *obj)
{
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(obj->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)obj->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)obj->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(obj->via.f64);
    case MSGPACK_OBJECT_STR:
        return s_text(obj->via.str.ptr, obj->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return s_hex(obj->via.bin.ptr, obj->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *out = json_array();
        for (uint32_t i = 0; i < obj->via.array.size; i++)
            json_array_append_new(out, json_from_object(&obj->via.array.ptr[i]));
        return out;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *out = json_object();
        for (uint32_t i = 0; i < obj->via.map.size; i++) {
            const msgpack_object *k = &obj->via.map.ptr[i].key;
            json_t *value = json_from_object(&obj->via.map.ptr[i].val);
            if (k->type == MSGPACK_OBJECT_STR) {
                char *key = strndup(k->via.str.ptr, k->via.str.size);
                if (key)
                    json_object_set_new(out, key, value);
                else
                    json_decref(value);
                free(key);
            } else {
                json_t *kj = json_from_object(k);
                char *key = json_dumps(kj, JSON_COMPACT | JSON_ENCODE_ANY);
                json_decref(kj);
                if (key)
                    json_object_set_new(out, key, value);
                else
                    json_decref(value);
                free(key);
            }
        }
        return out;
    }
    default:
        return json_null(); /* ext types: not used by Sluice */
    }
}

json_t *json_from_msgpack(const uint8_t *body, size_t size)
{
    const char *reason = NULL;
    if (!mp_check(body, size, &reason))
        return NULL;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object obj;
    size_t off = 0;
    json_t *out = NULL;
    if (msgpack_unpack((const char *)body, size, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS)
        out = json_from_object(&obj);
    msgpack_zone_destroy(&zone);
    return out;
}
