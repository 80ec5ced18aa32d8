/*  smp.c - SMP/1 codec. See smp.h and docs/protocol.md for the frame grammar. */
#include "smp.h"
#include "mp.h"
#include "slog.h"

#include <string.h>

void smp_put_u32(uint8_t out[4], uint32_t value)
{
    out[0] = (uint8_t)(value >> 24);
    out[1] = (uint8_t)(value >> 16);
    out[2] = (uint8_t)(value >> 8);
    out[3] = (uint8_t)value;
}

uint32_t smp_get_u32(const uint8_t in[4])
{
    return ((uint32_t)in[0] << 24) | ((uint32_t)in[1] << 16) | ((uint32_t)in[2] << 8) |
           (uint32_t)in[3];
}

smp_bytes_t smp_bytes_str(const char *s)
{
    smp_bytes_t b = {(const uint8_t *)s, s ? strlen(s) : 0};
    return b;
}

bool smp_bytes_eq(smp_bytes_t a, const char *s)
{
    size_t n = strlen(s);
    return a.size == n && (n == 0 || memcmp(a.data, s, n) == 0);
}

/* A cursor over the frames of one message, so each parse step reads as grammar. */
typedef struct {
    const smp_bytes_t *frames;
    size_t count, next;
    const char *reason;
} s_cursor_t;

static bool s_more(const s_cursor_t *c)
{
    return c->next < c->count;
}

static bool s_next(s_cursor_t *c, smp_bytes_t *out, size_t min, size_t max, const char *what)
{
    if (!s_more(c)) {
        c->reason = what; /* "missing <frame>" */
        return false;
    }
    size_t size = c->frames[c->next].size;
    if (size < min || size > max) {
        c->reason = what;
        return false;
    }
    *out = c->frames[c->next++];
    return true;
}

/*  The frames of msg as views. Every valid message has fewer than S_FRAMES_MAX
    frames, so a longer one is cut there: it still fails as "unexpected extra
    frames" (or at an earlier bad frame, as it would uncut). */
#define S_FRAMES_MAX 16
static size_t s_frames_of(zmsg_t *msg, smp_bytes_t frames[S_FRAMES_MAX])
{
    size_t n = 0;
    for (zframe_t *f = zmsg_first(msg); f && n < S_FRAMES_MAX; f = zmsg_next(msg), n++) {
        frames[n].data = zframe_data(f);
        frames[n].size = zframe_size(f);
    }
    return n;
}

static bool s_u32(s_cursor_t *c, uint32_t *value, const char *what)
{
    smp_bytes_t b;
    if (!s_next(c, &b, 4, 4, what))
        return false;
    *value = smp_get_u32(b.data);
    return true;
}

/* Unpacks exactly one MessagePack value filling the whole frame. */
static bool s_unpack(smp_bytes_t body, msgpack_zone *zone, msgpack_object *obj, const char **reason)
{
    if (!mp_check(body.data, body.size, reason))
        return false;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack((const char *)body.data, body.size, &off, zone, obj);
    if (rc == MSGPACK_UNPACK_SUCCESS && off == body.size)
        return true;
    if (rc == MSGPACK_UNPACK_EXTRA_BYTES || (rc == MSGPACK_UNPACK_SUCCESS && off != body.size))
        *reason = "body has bytes after its MessagePack value";
    else if (rc == MSGPACK_UNPACK_CONTINUE)
        *reason = "body is truncated MessagePack";
    else if (rc == MSGPACK_UNPACK_NOMEM_ERROR)
        *reason = "body too large or deeply nested to unpack";
    else
        *reason = "body is not valid MessagePack";
    return false;
}

/* The request body is read by the broker (idempotent) and workers (op, args, auth):
   its shape is checked here once so no later reader trips on a wrong type. */
static bool s_check_request_body(smp_msg_t *m, const char **reason)
{
    const msgpack_object *b = &m->body_obj;
    if (b->type != MSGPACK_OBJECT_MAP) {
        *reason = "request body must be a map";
        return false;
    }
    const msgpack_object *op = mp_get(b, "op");
    if (!op || op->type != MSGPACK_OBJECT_STR || op->via.str.size == 0 ||
        op->via.str.size > SMP_OP_MAX) {
        *reason = "request body needs \"op\": a string of 1-64 bytes";
        return false;
    }
    m->op.data = (const uint8_t *)op->via.str.ptr;
    m->op.size = op->via.str.size;
    const msgpack_object *v = mp_get(b, "args");
    if (v && v->type != MSGPACK_OBJECT_MAP && v->type != MSGPACK_OBJECT_NIL) {
        *reason = "request \"args\" must be a map";
        return false;
    }
    v = mp_get(b, "auth");
    if (v && v->type != MSGPACK_OBJECT_MAP && v->type != MSGPACK_OBJECT_NIL) {
        *reason = "request \"auth\" must be a map";
        return false;
    }
    v = mp_get(b, "idem");
    if (v && v->type != MSGPACK_OBJECT_NIL &&
        (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 || v->via.str.size > SMP_IDEM_MAX)) {
        *reason = "request \"idem\" must be a string of 1-128 bytes";
        return false;
    }
    v = mp_get(b, "idempotent");
    if (v && v->type != MSGPACK_OBJECT_BOOLEAN && v->type != MSGPACK_OBJECT_NIL) {
        *reason = "request \"idempotent\" must be a boolean";
        return false;
    }
    m->idempotent = v && v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
    return true;
}

