/*  ops.h - the `db` service's ops and the machinery they run on.

    An op is a function written as a resumable step sequence (protothread style):
    each OP_* macro below starts an asynchronous action (a statement on a pooled
    connection, START TRANSACTION, an Argon2id hash off the loop) and returns; the
    framework calls the function again when the action completed, and the switch
    in OP_BEGIN jumps back to just after that macro. Locals do not survive a
    resume: what an op needs later lives in its state struct (OP_STATE).

    The framework (ops.c) owns everything around the op body:
      - finding the op, checking auth, the args helpers that answer 400;
      - checking out a connection at the first statement, returning it (reset on
        return) before the reply is sent; a hash (OP_HASH, OP_VERIFY) gives it
        back first, so no connection waits on a CPU job, and waits in the hash
        worker's bounded queue without counting against the worker's credit (a
        full queue: 503; a job that cannot finish before the deadline is dropped
        uncomputed: 504);
      - errors: a lost connection or a deadlock retries the whole op once on a
        fresh connection when that is safe (a read, or a write whose transaction
        never reached COMMIT, or one with an Idempotency-Key); a write whose
        COMMIT was cut off, or an autocommit write (OP_TRY_WRITE) cut off while
        under way, is answered 503 with a clear message; a lock wait timeout is
        503; anything else 500 (logged);
      - idempotency: OP_TX_BEGIN claims (user, key) in the transaction;
        dbop_commit stores the reply there before COMMIT; a retry anywhere gets the
        stored reply byte for byte;
      - events are published only after COMMIT (or the autocommit write)
        succeeded;
      - deadlines: an op past its request's deadline is stopped and answered 504:
        inside a transaction its connection is cut (the server rolls back), an
        autocommit write is stopped with KILL QUERY (pool_kill_query), a COMMIT
        is left to finish.
*/
#ifndef SLUICE_DB_OPS_H
#define SLUICE_DB_OPS_H

#include "conn.h"
#include "events.h"
#include "hash_worker.h"
#include "pool.h"
#include "worker.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct ops_t ops_t;
typedef struct dbop_t dbop_t;
typedef void(op_fn)(dbop_t *op);

typedef struct {
    size_t max_item_bytes; /* clipboard content above this: 413 */
} ops_config_t;

ops_t *ops_new(const ops_config_t *config, pool_t *pool, hash_worker_t *hash, events_t *events);
void ops_destroy(ops_t **self_p);
void ops_set_worker(ops_t *self, worker_t *worker);

/* worker_callbacks_t handlers */
void ops_on_request(void *self, worker_request_t *req);
void ops_on_cancel(void *self, worker_request_t *req);
/* op counters and latency (inside a map the caller opened: OPS_STATUS_PAIRS pairs) */
#define OPS_STATUS_PAIRS (6 + HASH_STATUS_PAIRS)
void ops_status(ops_t *self, msgpack_packer *pk);
/* Ops in their hash stage (waiting for the hash thread or on it): they hold no
   connection, and main.c adds them to the credit so they hold none of it either. */
size_t ops_hashing(const ops_t *self);

/* Deadlines of running ops; call a few times a second. */
void ops_tick(ops_t *self);
size_t ops_running(const ops_t *self);

#define OP_STATE_SIZE 512
#define OP_EVENTS_MAX 4

struct dbop_t {
    ops_t *ops;
    worker_request_t *req;
    const char *name;
    op_fn *fn;
    int pc;                     /* resume point inside fn */
    const msgpack_object *args; /* the request's "args" map (NULL when absent) */
    int64_t user_id, device_id; /* from "auth" (0 when the op needs none) */
    const char *idem;           /* Idempotency-Key of a write, or NULL */
    size_t idem_len;
    int64_t now_ms; /* wall clock when the op started: every time it writes */

    dbres_t res;      /* the last statement's rows or counts */
    unsigned sql_err; /* after OP_TRY: the statement's error number, 0 when it worked */
    bool hash_ok;     /* after OP_HASH / OP_VERIFY */
    char hash[HASH_STR_MAX];

