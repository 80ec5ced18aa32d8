/*  ops_chat.c - chat persistence: conversations and messages. A stream worker
    calls begin, then checkpoints, then finish: each a short transaction of its
    own, so no connection is held while an answer streams. */
#include "mp.h"
#include "ops.h"
#include "smp.h"

#include <mysqld_error.h>

#define S_TITLE_MAX 255
#define S_ERROR_MAX 2000
#define S_LIST_MAX 1000
#define S_LIST_BYTES_MAX (SMP_BODY_MAX - 256 * 1024)
#define S_ITEM_OVERHEAD 256 /* what a row adds to a reply beside its content */

/* {id, role, content, status, created_at[, error]} from the given row, whose columns
   are id, role, content, status, error, created_at starting at col. */
static void s_pack_message_row(msgpack_packer *pk, const dbres_t *res, size_t r, size_t col)
{
    const dbcell_t *error = dbres_cell(res, r, col + 4);
    msgpack_pack_map(pk, error->null ? 5 : 6);
    mp_pack_kv_int(pk, "id", dbres_cell(res, r, col)->i);
    mp_pack_cstr(pk, "role");
    mp_pack_strn(pk, dbres_cell(res, r, col + 1)->s, dbres_cell(res, r, col + 1)->len);
    mp_pack_cstr(pk, "content");
    mp_pack_strn(pk, dbres_cell(res, r, col + 2)->s, dbres_cell(res, r, col + 2)->len);
    mp_pack_cstr(pk, "status");
    mp_pack_strn(pk, dbres_cell(res, r, col + 3)->s, dbres_cell(res, r, col + 3)->len);
    op_pack_time(pk, "created_at", dbres_cell(res, r, col + 5)->i);
    if (!error->null) {
        mp_pack_cstr(pk, "error");
        mp_pack_strn(pk, error->s, error->len);
    }
}

static void s_pack_message(msgpack_packer *pk, int64_t id, const char *role, const char *content,
                           size_t content_len, const char *status, int64_t created_ms)
{
    msgpack_pack_map(pk, 5);
    mp_pack_kv_int(pk, "id", id);
    mp_pack_kv_str(pk, "role", role);
    mp_pack_cstr(pk, "content");
    mp_pack_strn(pk, content, content_len);
    mp_pack_kv_str(pk, "status", status);
    op_pack_time(pk, "created_at", created_ms);
}

/* a message body: UTF-8, at most max_item_bytes */
static bool s_content_arg(dbop_t *op, const char *key, size_t min, const char **s, size_t *len)
{
    const msgpack_object *v = op->args ? mp_get(op->args, key) : NULL;
    if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > dbop_config(op)->max_item_bytes) {
        dbop_error(op, 413, "payload_too_large", "\"%s\" is larger than %zu bytes", key,
                   dbop_config(op)->max_item_bytes);
        return false;
    }
    return arg_str(op, key, true, min, SIZE_MAX, s, len);
}

typedef struct {
    const char *title;
    size_t title_len;
} s_conv_create_t;

/* chat.conversation.create {title?} -> 201 {id, title, created_at} */
void op_chat_conversation_create(dbop_t *op)
{
    s_conv_create_t *st = OP_STATE(op, s_conv_create_t);
    OP_BEGIN(op);
    if (!arg_str(op, "title", false, 0, S_TITLE_MAX, &st->title, &st->title_len))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op, "INSERT INTO conversations (user_id, title, created_at) VALUES (?, ?, ?)",
            P_INT(op->user_id), st->title ? P_STR(st->title, st->title_len) : P_NULL,
            P_TIME(op->now_ms));
    msgpack_packer *pk = dbop_reply(op, 201);
    msgpack_pack_map(pk, 3);
    mp_pack_kv_int(pk, "id", (int64_t)op->res.insert_id);
    mp_pack_cstr(pk, "title");
    if (st->title)
        mp_pack_strn(pk, st->title, st->title_len);
    else
        msgpack_pack_nil(pk);
    op_pack_time(pk, "created_at", op->now_ms);
    dbop_commit(op);
    OP_END(op);
}