static bool s_check_reply_body(smp_msg_t *m, const char **reason)
{
    int64_t status;
    if (m->body_obj.type != MSGPACK_OBJECT_MAP || !mp_get_int(&m->body_obj, "status", &status) ||
        status < 100 || status > 599) {
        *reason = "reply body must be a map with \"status\" 100-599";
        return false;
    }
    m->status = (int)status;
    return true;
}

static bool s_body(s_cursor_t *c, smp_msg_t *m, msgpack_zone *zone, bool required)
{
    if (!s_more(c) && !required)
        return true;
    if (!s_next(c, &m->body, required ? 1 : 0, SMP_BODY_MAX, "missing or oversize body frame"))
        return false;
    if (m->body.size == 0 && !required)
        return true;
    return s_unpack(m->body, zone, &m->body_obj, &c->reason);
}

int smp_parse(zmsg_t *msg, smp_dir_t dir, msgpack_zone *zone, smp_msg_t *out, const char **reason)
{
    smp_bytes_t frames[S_FRAMES_MAX];
    size_t count = s_frames_of(msg, frames);
    return smp_parse_frames(frames, count, dir, zone, out, reason);
}

int smp_parse_frames(const smp_bytes_t *frames, size_t count, smp_dir_t dir, msgpack_zone *zone,
                     smp_msg_t *out, const char **reason)
{
    memset(out, 0, sizeof *out);
    out->body_obj.type = MSGPACK_OBJECT_NIL;
    s_cursor_t c = {frames, count, 0, NULL};
    smp_bytes_t b;
    const char *why = "malformed message";
    bool ok = false;
    bool to_worker = dir == SMP_BROKER_TO_WORKER;
    bool from_worker = dir == SMP_WORKER_TO_BROKER;
    bool worker_side = to_worker || from_worker;

    if (!s_next(&c, &b, 0, 0, "first frame must be the empty delimiter")) {
        why = c.reason;
        goto done;
    }
    if (!s_next(&c, &b, 0, SIZE_MAX, "protocol frame missing")) {
        why = c.reason;
        goto done;
    }
    if (b.size != 4 || memcmp(b.data, SMP_PROTOCOL, 4) != 0) {
        why = "protocol frame is not SMP1";
        goto done;
    }
    if (!s_next(&c, &b, 1, 1, "command frame must be one byte")) {
        why = c.reason;
        goto done;
    }
    out->command = (smp_command_t)b.data[0];
    switch (out->command) {
    case SMP_REQUEST:
        if (dir != SMP_CLIENT_TO_BROKER && !to_worker)
            break;
        if (dir == SMP_CLIENT_TO_BROKER &&
            !s_next(&c, &out->service, 1, SMP_SERVICE_MAX, "service must be 1-64 bytes"))
            break;
        if (to_worker && !s_next(&c, &out->route, 1, SMP_ROUTE_MAX, "route must be 1-256 bytes"))
            break;
        if (!s_next(&c, &out->request_id, 1, SMP_REQUEST_ID_MAX, "request id must be 1-32 bytes"))
            break;
        if (!s_u32(&c, &out->deadline_ms, "deadline must be 4 bytes"))
            break;
        if (!s_body(&c, out, zone, true) || !s_check_request_body(out, &c.reason))
            break;
        ok = true;
        break;
    case SMP_REPLY:
    case SMP_PARTIAL:
        if (dir == SMP_BROKER_TO_CLIENT) {
        } else if (from_worker) {
            if (!s_next(&c, &out->route, 1, SMP_ROUTE_MAX, "route must be 1-256 bytes"))
                break;
        } else {
            break;
        }
        if (!s_next(&c, &out->request_id, 1, SMP_REQUEST_ID_MAX, "request id must be 1-32 bytes"))
            break;
        if (!s_body(&c, out, zone, true))
            break;
        if (out->command == SMP_REPLY && !s_check_reply_body(out, &c.reason))
            break;
        if (out->command == SMP_PARTIAL && out->body_obj.type != MSGPACK_OBJECT_MAP) {
            c.reason = "partial body must be a map";
            break;
        }
        ok = true;
        break;
    case SMP_CANCEL:
        if (dir != SMP_CLIENT_TO_BROKER && !to_worker)
            break;
        if (to_worker && !s_next(&c, &out->route, 1, SMP_ROUTE_MAX, "route must be 1-256 bytes"))
            break;
        ok = s_next(&c, &out->request_id, 1, SMP_REQUEST_ID_MAX, "request id must be 1-32 bytes");
        break;
    case SMP_READY:
        if (!from_worker)
            break;
        ok = s_next(&c, &out->service, 1, SMP_SERVICE_MAX, "service must be 1-64 bytes") &&
             s_u32(&c, &out->credit, "credit must be 4 bytes");
        break;
    case SMP_CREDIT:
        if (!from_worker)
            break;
        ok = s_u32(&c, &out->credit, "credit must be 4 bytes");
        break;
    case SMP_HEARTBEAT:
        if (!worker_side)
            break;
        ok = s_body(&c, out, zone, false);
        if (ok && out->body.size && out->body_obj.type != MSGPACK_OBJECT_MAP) {
            c.reason = "heartbeat status must be a map";
            ok = false;
        }
        break;
    case SMP_DISCONNECT:
        ok = worker_side;
        break;
    }
    if (!ok) {
        why = c.reason ? c.reason : "command not valid in this direction";
        goto done;
    }
    if (s_more(&c)) {
        why = "unexpected extra frames";
        ok = false;
    }
done:
    if (!ok && reason)
        *reason = why;
    return ok ? 0 : -1;
}