    msgpack_sbuffer out; /* the reply body */
    int status;          /* its status (0: read it from out) */
    msgpack_packer pk;

    /* private to the framework */
    conn_t *conn;
    pool_waiter_t waiter;
    hash_job_t *hash_job;      /* queued or computing, until its result came */
    void (*next)(dbop_t *op);  /* continuation after the current action */
    void (*start)(dbop_t *op); /* what to start once a connection is checked out */
    const char *sql;
    dbparam_t params[CONN_PARAMS_MAX];
    size_t nparams;
    bool try_errors;
    bool committing;    /* COMMIT (or an autocommit write) was sent: a lost connection now
                           means "outcome unknown" */
    bool writing_alone; /* the statement under way is an autocommit write */
    int retries;
    int stage;
    struct {
        int64_t user_id;
        msgpack_sbuffer body;
    } events[OP_EVENTS_MAX];
    int nevents;
    int64_t started_us;
    void *handle; /* in the running list */

    _Alignas(16) unsigned char state[OP_STATE_SIZE];
};

/* The op's own state struct, zeroed at start and at a retry. */
#define OP_STATE(op, type)                                                                         \
    ((void)sizeof(struct {                                                                         \
         _Static_assert(sizeof(type) <= OP_STATE_SIZE, "op state too large");                      \
         int unused_;                                                                              \
     }),                                                                                           \
     (type *)(void *)(op)->state)

/* ---- the step macros ---- */
#define OP_BEGIN(op)                                                                               \
    switch ((op)->pc) {                                                                            \
    case 0:;
#define OP_END(op)                                                                                 \
    default:                                                                                       \
        break;                                                                                     \
        }
#define OP_AWAIT_(op, n, start)                                                                    \
    do {                                                                                           \
        (op)->pc = (n);                                                                            \
        start;                                                                                     \
        return;                                                                                    \
    case (n):;                                                                                     \
    } while (0)
#define OP_PARAMS_(...) ((const dbparam_t[]){__VA_ARGS__})
#define OP_NPARAMS_(...) (sizeof(OP_PARAMS_(__VA_ARGS__)) / sizeof(dbparam_t))
/* A statement with parameters; op->res has its result. SQL errors end the op. */
#define OP_EXEC(op, sql, ...)                                                                      \
    OP_AWAIT_(                                                                                     \
        op, __COUNTER__ + 1,                                                                       \
        dbop_exec((op), DB_SQL(sql), OP_PARAMS_(__VA_ARGS__), OP_NPARAMS_(__VA_ARGS__), false))
#define OP_EXEC0(op, sql)                                                                          \
    OP_AWAIT_(op, __COUNTER__ + 1, dbop_exec((op), DB_SQL(sql), NULL, 0, false))
/* Like OP_EXEC, but an SQL error (not a lost connection) resumes with op->sql_err set. */
#define OP_TRY(op, sql, ...)                                                                       \
    OP_AWAIT_(                                                                                     \
        op, __COUNTER__ + 1,                                                                       \
        dbop_exec((op), DB_SQL(sql), OP_PARAMS_(__VA_ARGS__), OP_NPARAMS_(__VA_ARGS__), true))
/* Like OP_TRY, for a write that may run outside a transaction (autocommit: it is its
   own transaction). From the moment such a statement is sent, a lost connection
   means its outcome is unknown, as with a cut-off COMMIT: 503, never a retry that
   could apply it twice. Inside OP_TX_BEGIN it is an ordinary statement. */
#define OP_TRY_WRITE(op, sql, ...)                                                                 \
    OP_AWAIT_(                                                                                     \
        op, __COUNTER__ + 1,                                                                       \
        dbop_exec_write((op), DB_SQL(sql), OP_PARAMS_(__VA_ARGS__), OP_NPARAMS_(__VA_ARGS__)))