/* chat.conversation.list -> 200 {conversations: [{id, title, created_at}]} newest first */
void op_chat_conversation_list(dbop_t *op)
{
    OP_BEGIN(op);
    OP_EXEC(op,
            "SELECT id, title, created_at FROM conversations WHERE user_id = ?"
            " ORDER BY id DESC LIMIT 1000",
            P_INT(op->user_id));
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 1);
    mp_pack_cstr(pk, "conversations");
    msgpack_pack_array(pk, op->res.rows);
    for (size_t r = 0; r < op->res.rows; r++) {
        const dbcell_t *title = dbres_cell(&op->res, r, 1);
        msgpack_pack_map(pk, 3);
        mp_pack_kv_int(pk, "id", dbres_cell(&op->res, r, 0)->i);
        mp_pack_cstr(pk, "title");
        if (title->null)
            msgpack_pack_nil(pk);
        else
            mp_pack_strn(pk, title->s, title->len);
        op_pack_time(pk, "created_at", dbres_cell(&op->res, r, 2)->i);
    }
    dbop_done(op);
    OP_END(op);
}

typedef struct {
    int64_t conversation_id, after, before, limit, max_bytes;
} s_msg_list_t;

/*  chat.message.list {conversation_id, after?, before?, limit?, max_bytes?} -> 200
    {messages, next_after | next_before, more}; 404 when not the user's.
    Oldest first from `after` (default 0); with `before`, newest first below it,
    which is how a stream worker takes the newest messages as context within a byte
    budget. Pages are cut by bytes in SQL as in clipboard.list (a 10,000-message
    conversation of 1 MiB messages costs the worker one page), and `more` says
    whether the page is the last: one shorter than its limit may not be. One round
    trip: the conversation row (ownership; no row: 404) joined with the page. */
void op_chat_message_list(dbop_t *op)
{
    s_msg_list_t *st = OP_STATE(op, s_msg_list_t);
    OP_BEGIN(op);
    if (!arg_id(op, "conversation_id", true, &st->conversation_id) ||
        !arg_int(op, "after", 0, INT64_MAX, 0, &st->after) ||
        !arg_int(op, "before", 1, INT64_MAX, 0, &st->before) ||
        !arg_int(op, "limit", 1, S_LIST_MAX, S_LIST_MAX, &st->limit) ||
        !arg_int(op, "max_bytes", 1, S_LIST_BYTES_MAX, S_LIST_BYTES_MAX, &st->max_bytes))
        return;
    if (st->before && st->after) {
        dbop_error(op, 400, "bad_request", "give \"after\" or \"before\", not both");
        return;
    }
    /* two statements that differ only in direction: an ORDER BY direction cannot be
       a bound parameter, and SQL text is never built at run time */
    if (!st->before) {
        OP_EXEC(op,
                "SELECT c.id, m.id, m.role, m.content, m.status, m.error, m.created_at, w.total"
                " FROM conversations c LEFT JOIN (SELECT id,"
                " ROW_NUMBER() OVER (ORDER BY id) AS rn, SUM(len) OVER (ORDER BY id) AS run,"
                " COUNT(*) OVER () AS total FROM (SELECT id, LENGTH(content) + ? AS len"
                " FROM messages WHERE conversation_id = ? AND id > ? ORDER BY id LIMIT ?) p) w"
                " ON w.rn <= ? AND (w.rn = 1 OR w.run <= ?) LEFT JOIN messages m ON m.id = w.id"
                " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id",
                P_INT(S_ITEM_OVERHEAD), P_INT(st->conversation_id), P_INT(st->after),
                P_INT(st->limit + 1), P_INT(st->limit), P_INT(st->max_bytes),
                P_INT(st->conversation_id), P_INT(op->user_id));
    } else {
        OP_EXEC(op,
                "SELECT c.id, m.id, m.role, m.content, m.status, m.error, m.created_at, w.total"
                " FROM conversations c LEFT JOIN (SELECT id,"
                " ROW_NUMBER() OVER (ORDER BY id DESC) AS rn,"
                " SUM(len) OVER (ORDER BY id DESC) AS run,"
                " COUNT(*) OVER () AS total FROM (SELECT id, LENGTH(content) + ? AS len"
                " FROM messages WHERE conversation_id = ? AND id < ? ORDER BY id DESC LIMIT ?) p)"
                " w ON w.rn <= ? AND (w.rn = 1 OR w.run <= ?) LEFT JOIN messages m ON m.id = w.id"
                " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id DESC",
                P_INT(S_ITEM_OVERHEAD), P_INT(st->conversation_id), P_INT(st->before),
                P_INT(st->limit + 1), P_INT(st->limit), P_INT(st->max_bytes),
                P_INT(st->conversation_id), P_INT(op->user_id));
    }
    if (op->res.rows == 0) {
        dbop_error(op, 404, "not_found", "no such conversation");
        return;
    }
    /* no message: one row of the conversation with NULLs */
    size_t n = dbres_cell(&op->res, 0, 1)->null ? 0 : op->res.rows;
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 3);
    mp_pack_cstr(pk, "messages");
    msgpack_pack_array(pk, n);
    for (size_t r = 0; r < n; r++)
        s_pack_message_row(pk, &op->res, r, 1);
    int64_t from = st->before ? st->before : st->after;
    mp_pack_kv_int(pk, st->before ? "next_before" : "next_after",
                   n ? dbres_cell(&op->res, n - 1, 1)->i : from);
    mp_pack_kv_bool(pk, "more", n > 0 && dbres_cell(&op->res, 0, 7)->i > (int64_t)n);
    dbop_done(op);
    OP_END(op);
}

