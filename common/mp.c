/*  mp.c - MessagePack helpers. See mp.h. */
#include "mp.h"

#include <string.h>

static uint64_t s_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

bool mp_check(const void *data, size_t size, const char **reason)
{
    const uint8_t *p = data;
    size_t pos = 0;
    uint64_t pending = 1; /* values still to read; each takes at least one byte */
    while (pending > 0) {
        if (pos >= size) {
            *reason = "body is truncated MessagePack";
            return false;
        }
        uint8_t t = p[pos++];
        pending--;
        uint64_t skip = 0, items = 0;
        size_t head = 0; /* bytes of length field after the type byte */
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        } else if (t <= 0x8f) {
            items = 2u * (t & 0x0f);
        } else if (t <= 0x9f) {
            items = t & 0x0f;
        } else if (t <= 0xbf) {
            skip = t & 0x1f;
        } else if (t == 0xc1) {
            *reason = "body is not valid MessagePack (0xc1)";
            return false;
        } else if (t >= 0xc4 && t <= 0xc6) { /* bin 8/16/32 */
            head = (size_t)1 << (t - 0xc4);
        } else if (t >= 0xc7 && t <= 0xc9) { /* ext 8/16/32: length, type, data */
            head = (size_t)1 << (t - 0xc7);
            skip = 1;
        } else if (t == 0xca || t == 0xcb) {
            skip = t == 0xca ? 4 : 8;
        } else if (t >= 0xcc && t <= 0xd3) { /* uint/int 8..64 */
            skip = (uint64_t)1 << ((t - 0xcc) & 3);
        } else if (t >= 0xd4 && t <= 0xd8) { /* fixext: type + 1..16 bytes */
            skip = 1 + ((uint64_t)1 << (t - 0xd4));
        } else if (t >= 0xd9 && t <= 0xdb) { /* str 8/16/32 */
            head = (size_t)1 << (t - 0xd9);
        } else { /* 0xdc-0xdf: array 16/32, map 16/32 */
            head = (t == 0xdc || t == 0xde) ? 2 : 4;
        }
        if (head) {
            if (size - pos < head) {
                *reason = "body is truncated MessagePack";
                return false;
            }
            uint64_t n = s_be(p + pos, head);
            pos += head;
            if (t >= 0xdc)
                items = t >= 0xde ? 2 * n : n;
            else
                skip += n;
        }
        if (skip > size - pos || items > size - pos || pending + items > size - pos) {
            *reason = "body is truncated MessagePack (a size exceeds the bytes given)";
            return false;
        }
        pos += skip;
        pending += items;
    }
    if (pos != size) {
        *reason = "body has bytes after its MessagePack value";
        return false;
    }
    return true;
}

const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool mp_as_int(const msgpack_object *obj, int64_t *value)
{
    if (!obj)
        return false;
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (obj->via.u64 > (uint64_t)INT64_MAX)
            return false;
        *value = (int64_t)obj->via.u64;
        return true;
    }
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *value = obj->via.i64;
        return true;
    }
    return false;
}

bool mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len)
{
    const msgpack_object *v = mp_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return false;
    *s = v->via.str.ptr;
    *len = v->via.str.size;
    return true;
}

bool mp_get_int(const msgpack_object *map, const char *key, int64_t *value)
{
    return mp_as_int(mp_get(map, key), value);
}

bool mp_get_bool(const msgpack_object *map, const char *key, bool *value)
{
    const msgpack_object *v = mp_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *value = v->via.boolean;
    return true;
}

bool mp_str_eq(const msgpack_object *obj, const char *s)
{
    size_t n = strlen(s);
    return obj && obj->type == MSGPACK_OBJECT_STR && obj->via.str.size == n &&
           memcmp(obj->via.str.ptr, s, n) == 0;
}

void mp_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

void mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    mp_pack_strn(pk, s, strlen(s));
}

void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    mp_pack_cstr(pk, key);
    mp_pack_cstr(pk, value);
}

void mp_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value)
{
    mp_pack_cstr(pk, key);
    msgpack_pack_int64(pk, value);
}

void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    mp_pack_cstr(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void mp_error_body(msgpack_sbuffer *buf, int status, const char *code, const char *message)
{
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "status", status);
    mp_pack_cstr(&pk, "error");
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_str(&pk, "code", code);
    mp_pack_kv_str(&pk, "message", message);
}
