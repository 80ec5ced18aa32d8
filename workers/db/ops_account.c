/*  ops_account.c - accounts, sessions, token checks and devices. */
#include "clock.h"
#include "mp.h"
#include "ops.h"
#include "username.h"

#include <mysqld_error.h>
#include <sodium.h>

#define S_TOKEN_BYTES 32
#define S_TOKEN_TEXT 48 /* base64url of 32 bytes: 43 chars + NUL */

typedef struct {
    const char *username, *password;
    size_t username_len, password_len;
} s_user_create_t;

/* user.create {username, password} -> 201 {id, username, created_at}; 409 if taken */
void op_user_create(dbop_t *op)
{
    s_user_create_t *st = OP_STATE(op, s_user_create_t);
    OP_BEGIN(op);
    if (!arg_str(op, "username", true, 3, 64, &st->username, &st->username_len))
        return;
    if (!username_ok(st->username, st->username_len)) {
        dbop_error(op, 400, "bad_request",
                   "\"username\" may contain only letters, digits, '_', '.' and '-'");
        return;
    }
    if (!arg_str(op, "password", true, 8, 256, &st->password, &st->password_len) ||
        !dbop_hash_room(op))
        return;
    OP_HASH(op, st->password, st->password_len);
    if (!op->hash_ok) {
        dbop_error(op, 500, "internal", "cannot hash the password");
        return;
    }
    OP_TX_BEGIN(op);
    OP_TRY(op, "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
           P_STR(st->username, st->username_len), P_CSTR(op->hash), P_TIME(op->now_ms));
    if (op->sql_err == ER_DUP_ENTRY) {
        dbop_error(op, 409, "conflict", "the username is already taken");
        return;
    }
    if (op->sql_err) {
        dbop_error(op, 500, "internal", "database error (%u)", op->sql_err);
        return;
    }
    msgpack_packer *pk = dbop_reply(op, 201);
    msgpack_pack_map(pk, 3);
    mp_pack_kv_int(pk, "id", (int64_t)op->res.insert_id);
    mp_pack_cstr(pk, "username");
    mp_pack_strn(pk, st->username, st->username_len);
    op_pack_time(pk, "created_at", op->now_ms);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    const char *username, *password, *device_name;
    size_t username_len, password_len, device_name_len;
    int64_t user_id;
    char stored[HASH_STR_MAX];
    char token[S_TOKEN_TEXT];
    unsigned char token_hash[crypto_hash_sha256_BYTES];
} s_session_create_t;

/* session.create {username, password, device_name} -> 201 {user_id, device_id, token};
   401 with one message whether the user exists or not */
void op_session_create(dbop_t *op)
{
    s_session_create_t *st = OP_STATE(op, s_session_create_t);
    OP_BEGIN(op);
    if (!arg_str(op, "username", true, 1, 256, &st->username, &st->username_len) ||
        !arg_str(op, "password", true, 1, 1024, &st->password, &st->password_len) ||
        !arg_str(op, "device_name", true, 1, 128, &st->device_name, &st->device_name_len))
        return;
    /* a full hash queue is refused before the first statement, not after it */
    if (!dbop_hash_room(op))
        return;
    OP_EXEC(op, "SELECT id, password_hash FROM users WHERE username = ?",
            P_STR(st->username, st->username_len));
    if (op->res.rows == 1) {
        st->user_id = dbres_cell(&op->res, 0, 0)->i;
        snprintf(st->stored, sizeof st->stored, "%s", dbres_cell(&op->res, 0, 1)->s);
    }
    /* a missing user is verified against a dummy hash: same cost, same answer */
    OP_VERIFY(op, st->stored, st->password, st->password_len);
    if (!op->hash_ok || st->user_id == 0) {
        dbop_error(op, 401, "unauthorized", "invalid username or password");
        return;
    }
    unsigned char raw[S_TOKEN_BYTES];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(st->token, sizeof st->token, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    crypto_hash_sha256(st->token_hash, (const unsigned char *)st->token, strlen(st->token));
    OP_TX_BEGIN(op);
    OP_EXEC(op,
            "INSERT INTO devices (user_id, name, token_hash, is_active, created_at)"
            " VALUES (?, ?, ?, 0, ?)",
            P_INT(st->user_id), P_STR(st->device_name, st->device_name_len),
            P_STR(st->token_hash, sizeof st->token_hash), P_TIME(op->now_ms));
    msgpack_packer *pk = dbop_reply(op, 201);
    msgpack_pack_map(pk, 3);
    mp_pack_kv_int(pk, "user_id", st->user_id);
    mp_pack_kv_int(pk, "device_id", (int64_t)op->res.insert_id);
    mp_pack_kv_str(pk, "token", st->token);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    unsigned char token_hash[crypto_hash_sha256_BYTES];
} s_auth_verify_t;

/* auth.verify {token} -> 200 {user_id, device_id}; 401 when unknown or revoked */
void op_auth_verify(dbop_t *op)
{
    s_auth_verify_t *st = OP_STATE(op, s_auth_verify_t);
    const char *token;
    size_t len;
    OP_BEGIN(op);
    if (!arg_str(op, "token", true, 1, 512, &token, &len))
        return;
    crypto_hash_sha256(st->token_hash, (const unsigned char *)token, len);
    OP_EXEC(op, "SELECT id, user_id FROM devices WHERE token_hash = ? AND revoked_at IS NULL",
            P_STR(st->token_hash, sizeof st->token_hash));
    if (op->res.rows == 0) {
        dbop_error(op, 401, "unauthorized", "the token is invalid or revoked");
        return;
    }
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 2);
    mp_pack_kv_int(pk, "user_id", dbres_cell(&op->res, 0, 1)->i);
    mp_pack_kv_int(pk, "device_id", dbres_cell(&op->res, 0, 0)->i);
    dbop_done(op);
    OP_END(op);
}