static void s_add(zmsg_t *msg, smp_bytes_t b)
{
    zmsg_addmem(msg, b.data, b.size);
}

static void s_add_u32(zmsg_t *msg, uint32_t value)
{
    uint8_t buf[4];
    smp_put_u32(buf, value);
    zmsg_addmem(msg, buf, 4);
}

zmsg_t *smp_build(const smp_msg_t *m, smp_dir_t dir)
{
    zmsg_t *msg = zmsg_new();
    uint8_t command = (uint8_t)m->command;
    zmsg_addmem(msg, "", 0);
    zmsg_addmem(msg, SMP_PROTOCOL, 4);
    zmsg_addmem(msg, &command, 1);
    switch (m->command) {
    case SMP_REQUEST:
        if (dir == SMP_CLIENT_TO_BROKER)
            s_add(msg, m->service);
        else
            s_add(msg, m->route);
        s_add(msg, m->request_id);
        s_add_u32(msg, m->deadline_ms);
        s_add(msg, m->body);
        break;
    case SMP_REPLY:
    case SMP_PARTIAL:
        if (dir == SMP_WORKER_TO_BROKER)
            s_add(msg, m->route);
        s_add(msg, m->request_id);
        s_add(msg, m->body);
        break;
    case SMP_CANCEL:
        if (dir == SMP_BROKER_TO_WORKER)
            s_add(msg, m->route);
        s_add(msg, m->request_id);
        break;
    case SMP_READY:
        s_add(msg, m->service);
        s_add_u32(msg, m->credit);
        break;
    case SMP_CREDIT:
        s_add_u32(msg, m->credit);
        break;
    case SMP_HEARTBEAT:
        if (m->body.size)
            s_add(msg, m->body);
        break;
    case SMP_DISCONNECT:
        break;
    default:
        slog_error("smp_build: unknown command 0x%02x", command);
        zmsg_destroy(&msg);
        return NULL;
    }
    return msg;
}

zmsg_t *smp_event_build(const char *topic, const void *body, size_t body_size)
{
    zmsg_t *msg = zmsg_new();
    zmsg_addstr(msg, topic);
    zmsg_addmem(msg, SMP_PROTOCOL, 4);
    zmsg_addmem(msg, body, body_size);
    return msg;
}

int smp_event_parse(zmsg_t *msg, msgpack_zone *zone, smp_bytes_t *topic, msgpack_object *body,
                    const char **reason)
{
    smp_bytes_t frames[S_FRAMES_MAX];
    s_cursor_t c = {frames, s_frames_of(msg, frames), 0, NULL};
    smp_bytes_t proto, raw;
    if (!s_next(&c, topic, 1, SMP_TOPIC_MAX, "event topic must be 1-128 bytes") ||
        !s_next(&c, &proto, 4, 4, "event protocol frame must be SMP1") ||
        memcmp(proto.data, SMP_PROTOCOL, 4) != 0) {
        *reason = c.reason ? c.reason : "event protocol frame must be SMP1";
        return -1;
    }
    if (!s_next(&c, &raw, 1, SMP_BODY_MAX, "event body missing or oversize") ||
        !s_unpack(raw, zone, body, &c.reason)) {
        *reason = c.reason;
        return -1;
    }
    if (body->type != MSGPACK_OBJECT_MAP) {
        *reason = "event body must be a map";
        return -1;
    }
    if (s_more(&c)) {
        *reason = "unexpected extra frames";
        return -1;
    }
    return 0;
}
