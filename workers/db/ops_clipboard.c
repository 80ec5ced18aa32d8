/*  ops_clipboard.c - clipboard items with a per-user seq that only grows. */
#include "mp.h"
#include "ops.h"
#include "slog.h"
#include "smp.h"

#include <mysqld_error.h>

/* A list reply stays well under the largest body SMP carries; next_after lets the
   client fetch the rest. */
#define S_LIST_BYTES_MAX (SMP_BODY_MAX - 256 * 1024)
#define S_ITEM_OVERHEAD 256

static void s_pack_item(msgpack_packer *pk, int64_t id, int64_t seq, const char *content,
                        size_t content_len, const char *type, size_t type_len,
                        const dbcell_t *source, int64_t source_id, int64_t created_ms)
{
    msgpack_pack_map(pk, 6);
    mp_pack_kv_int(pk, "id", id);
    mp_pack_kv_int(pk, "seq", seq);
    mp_pack_cstr(pk, "content");
    mp_pack_strn(pk, content, content_len);
    mp_pack_cstr(pk, "content_type");
    mp_pack_strn(pk, type, type_len);
    mp_pack_cstr(pk, "source_device_id");
    if (source && source->null)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_int64(pk, source ? source->i : source_id);
    op_pack_time(pk, "created_at", created_ms);
}

/* Row r of SELECT id, seq, content, content_type, source_device_id, created_at. */
static void s_pack_row(msgpack_packer *pk, const dbres_t *res, size_t r)
{
    const dbcell_t *content = dbres_cell(res, r, 2), *type = dbres_cell(res, r, 3);
    s_pack_item(pk, dbres_cell(res, r, 0)->i, dbres_cell(res, r, 1)->i, content->s, content->len,
                type->s, type->len, dbres_cell(res, r, 4), 0, dbres_cell(res, r, 5)->i);
}

typedef struct {
    const char *content, *type;
    size_t content_len, type_len;
    int64_t seq;
} s_create_t;

/* clipboard.create {content, content_type} -> 201 item; event clipboard.item */
void op_clipboard_create(dbop_t *op)
{
    s_create_t *st = OP_STATE(op, s_create_t);
    OP_BEGIN(op);
    const msgpack_object *v = op->args ? mp_get(op->args, "content") : NULL;
    if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > dbop_config(op)->max_item_bytes) {
        dbop_error(op, 413, "payload_too_large", "\"content\" is larger than %zu bytes",
                   dbop_config(op)->max_item_bytes);
        return;
    }
    if (!arg_str(op, "content", true, 0, SIZE_MAX, &st->content, &st->content_len) ||
        !arg_str(op, "content_type", false, 1, 255, &st->type, &st->type_len))
        return;
    if (!st->type) {
        st->type = "text/plain";
        st->type_len = 10;
    }
    for (size_t i = 0; i < st->type_len; i++) {
        if ((unsigned char)st->type[i] < 0x20 || st->type[i] == 0x7f) {
            dbop_error(op, 400, "bad_request", "\"content_type\" has control characters");
            return;
        }
    }
    /* With an Idempotency-Key the claim and the stored reply share a transaction
       with the INSERT; without one the INSERT is a transaction on its own. */
    if (op->idem)
        OP_TX_BEGIN(op);
    /* The seq comes from the trigger of migration 003, which bumps users.clip_seq
       inside this statement: the user's row lock orders concurrent creates on
       every worker, each gets the next seq, a failed INSERT undoes its bump. */
    OP_TRY_WRITE(op,
                 "INSERT INTO clipboard_items"
                 " (user_id, seq, content, content_type, source_device_id, created_at)"
                 " VALUES (?, 0, ?, ?, ?, ?) RETURNING id, seq",
                 P_INT(op->user_id), P_STR(st->content, st->content_len),
                 P_STR(st->type, st->type_len), P_INT(op->device_id), P_TIME(op->now_ms));
    if (op->sql_err == ER_NO_REFERENCED_ROW_2) {
        dbop_error(op, 401, "unauthorized", "no such user");
        return;
    }
    if (op->sql_err != 0 || op->res.rows != 1) {
        slog_error("db: clipboard.create: the INSERT failed: %s (%u)",
                   op->sql_err ? conn_error(op->conn) : "no row returned", op->sql_err);
        dbop_error(op, 500, "internal", "database error (%u)", op->sql_err);
        return;
    }
    st->seq = dbres_cell(&op->res, 0, 1)->i;
    int64_t id = dbres_cell(&op->res, 0, 0)->i;
    s_pack_item(dbop_reply(op, 201), id, st->seq, st->content, st->content_len, st->type,
                st->type_len, NULL, op->device_id, op->now_ms);
    msgpack_sbuffer ev;
    msgpack_sbuffer_init(&ev);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &ev, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_kv_str(&pk, "type", "clipboard.item");
    mp_pack_cstr(&pk, "item");
    s_pack_item(&pk, id, st->seq, st->content, st->content_len, st->type, st->type_len, NULL,
                op->device_id, op->now_ms);
    mp_pack_kv_int(&pk, "source_device_id", op->device_id);
    dbop_event(op, op->user_id, &ev);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    int64_t after, limit;
} s_list_t;