typedef struct {
    int64_t conversation_id;
    const char *content;
    size_t content_len;
    int64_t nonce; /* 0 when not given */
    int64_t user_message_id;
} s_msg_begin_t;

/*  chat.message.begin {conversation_id, content, nonce?} -> 201 {user_message,
    assistant_message, nonce?}. The nonce (a positive integer) is stored with the
    assistant row and echoed: with an idempotency key, a stream worker tells its
    own begin (the same nonce, even on a retry) from one an earlier request made
    with the key (another nonce, from the stored result); and a journal that holds
    only the nonce finds the row again (chat.message.find). */
void op_chat_message_begin(dbop_t *op)
{
    s_msg_begin_t *st = OP_STATE(op, s_msg_begin_t);
    OP_BEGIN(op);
    if (!arg_id(op, "conversation_id", true, &st->conversation_id) ||
        !s_content_arg(op, "content", 1, &st->content, &st->content_len) ||
        !arg_int(op, "nonce", 1, INT64_MAX, 0, &st->nonce))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op, "SELECT id FROM conversations WHERE id = ? AND user_id = ?",
            P_INT(st->conversation_id), P_INT(op->user_id));
    if (op->res.rows == 0) {
        dbop_error(op, 404, "not_found", "no such conversation");
        return;
    }
    OP_EXEC(op,
            "INSERT INTO messages"
            " (conversation_id, user_id, role, content, status, created_at, updated_at)"
            " VALUES (?, ?, 'user', ?, 'complete', ?, ?)",
            P_INT(st->conversation_id), P_INT(op->user_id), P_STR(st->content, st->content_len),
            P_TIME(op->now_ms), P_TIME(op->now_ms));
    st->user_message_id = (int64_t)op->res.insert_id;
    OP_EXEC(op,
            "INSERT INTO messages (conversation_id, user_id, role, content, status, created_at,"
            " updated_at, stream_nonce) VALUES (?, ?, 'assistant', '', 'streaming', ?, ?, ?)",
            P_INT(st->conversation_id), P_INT(op->user_id), P_TIME(op->now_ms), P_TIME(op->now_ms),
            st->nonce ? P_INT(st->nonce) : P_NULL);
    msgpack_packer *pk = dbop_reply(op, 201);
    msgpack_pack_map(pk, st->nonce ? 3 : 2);
    mp_pack_cstr(pk, "user_message");
    s_pack_message(pk, st->user_message_id, "user", st->content, st->content_len, "complete",
                   op->now_ms);
    mp_pack_cstr(pk, "assistant_message");
    s_pack_message(pk, (int64_t)op->res.insert_id, "assistant", "", 0, "streaming", op->now_ms);
    if (st->nonce)
        mp_pack_kv_int(pk, "nonce", st->nonce);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    int64_t conversation_id;
    int64_t nonce;
} s_msg_find_t;

/* chat.message.find {conversation_id, nonce} -> 200 {message} (the assistant row
   that begin made with this nonce), 404 when there is none (yet) */