/* device.list -> 200 {devices: [{id, name, is_active, last_seen_at, created_at}]} */
void op_device_list(dbop_t *op)
{
    OP_BEGIN(op);
    OP_EXEC(op,
            "SELECT id, name, is_active, last_seen_at, created_at FROM devices"
            " WHERE user_id = ? AND revoked_at IS NULL ORDER BY id",
            P_INT(op->user_id));
    msgpack_packer *pk = dbop_reply(op, 200);
    msgpack_pack_map(pk, 1);
    mp_pack_cstr(pk, "devices");
    msgpack_pack_array(pk, op->res.rows);
    for (size_t r = 0; r < op->res.rows; r++) {
        const dbcell_t *seen = dbres_cell(&op->res, r, 3);
        msgpack_pack_map(pk, 5);
        mp_pack_kv_int(pk, "id", dbres_cell(&op->res, r, 0)->i);
        mp_pack_cstr(pk, "name");
        mp_pack_strn(pk, dbres_cell(&op->res, r, 1)->s, dbres_cell(&op->res, r, 1)->len);
        mp_pack_kv_bool(pk, "is_active", dbres_cell(&op->res, r, 2)->i != 0);
        op_pack_time(pk, "last_seen_at", seen->null ? -1 : seen->i);
        op_pack_time(pk, "created_at", dbres_cell(&op->res, r, 4)->i);
    }
    dbop_done(op);
    OP_END(op);
}

typedef struct {
    int64_t device_id;
} s_device_revoke_t;

/* device.revoke {device_id} -> 204; 404 when not the user's; event device.revoked */
void op_device_revoke(dbop_t *op)
{
    s_device_revoke_t *st = OP_STATE(op, s_device_revoke_t);
    OP_BEGIN(op);
    if (!arg_id(op, "device_id", true, &st->device_id))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op,
            "UPDATE devices SET revoked_at = ?, is_active = 0"
            " WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
            P_TIME(op->now_ms), P_INT(st->device_id), P_INT(op->user_id));
    if (op->res.affected == 0) {
        dbop_error(op, 404, "not_found", "no such device");
        return;
    }
    msgpack_sbuffer ev;
    msgpack_sbuffer_init(&ev);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &ev, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_str(&pk, "type", "device.revoked");
    mp_pack_kv_int(&pk, "device_id", st->device_id);
    dbop_event(op, op->user_id, &ev);
    dbop_reply_empty(op, 204);
    dbop_commit(op);
    OP_END(op);
}

typedef struct {
    int64_t device_id;
    bool active;
} s_device_set_active_t;

/* device.set_active {device_id, active} -> 204; sets last_seen_at */
void op_device_set_active(dbop_t *op)
{
    s_device_set_active_t *st = OP_STATE(op, s_device_set_active_t);
    OP_BEGIN(op);
    if (!arg_id(op, "device_id", true, &st->device_id) ||
        !arg_bool(op, "active", true, false, &st->active))
        return;
    OP_TX_BEGIN(op);
    OP_EXEC(op,
            "UPDATE devices SET is_active = ?, last_seen_at = ?"
            " WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
            P_INT(st->active ? 1 : 0), P_TIME(op->now_ms), P_INT(st->device_id),
            P_INT(op->user_id));
    if (op->res.affected == 0) {
        dbop_error(op, 404, "not_found", "no such device");
        return;
    }
    dbop_reply_empty(op, 204);
    dbop_commit(op);
    OP_END(op);
}