/*  clipboard.list {after, limit} -> 200 {items, next_after, more}: seq > after,
    ascending. The page is cut by bytes in SQL, not after the fact: the innermost
    SELECT reads only seq and LENGTH(content) of limit + 1 rows, the window sums their
    sizes, and only rows within the budget (always at least one) are fetched whole.
    So a limit=500 page of 1 MiB items costs the worker one page, never 500 MiB. The
    extra row and COUNT(*) OVER () say whether more follows: a page shorter than its
    limit is not the end (design rule 7), `more` is. */
void op_clipboard_list(dbop_t *op)
{
    s_list_t *st = OP_STATE(op, s_list_t);
    OP_BEGIN(op);
    if (!arg_int(op, "after", 0, INT64_MAX, 0, &st->after) ||
        !arg_int(op, "limit", 1, 500, 100, &st->limit))
        return;
    OP_EXEC(op,
            "SELECT i.id, i.seq, i.content, i.content_type, i.source_device_id, i.created_at,"
            " w.total FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn,"
            " SUM(len) OVER (ORDER BY seq) AS run, COUNT(*) OVER () AS total"
            " FROM (SELECT seq, LENGTH(content) + ? AS len FROM clipboard_items"
            " WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?) p) w"
            " JOIN clipboard_items i ON i.user_id = ? AND i.seq = w.seq"
            " WHERE w.rn <= ? AND (w.rn = 1 OR w.run <= ?) ORDER BY i.seq",
            P_INT(S_ITEM_OVERHEAD), P_INT(op->user_id), P_INT(st->after), P_INT(st->limit + 1),
            P_INT(op->user_id), P_INT(st->limit), P_INT(S_LIST_BYTES_MAX));
    size_t n = op->res.rows;
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 3);
    mp_pack_cstr(pk, "items");
    msgpack_pack_array(pk, n);
    for (size_t r = 0; r < n; r++)
        s_pack_row(pk, &op->res, r);
    mp_pack_kv_int(pk, "next_after", n ? dbres_cell(&op->res, n - 1, 1)->i : st->after);
    mp_pack_kv_bool(pk, "more", n > 0 && dbres_cell(&op->res, 0, 6)->i > (int64_t)n);
    dbop_done(op);
    OP_END(op);
}

/* clipboard.latest -> 200 item | 404 */
void op_clipboard_latest(dbop_t *op)
{
    OP_BEGIN(op);
    OP_EXEC(op,
            "SELECT id, seq, content, content_type, source_device_id, created_at"
            " FROM clipboard_items WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
            P_INT(op->user_id));
    if (op->res.rows == 0) {
        dbop_error(op, 404, "not_found", "the clipboard is empty");
        return;
    }
    s_pack_row(dbop_reply(op, 200), &op->res, 0);
    dbop_done(op);
    OP_END(op);
}

typedef struct {
    int64_t id;
} s_delete_t;

/* clipboard.delete {id} -> 204 | 404; event clipboard.deleted */
void op_clipboard_delete(dbop_t *op)
{
    s_delete_t *st = OP_STATE(op, s_delete_t);
    OP_BEGIN(op);
    if (!arg_id(op, "id", true, &st->id))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op, "DELETE FROM clipboard_items WHERE id = ? AND user_id = ?", P_INT(st->id),
            P_INT(op->user_id));
    if (op->res.affected == 0) {
        dbop_error(op, 404, "not_found", "no such clipboard item");
        return;
    }
    msgpack_sbuffer ev;
    msgpack_sbuffer_init(&ev);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &ev, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_str(&pk, "type", "clipboard.deleted");
    mp_pack_kv_int(&pk, "id", st->id);
    dbop_event(op, op->user_id, &ev);
    dbop_reply_empty(op, 204);
    dbop_commit(op);
    OP_END(op);
}
