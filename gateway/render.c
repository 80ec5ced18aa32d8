/*  render.c - MessagePack -> JSON. See render.h. */
#include "render.h"
#include "utf8.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_KEY_MAX 64
/* Maps with more keys than this are checked for duplicates by jansson's hash table
   (render_json) instead of pairwise here. */
#define S_PAIRWISE_MAX 32

/* The key (n bytes, or NULL) names an id: "id" or "..._id". */
static bool s_is_id_key(const char *key, size_t n)
{
    return key &&
           ((n == 2 && memcmp(key, "id", 2) == 0) || (n > 3 && memcmp(key + n - 3, "_id", 3) == 0));
}

/* A map key JSON can carry as we render it: a string, short, without NULs. */
static bool s_key_usable(const msgpack_object *k)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size < S_KEY_MAX &&
           !(k->via.str.size && memchr(k->via.str.ptr, 0, k->via.str.size));
}

json_t *render_json(const msgpack_object *obj, const char *key)
{
    char buf[32];
    bool is_id = s_is_id_key(key, key ? strlen(key) : 0);
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(obj->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (is_id || obj->via.u64 > (uint64_t)INT64_MAX) {
            snprintf(buf, sizeof buf, "%" PRIu64, obj->via.u64);
            return json_string(buf);
        }
        return json_integer((json_int_t)obj->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        if (is_id) {
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
            if (!s_key_usable(k))
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

/* ---- straight to text ------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory, or not valid UTF-8: no text */
    bool tree;   /* a duplicate key: only render_json's semantics (last wins) fit */
} s_out_t;

static void s_put(s_out_t *o, const char *text, size_t n)
{
    if (o->failed || o->tree || n == 0) /* n == 0: text may be NULL (an empty str) */
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (o->len + n + 1 > cap)
            cap *= 2;
        char *data = realloc(o->data, cap);
        if (!data) {
            o->failed = true;
            return;
        }
        o->data = data;
        o->cap = cap;
    }
    memcpy(o->data + o->len, text, n);
    o->len += n;
}

/* A JSON string, escaped as jansson's compact dump does. */
static void s_put_string(s_out_t *o, const char *text, size_t size)
{
    const unsigned char *p = (const unsigned char *)text;
    s_put(o, "\"", 1);
    size_t run = 0; /* bytes copied as they are, from i - run */
    for (size_t i = 0; i < size;) {
        size_t plain = utf8_json_plain(p + i, size - i);
        if (plain) {
            run += plain;
            i += plain;
            continue;
        }
        size_t n = utf8_seq_len(p + i, size - i);
        if (n == 0) {
            o->failed = true;
            return;
        }
        if (n == 1 && (p[i] < 0x20 || p[i] == '"' || p[i] == '\\')) {
            s_put(o, text + i - run, run);
            run = 0;
            char esc[8];
            const char *e = esc;
            size_t elen = 2;
            switch (p[i]) {
            case '"':
                e = "\\\"";
                break;
            case '\\':
                e = "\\\\";
                break;
            case '\b':
                e = "\\b";
                break;
            case '\f':
                e = "\\f";
                break;
            case '\n':
                e = "\\n";
                break;
            case '\r':
                e = "\\r";
                break;
            case '\t':
                e = "\\t";
                break;
            default:
                elen = (size_t)snprintf(esc, sizeof esc, "\\u%04X", p[i]);
                break;
            }
            s_put(o, e, elen);
            i++;
            continue;
        }
        run += n;
        i += n;
    }
    if (run) /* an empty str may carry a NULL pointer: no arithmetic on it */
        s_put(o, text + size - run, run);
    s_put(o, "\"", 1);
}

static void s_put_real(s_out_t *o, double v)
{
    if (!isfinite(v)) { /* JSON has no NaN or infinity (json_real refuses them too) */
        o->failed = true;
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof buf - 3) {
        o->failed = true;
        return;
    }
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(buf, 'e');
    if (e) { /* "1e+20" -> "1e20", "1e-07" -> "1e-7", as jansson writes them */
        char *start = e + 1, *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, (size_t)(buf + n - end) + 1);
            n -= (int)(end - start);
        }
    }
    s_put(o, buf, (size_t)n);
}

static bool s_key_repeated(const msgpack_object_map *map, uint32_t i)
{
    const msgpack_object_str *k = &map->ptr[i].key.via.str;
    for (uint32_t j = 0; j < i; j++) {
        const msgpack_object *other = &map->ptr[j].key;
        if (s_key_usable(other) && other->via.str.size == k->size &&
            (k->size == 0 || memcmp(other->via.str.ptr, k->ptr, k->size) == 0))
            return true;
    }
    return false;
}

static void s_put_value(s_out_t *o, const msgpack_object *obj, const char *key, size_t key_len)
{
    char buf[32];
    bool is_id = s_is_id_key(key, key_len);
    int n;
    switch (obj->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        if (obj->via.boolean)
            s_put(o, "true", 4);
        else
            s_put(o, "false", 5);
        return;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = snprintf(buf, sizeof buf, "%" PRIu64, obj->via.u64);
        if (is_id || obj->via.u64 > (uint64_t)INT64_MAX)
            s_put_string(o, buf, (size_t)n);
        else
            s_put(o, buf, (size_t)n);
        return;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        n = snprintf(buf, sizeof buf, "%" PRId64, obj->via.i64);
        if (is_id)
            s_put_string(o, buf, (size_t)n);
        else
            s_put(o, buf, (size_t)n);
        return;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        s_put_real(o, obj->via.f64);
        return;
    case MSGPACK_OBJECT_STR:
        s_put_string(o, obj->via.str.ptr, obj->via.str.size);
        return;
    case MSGPACK_OBJECT_ARRAY:
        s_put(o, "[", 1);
        for (uint32_t i = 0; i < obj->via.array.size; i++) {
            if (i)
                s_put(o, ",", 1);
            s_put_value(o, &obj->via.array.ptr[i], NULL, 0);
        }
        s_put(o, "]", 1);
        return;
    case MSGPACK_OBJECT_MAP: {
        const msgpack_object_map *map = &obj->via.map;
        if (map->size > S_PAIRWISE_MAX) {
            o->tree = true;
            return;
        }
        s_put(o, "{", 1);
        bool first = true;
        for (uint32_t i = 0; i < map->size && !o->failed && !o->tree; i++) {
            const msgpack_object *k = &map->ptr[i].key;
            if (!s_key_usable(k))
                continue; /* as render_json: JSON keys are strings */
            if (s_key_repeated(map, i)) {
                o->tree = true;
                return;
            }
            if (!first)
                s_put(o, ",", 1);
            first = false;
            s_put_string(o, k->via.str.ptr, k->via.str.size);
            s_put(o, ":", 1);
            s_put_value(o, &map->ptr[i].val, k->via.str.ptr, k->via.str.size);
        }
        s_put(o, "}", 1);
        return;
    }
    default: /* nil; bin and ext carry nothing a client is meant to see */
        s_put(o, "null", 4);
        return;
    }
}

char *render_text(const msgpack_object *obj, size_t *len)
{
    s_out_t o = {0};
    s_put_value(&o, obj, NULL, 0);
    if (o.tree) {
        free(o.data);
        return render_dump(render_json(obj, NULL), len);
    }
    if (o.failed) {
        free(o.data);
        return NULL;
    }
    o.data[o.len] = 0;
    *len = o.len;
    return o.data;
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