void op_chat_message_find(dbop_t *op)
{
    s_msg_find_t *st = OP_STATE(op, s_msg_find_t);
    OP_BEGIN(op);
    if (!arg_id(op, "conversation_id", true, &st->conversation_id) ||
        !arg_int(op, "nonce", 1, INT64_MAX, 0, &st->nonce))
        return;
    if (!st->nonce) {
        dbop_error(op, 400, "bad_request", "\"nonce\" is required");
        return;
    }
    OP_EXEC(op,
            "SELECT id, role, content, status, error, created_at FROM messages"
            " WHERE conversation_id = ? AND user_id = ? AND stream_nonce = ? AND role = 'assistant'"
            " LIMIT 1",
            P_INT(st->conversation_id), P_INT(op->user_id), P_INT(st->nonce));
    if (op->res.rows == 0) {
        dbop_error(op, 404, "not_found", "no message with this nonce");
        return;
    }
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 1);
    mp_pack_cstr(pk, "message");
    s_pack_message_row(pk, &op->res, 0, 0);
    dbop_done(op);
    OP_END(op);
}

/* After an UPDATE of a streaming assistant message matched nothing: 404 or 409. */
static void s_not_streaming(dbop_t *op)
{
    if (op->res.rows == 0) {
        dbop_error(op, 404, "not_found", "no such assistant message");
        return;
    }
    const dbcell_t *status = dbres_cell(&op->res, 0, 0);
    dbop_error(op, 409, "conflict", "the message is no longer streaming (it is %s)",
               status->null ? "?" : status->s);
}

typedef struct {
    int64_t message_id;
    const char *content;
    size_t content_len;
} s_checkpoint_t;

/* chat.message.checkpoint {message_id, content} -> 204 */
void op_chat_message_checkpoint(dbop_t *op)
{
    s_checkpoint_t *st = OP_STATE(op, s_checkpoint_t);
    OP_BEGIN(op);
    if (!arg_id(op, "message_id", true, &st->message_id) ||
        !s_content_arg(op, "content", 0, &st->content, &st->content_len))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op,
            "UPDATE messages SET content = ?, updated_at = ?"
            " WHERE id = ? AND user_id = ? AND role = 'assistant' AND status = 'streaming'",
            P_STR(st->content, st->content_len), P_TIME(op->now_ms), P_INT(st->message_id),
            P_INT(op->user_id));
    if (op->res.affected == 0) {
        OP_EXEC(op,
                "SELECT status FROM messages WHERE id = ? AND user_id = ? AND role = 'assistant'",
                P_INT(st->message_id), P_INT(op->user_id));
        s_not_streaming(op);
        return;
    }
    dbop_reply_empty(op, 204);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    int64_t message_id;
    const char *content, *status, *error;
    size_t content_len, status_len, error_len;
} s_finish_t;

/* chat.message.finish {message_id, content, status: complete|failed|cancelled, error?}
   -> 200 {message} */
void op_chat_message_finish(dbop_t *op)
{
    s_finish_t *st = OP_STATE(op, s_finish_t);
    OP_BEGIN(op);
    if (!arg_id(op, "message_id", true, &st->message_id) ||
        !s_content_arg(op, "content", 0, &st->content, &st->content_len) ||
        !arg_str(op, "status", true, 1, 16, &st->status, &st->status_len) ||
        !arg_str(op, "error", false, 0, S_ERROR_MAX, &st->error, &st->error_len))
        return;
    if (!((st->status_len == 8 && memcmp(st->status, "complete", 8) == 0) ||
          (st->status_len == 6 && memcmp(st->status, "failed", 6) == 0) ||
          (st->status_len == 9 && memcmp(st->status, "cancelled", 9) == 0))) {
        dbop_error(op, 400, "bad_request",
                   "\"status\" must be \"complete\", \"failed\" or \"cancelled\"");
        return;
    }
    OP_TX_BEGIN(op);
    OP_EXEC(op,
            "UPDATE messages SET content = ?, status = ?, error = ?, updated_at = ?"
            " WHERE id = ? AND user_id = ? AND role = 'assistant' AND status = 'streaming'",
            P_STR(st->content, st->content_len), P_STR(st->status, st->status_len),
            st->error ? P_STR(st->error, st->error_len) : P_NULL, P_TIME(op->now_ms),
            P_INT(st->message_id), P_INT(op->user_id));
    if (op->res.affected == 0) {
        OP_EXEC(op,
                "SELECT status FROM messages WHERE id = ? AND user_id = ? AND role = 'assistant'",
                P_INT(st->message_id), P_INT(op->user_id));
        s_not_streaming(op);
        return;
    }
    OP_EXEC(op, "SELECT id, role, content, status, error, created_at FROM messages WHERE id = ?",
            P_INT(st->message_id));
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 1);
    mp_pack_cstr(pk, "message");
    s_pack_message_row(pk, &op->res, 0, 0);
    dbop_commit(op);
    OP_END(op);
}