/* START TRANSACTION (+ the idempotency claim when the request has a key). */
#define OP_TX_BEGIN(op) OP_AWAIT_(op, __COUNTER__ + 1, dbop_tx_begin(op))
#define OP_HASH(op, pw, len) OP_AWAIT_(op, __COUNTER__ + 1, dbop_hash((op), (pw), (len)))
#define OP_VERIFY(op, hash, pw, len)                                                               \
    OP_AWAIT_(op, __COUNTER__ + 1, dbop_verify((op), (hash), (pw), (len)))

void dbop_exec(dbop_t *op, const char *sql, const dbparam_t *params, size_t n, bool try_errors);
void dbop_exec_write(dbop_t *op, const char *sql, const dbparam_t *params, size_t n);
void dbop_tx_begin(dbop_t *op);
void dbop_hash(dbop_t *op, const char *password, size_t len);
void dbop_verify(dbop_t *op, const char *hash, const char *password, size_t len);
/* Whether the hash queue has room now; if not, answers the 503 a full queue gets
   and returns false. Called before an op's first statement, so a flood refused
   for hashing costs no database round trip either. */
bool dbop_hash_room(dbop_t *op);
/* Gives the connection back now (before a hash). */
void dbop_release(dbop_t *op);

/* ---- ending an op: each is the last thing the op function does ---- */
/* Starts the reply {"status": status, "data": <what the op packs next>}. */
msgpack_packer *dbop_reply(dbop_t *op, int status);
/* {"status": status} with no data (204). */
void dbop_reply_empty(dbop_t *op, int status);
/* Sends the reply built in op->out (a read, or a write that changed nothing). */
void dbop_done(dbop_t *op);
/* Stores the reply with the idempotency key (if any), COMMITs (when a transaction is
   open: an autocommit write has nothing to commit), then publishes the events and
   sends the reply. */
void dbop_commit(dbop_t *op);
/* Answers an error and ends the op (an open transaction is rolled back). */
void dbop_error(dbop_t *op, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Queues an event for after the commit; body is taken over. */
void dbop_event(dbop_t *op, int64_t user_id, msgpack_sbuffer *body);

/* ---- args: each answers 400 (and ends the op) when the value is wrong ---- */
/* A string of min..max characters (UTF-8 checked). Absent: *s = NULL, fine unless
   required. */
bool arg_str(dbop_t *op, const char *key, bool required, size_t min_chars, size_t max_chars,
             const char **s, size_t *len);
/* An id: a positive integer up to 2^63-1 (a string of digits is accepted too). */
bool arg_id(dbop_t *op, const char *key, bool required, int64_t *value);
/* An integer in [min, max]; absent: fallback. */
bool arg_int(dbop_t *op, const char *key, int64_t min, int64_t max, int64_t fallback,
             int64_t *value);
bool arg_bool(dbop_t *op, const char *key, bool required, bool fallback, bool *value);

/* ---- shared packing ---- */
void op_pack_time(msgpack_packer *pk, const char *key, int64_t wall_ms); /* RFC 3339 or nil */
const ops_config_t *dbop_config(const dbop_t *op);
bool utf8_valid(const char *s, size_t len, size_t *chars);

/* ---- the ops (ops_account.c, ops_clipboard.c, ops_chat.c) ---- */
void op_user_create(dbop_t *op);
void op_session_create(dbop_t *op);
void op_auth_verify(dbop_t *op);
void op_device_list(dbop_t *op);
void op_device_revoke(dbop_t *op);
void op_device_set_active(dbop_t *op);
void op_clipboard_create(dbop_t *op);
void op_clipboard_list(dbop_t *op);
void op_clipboard_latest(dbop_t *op);
void op_clipboard_delete(dbop_t *op);
void op_chat_conversation_create(dbop_t *op);
void op_chat_conversation_list(dbop_t *op);
void op_chat_message_list(dbop_t *op);
void op_chat_message_begin(dbop_t *op);
void op_chat_message_find(dbop_t *op);
void op_chat_message_checkpoint(dbop_t *op);
void op_chat_message_finish(dbop_t *op);

#endif
