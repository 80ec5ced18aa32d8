/*  validate.c - request validation and the JSON -> SMP mapping. See validate.h.

    Rules that hold for every route (docs/api.md "Validation"):
    - a body is one JSON object (an empty body counts as {}); jansson refuses
      malformed JSON, invalid UTF-8, "\u0000" and duplicate keys (body_json.c
      reads the common bodies faster, with the same result);
    - a field the route does not know is refused, so a typo is never silently
      ignored; a known field of the wrong type is refused;
    - string lengths count characters (code points), except clipboard content,
      which counts bytes against max_item_bytes (413 above it);
    - ids and seqs are 1-19 digits up to 2^63-1; query parameters a route does not
      use are ignored, a used one given twice is refused.
*/
#include "validate.h"
#include "username.h"
#include "body_json.h"
#include "mp.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define S_CLIP_LIMIT_DEFAULT 100
#define S_CLIP_LIMIT_MAX 500
#define S_MSG_LIMIT_MAX 1000 /* chat.message.list's own bound and default */

void gw_err_set(gw_err_t *err, int status, const char *code, const char *fmt, ...)
{
    err->status = status;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

bool validate_id(const char *s, size_t len, int64_t *value)
{
    if (len == 0 || len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0'); /* 19 digits fit in uint64 */
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *value = (int64_t)v;
    return true;
}

bool validate_idem_key(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

bool validate_request_id(const char *s, size_t len)
{
    if (len == 0 || len > VALIDATE_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

bool validate_token(const char *s, size_t len)
{
    if (len == 0 || len > VALIDATE_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
        if (!ok)
            return false;
    }
    return true;
}

bool validate_bearer(const char *header, const char **token, size_t *len)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    const char *t = header + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && t[n - 1] == ' ')
        n--;
    if (!validate_token(t, n))
        return false;
    *token = t;
    *len = n;
    return true;
}

/* Characters (code points) of a valid UTF-8 string: jansson guarantees validity. */
static size_t s_chars(const char *s, size_t bytes)
{
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    return n;
}

static bool s_has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

/* ---- the JSON body --------------------------------------------------------- */

typedef enum { F_STRING, F_BOOL } s_ftype_t;

typedef struct {
    const char *name;
    s_ftype_t type;
    bool required;
    bool nullable;    /* null counts as absent */
    size_t min_chars; /* strings */
    size_t max_chars;
} s_field_t;

/* A route's fields, looked up once so every refusal is consistent. */
typedef struct {
    const s_field_t *fields;
    size_t count;
} s_schema_t;

static const s_field_t s_user_fields[] = {
    {"username", F_STRING, true, false, 3, 64},
    {"password", F_STRING, true, false, 8, 256},
};
static const s_field_t s_session_fields[] = {
    {"username", F_STRING, true, false, 1, 256},
    {"password", F_STRING, true, false, 1, 256},
    {"device_name", F_STRING, true, false, 1, 128},
};
/* content is checked in bytes against max_item_bytes, not here */
static const s_field_t s_clip_fields[] = {
    {"content", F_STRING, true, false, 0, SIZE_MAX},
    {"content_type", F_STRING, false, true, 1, 255},
};
static const s_field_t s_conv_fields[] = {
    {"title", F_STRING, false, true, 0, 200},
};
static const s_field_t s_msg_fields[] = {
    {"content", F_STRING, true, false, 1, SIZE_MAX},
    {"stream", F_BOOL, false, true, 0, 0},
};

static s_schema_t s_schema(route_id_t id)
{
    switch (id) {
    case ROUTE_USERS_CREATE:
        return (s_schema_t){s_user_fields, 2};
    case ROUTE_SESSIONS_CREATE:
        return (s_schema_t){s_session_fields, 3};
    case ROUTE_CLIP_CREATE:
        return (s_schema_t){s_clip_fields, 2};
    case ROUTE_CONV_CREATE:
        return (s_schema_t){s_conv_fields, 1};
    case ROUTE_MSG_CREATE:
        return (s_schema_t){s_msg_fields, 2};
    default:
        return (s_schema_t){NULL, 0};
    }
}

static const char *s_json_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Parses the body and checks it against the schema; returns the object or NULL. */
static json_t *s_parse_body(const validate_in_t *in, s_schema_t schema, gw_err_t *err)
{
    json_t *root;
    if (in->body_len == 0) {
        root = json_object();
    } else {
        json_error_t jerr;
        root = body_json_load((const char *)in->body, in->body_len, &jerr);
        if (!root) {
            gw_err_set(err, 400, "bad_request", "malformed JSON body: %s (line %d, column %d)",
                       jerr.text, jerr.line, jerr.column);
            return NULL;
        }
    }
    if (!json_is_object(root)) {
        gw_err_set(err, 400, "bad_request", "the body must be a JSON object, not %s",
                   s_json_type(root));
        json_decref(root);
        return NULL;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        const s_field_t *f = NULL;
        for (size_t i = 0; i < schema.count; i++)
            if (strcmp(schema.fields[i].name, key) == 0)
                f = &schema.fields[i];
        if (!f) {
            gw_err_set(err, 400, "bad_request", "unknown field \"%.64s\"", key);
            json_decref(root);
            return NULL;
        }
        if (json_is_null(value) && f->nullable)
            continue;
        if (f->type == F_STRING) {
            if (!json_is_string(value)) {
                gw_err_set(err, 400, "bad_request", "\"%s\" must be a string, not %s", f->name,
                           s_json_type(value));
                json_decref(root);
                return NULL;
            }
            size_t chars = s_chars(json_string_value(value), json_string_length(value));
            if (chars < f->min_chars || chars > f->max_chars) {
                if (f->min_chars == f->max_chars || f->max_chars == SIZE_MAX)
                    gw_err_set(err, 400, "bad_request", "\"%s\" must not be empty", f->name);
                else
                    gw_err_set(err, 400, "bad_request", "\"%s\" must be %zu-%zu characters",
                               f->name, f->min_chars, f->max_chars);
                json_decref(root);
                return NULL;
            }
        } else if (!json_is_boolean(value)) {
            gw_err_set(err, 400, "bad_request", "\"%s\" must be true or false, not %s", f->name,
                       s_json_type(value));
            json_decref(root);
            return NULL;
        }
    }
    for (size_t i = 0; i < schema.count; i++) {
        json_t *v = json_object_get(root, schema.fields[i].name);
        if (schema.fields[i].required && !v) {
            gw_err_set(err, 400, "bad_request", "missing field \"%s\"", schema.fields[i].name);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

/* A string field of a checked body, or NULL when absent or null. */
static const char *s_str(json_t *root, const char *name, size_t *len)
{
    json_t *v = json_object_get(root, name);
    if (!v || !json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

static void s_kv_strn(msgpack_packer *pk, const char *key, const char *s, size_t len)
{
    mp_pack_cstr(pk, key);
    mp_pack_strn(pk, s, len);
}

/* ---- the query -------------------------------------------------------------- */

/* The value of query parameter name: 1 found, 0 absent, -1 given twice. */
static int s_query(const char *const *args, size_t nargs, const char *name, const char **value,
                   size_t *len)
{
    size_t n = strlen(name);
    int found = 0;
    for (size_t i = 0; i < nargs; i++) {
        const char *a = args[i];
        if (strncmp(a, name, n) == 0 && (a[n] == '=' || a[n] == 0)) {
            if (found)
                return -1;
            found = 1;
            *value = a[n] == '=' ? a + n + 1 : a + n;
            *len = strlen(*value);
        }
    }
    return found;
}

/* An id-valued query parameter; *value keeps its default when absent. */
static int s_query_id(const char *const *args, size_t nargs, const char *name, int64_t *value,
                      gw_err_t *err)
{
    const char *v;
    size_t len;
    int rc = s_query(args, nargs, name, &v, &len);
    if (rc < 0) {
        gw_err_set(err, 400, "bad_request", "query parameter \"%s\" given more than once", name);
        return -1;
    }
    if (rc == 1 && !validate_id(v, len, value)) {
        gw_err_set(err, 400, "bad_request",
                   "\"%s\" must be a sequence number: 1-19 digits, at most 9223372036854775807",
                   name);
        return -1;
    }
    return 0;
}

/* ?limit=N, 1..max; *limit keeps its default when absent. */
static int s_query_limit(const char *const *args, size_t nargs, int64_t max, int64_t *limit,
                         gw_err_t *err)
{
    const char *v;
    size_t len;
    int q = s_query(args, nargs, "limit", &v, &len);
    if (q < 0) {
        gw_err_set(err, 400, "bad_request", "query parameter \"limit\" given more than once");
        return -1;
    }
    if (q == 1 && (!validate_id(v, len, limit) || *limit < 1 || *limit > max)) {
        gw_err_set(err, 400, "bad_request", "\"limit\" must be a number from 1 to %lld",
                   (long long)max);
        return -1;
    }
    return 0;
}

int validate_notify_query(const char *const *args, size_t nargs, const char **token,
                          size_t *token_len, int64_t *after, gw_err_t *err)
{
    *after = -1;
    *token = NULL;
    *token_len = 0;
    if (s_query_id(args, nargs, "after", after, err) < 0)
        return -1;
    const char *t;
    size_t len;
    int rc = s_query(args, nargs, "token", &t, &len);
    if (rc < 0) {
        gw_err_set(err, 400, "bad_request", "query parameter \"token\" given more than once");
        return -1;
    }
    if (rc == 1) {
        *token = t;
        *token_len = len;
    }
    return 0;
}

/* ---- packing ------------------------------------------------------------------ */

void validate_pack_head(msgpack_packer *pk, const char *op, int64_t auth_user, int64_t auth_device,
                        const char *idem, bool idempotent, const char *trace)
{
    size_t n = 3 + (auth_user > 0) + (idem != NULL) + (trace != NULL);
    msgpack_pack_map(pk, n);
    mp_pack_kv_str(pk, "op", op);
    if (auth_user > 0) {
        mp_pack_cstr(pk, "auth");
        msgpack_pack_map(pk, 2);
        mp_pack_kv_int(pk, "user_id", auth_user);
        mp_pack_kv_int(pk, "device_id", auth_device);
    }
    if (idem)
        mp_pack_kv_str(pk, "idem", idem);
    mp_pack_kv_bool(pk, "idempotent", idempotent);
    if (trace)
        mp_pack_kv_str(pk, "trace", trace);
    mp_pack_cstr(pk, "args");
}

/* The path's {id} as a number, or a 400 naming what the id is. */
static int s_param_id(const validate_in_t *in, const char *what, int64_t *id, gw_err_t *err)
{
    if (!validate_id(in->param, strlen(in->param), id)) {
        gw_err_set(err, 400, "bad_request",
                   "%s must be an id: 1-19 digits, at most 9223372036854775807", what);
        return -1;
    }
    return 0;
}

int validate_request(const validate_in_t *in, msgpack_sbuffer *out, gw_err_t *err)
{
    const route_t *r = in->route;
    if (!r || !r->service) {
        gw_err_set(err, 500, "internal", "route has no service");
        return -1;
    }
    const char *idem = NULL;
    if (r->write && in->idem) {
        if (!validate_idem_key(in->idem, strlen(in->idem))) {
            gw_err_set(err, 400, "bad_request",
                       "Idempotency-Key must be 1-128 printable ASCII characters");
            return -1;
        }
        idem = in->idem;
    }
    /* reads may be resent to another worker; writes only when they carry a key.
       Never a chat answer: its stream worker does not take the key to the database,
       so a resent chat.generate would store a second message. */
    bool idempotent = (!r->write || idem != NULL) && r->id != ROUTE_MSG_CREATE;
    int64_t id = 0, after = 0, limit = S_CLIP_LIMIT_DEFAULT;
    json_t *body = NULL;
    if (r->body) {
        body = s_parse_body(in, s_schema(r->id), err);
        if (!body)
            return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    int rc = -1;
    const char *s = NULL;
    size_t len = 0;

    switch (r->id) {
    case ROUTE_USERS_CREATE: {
        s = s_str(body, "username", &len);
        if (!username_ok(s, len)) { /* the length is the schema's: 3-64 */
            gw_err_set(err, 400, "bad_request",
                       "\"username\" may only use letters, digits, '_', '.' and '-'");
            goto done;
        }
        validate_pack_head(&pk, r->op, 0, 0, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 2);
        s_kv_strn(&pk, "username", s, len);
        s = s_str(body, "password", &len);
        s_kv_strn(&pk, "password", s, len);
        break;
    }
    case ROUTE_SESSIONS_CREATE:
        s = s_str(body, "device_name", &len);
        if (s_has_control(s, len)) {
            gw_err_set(err, 400, "bad_request", "\"device_name\" has control characters");
            goto done;
        }
        validate_pack_head(&pk, r->op, 0, 0, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 3);
        s_kv_strn(&pk, "device_name", s, len);
        s = s_str(body, "username", &len);
        s_kv_strn(&pk, "username", s, len);
        s = s_str(body, "password", &len);
        s_kv_strn(&pk, "password", s, len);
        break;
    case ROUTE_DEVICES_LIST:
    case ROUTE_CLIP_LATEST:
    case ROUTE_CONV_LIST:
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 0);
        break;
    case ROUTE_DEVICE_DELETE:
        if (s_param_id(in, "the device id", &id, err) < 0)
            goto done;
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 1);
        mp_pack_kv_int(&pk, "device_id", id);
        break;
    case ROUTE_CLIP_DELETE:
        if (s_param_id(in, "the item id", &id, err) < 0)
            goto done;
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 1);
        mp_pack_kv_int(&pk, "id", id);
        break;
    case ROUTE_MSG_LIST: {
        /* paged like the clipboard: ?after= oldest first, or ?before= newest first */
        int64_t before = 0;
        limit = S_MSG_LIMIT_MAX;
        if (s_param_id(in, "the conversation id", &id, err) < 0 ||
            s_query_id(in->args, in->nargs, "after", &after, err) < 0 ||
            s_query_id(in->args, in->nargs, "before", &before, err) < 0 ||
            s_query_limit(in->args, in->nargs, S_MSG_LIMIT_MAX, &limit, err) < 0)
            goto done;
        if (after && before) {
            gw_err_set(err, 400, "bad_request", "give \"after\" or \"before\", not both");
            goto done;
        }
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 3);
        mp_pack_kv_int(&pk, "conversation_id", id);
        mp_pack_kv_int(&pk, "limit", limit);
        if (before)
            mp_pack_kv_int(&pk, "before", before);
        else
            mp_pack_kv_int(&pk, "after", after);
        break;
    }
    case ROUTE_CLIP_LIST:
        if (s_query_id(in->args, in->nargs, "after", &after, err) < 0 ||
            s_query_limit(in->args, in->nargs, S_CLIP_LIMIT_MAX, &limit, err) < 0)
            goto done;
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 2);
        mp_pack_kv_int(&pk, "after", after);
        mp_pack_kv_int(&pk, "limit", limit);
        break;
    case ROUTE_CLIP_CREATE: {
        const char *content = s_str(body, "content", &len);
        size_t content_len = len;
        if (content_len > in->max_item_bytes) {
            gw_err_set(err, 413, "payload_too_large",
                       "\"content\" is %zu bytes; the limit is %zu bytes", content_len,
                       in->max_item_bytes);
            goto done;
        }
        size_t type_len = 0;
        const char *type = s_str(body, "content_type", &type_len);
        if (!type) {
            type = "text/plain";
            type_len = strlen(type);
        }
        if (s_has_control(type, type_len)) {
            gw_err_set(err, 400, "bad_request", "\"content_type\" has control characters");
            goto done;
        }
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 2);
        s_kv_strn(&pk, "content", content, content_len);
        s_kv_strn(&pk, "content_type", type, type_len);
        break;
    }
    case ROUTE_CONV_CREATE: {
        const char *title = s_str(body, "title", &len);
        if (title && s_has_control(title, len)) {
            gw_err_set(err, 400, "bad_request", "\"title\" has control characters");
            goto done;
        }
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, title ? 1 : 0);
        if (title)
            s_kv_strn(&pk, "title", title, len);
        break;
    }
    case ROUTE_MSG_CREATE: {
        if (s_param_id(in, "the conversation id", &id, err) < 0)
            goto done;
        const char *content = s_str(body, "content", &len);
        if (len > in->max_item_bytes) {
            gw_err_set(err, 413, "payload_too_large",
                       "\"content\" is %zu bytes; the limit is %zu bytes", len, in->max_item_bytes);
            goto done;
        }
        json_t *stream = json_object_get(body, "stream");
        bool streaming = !stream || json_is_null(stream) || json_is_true(stream);
        validate_pack_head(&pk, r->op, in->user_id, in->device_id, idem, idempotent, in->trace);
        msgpack_pack_map(&pk, 3);
        mp_pack_kv_int(&pk, "conversation_id", id);
        s_kv_strn(&pk, "content", content, len);
        mp_pack_kv_bool(&pk, "stream", streaming);
        break;
    }
    default:
        gw_err_set(err, 500, "internal", "route is not mapped to an op");
        goto done;
    }
    rc = 0;
done:
    json_decref(body);
    return rc;
}
