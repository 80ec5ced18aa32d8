/*  ops.c - the op table and the machinery every op runs on. See ops.h. */
#include "ops.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"

#include <errno.h>
#include <mysqld_error.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define S_LATENCY_RING 1024

typedef struct {
    const char *name;
    op_fn *fn;
    bool auth;  /* needs "auth" {user_id, device_id} */
    bool write; /* a write: honours "idem" */
} s_def_t;

static void s_op_db_ping(dbop_t *op);

static const s_def_t s_defs[] = {
    {"user.create", op_user_create, false, true},
    {"session.create", op_session_create, false, true},
    {"auth.verify", op_auth_verify, false, false},
    {"device.list", op_device_list, true, false},
    {"device.revoke", op_device_revoke, true, true},
    {"device.set_active", op_device_set_active, true, true},
    {"clipboard.create", op_clipboard_create, true, true},
    {"clipboard.list", op_clipboard_list, true, false},
    {"clipboard.latest", op_clipboard_latest, true, false},
    {"clipboard.delete", op_clipboard_delete, true, true},
    {"chat.conversation.create", op_chat_conversation_create, true, true},
    {"chat.conversation.list", op_chat_conversation_list, true, false},
    {"chat.message.list", op_chat_message_list, true, false},
    {"chat.message.begin", op_chat_message_begin, true, true},
    {"chat.message.find", op_chat_message_find, true, false},
    {"chat.message.checkpoint", op_chat_message_checkpoint, true, true},
    {"chat.message.finish", op_chat_message_finish, true, true},
    {"db.ping", s_op_db_ping, false, false},
};

struct ops_t {
    ops_config_t config;
    pool_t *pool;
    hash_worker_t *hash;
    events_t *events;
    worker_t *worker;
    zlistx_t *running;    /* dbop_t* */
    uint64_t ops;         /* ops answered */
    uint64_t errors;      /* ... with a 5xx */
    uint64_t retries;     /* ops run a second time after a lost connection or deadlock */
    int64_t next_tick_ms; /* deadlines are checked every 20 ms, not every wakeup */
    int64_t latency_us[S_LATENCY_RING];
    size_t latency_count, latency_pos;
};

ops_t *ops_new(const ops_config_t *config, pool_t *pool, hash_worker_t *hash, events_t *events)
{
    ops_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->pool = pool;
    self->hash = hash;
    self->events = events;
    self->running = zlistx_new();
    return self;
}

static void s_free(dbop_t *op);

void ops_destroy(ops_t **self_p)
{
    ops_t *self = *self_p;
    if (!self)
        return;
    /* only at exit, after draining: anything left is dropped without a reply */
    for (dbop_t *op = zlistx_first(self->running); op; op = zlistx_next(self->running)) {
        if (op->waiter.handle)
            pool_cancel(self->pool, &op->waiter);
        hash_worker_cancel(self->hash, &op->hash_job);
        s_free(op);
    }
    zlistx_destroy(&self->running);
    free(self);
    *self_p = NULL;
}

void ops_set_worker(ops_t *self, worker_t *worker)
{
    self->worker = worker;
}

size_t ops_running(const ops_t *self)
{
    return zlistx_size(self->running);
}

const ops_config_t *dbop_config(const dbop_t *op)
{
    return &op->ops->config;
}

/* ---- the end of an op ---- */

static void s_free(dbop_t *op)
{
    for (int i = 0; i < op->nevents; i++)
        msgpack_sbuffer_destroy(&op->events[i].body);
    dbres_clear(&op->res);
    msgpack_sbuffer_destroy(&op->out);
    if (op->req) {
        /* never replied (destroy at exit): the request frames are the worker's */
        op->req->user = NULL;
    }
    free(op);
}

/* The status of the reply in op->out: recorded when it was built, read back only
   for a stored idempotent reply. */
static int s_reply_status(const dbop_t *op)
{
    if (op->status)
        return op->status;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int64_t status = 500;
    if (msgpack_unpack_next(&u, op->out.data, op->out.size, NULL) == MSGPACK_UNPACK_SUCCESS)
        mp_get_int(&u.data, "status", &status);
    msgpack_unpacked_destroy(&u);
    return (int)status;
}

/* Gives the connection back (reset on return), then replies: never the other way
   round, so no connection is held while a reply travels. */
static void s_finish(dbop_t *op)
{
    ops_t *self = op->ops;
    hash_worker_cancel(self->hash, &op->hash_job); /* an answer before its hash: ignored */
    if (op->conn) {
        conn_t *conn = op->conn;
        op->conn = NULL;
        pool_return(self->pool, conn, false);
    }
    int status = s_reply_status(op);
    self->ops++;
    if (status >= 500)
        self->errors++;
    self->latency_us[self->latency_pos] = clock_now_us() - op->started_us;
    self->latency_pos = (self->latency_pos + 1) % S_LATENCY_RING;
    if (self->latency_count < S_LATENCY_RING)
        self->latency_count++;
    if (status >= 500 || slog_enabled(SLOG_DEBUG))
        slog_write(status >= 500 ? SLOG_WARN : SLOG_DEBUG, op->req->msg.request_id.data,
                   op->req->msg.request_id.size, "db: %s -> %d", op->name ? op->name : "?", status);
    worker_request_t *req = op->req;
    op->req = NULL;
    if (self->worker)
        worker_reply(self->worker, &req, op->out.data, op->out.size);
    zlistx_delete(self->running, op->handle);
    s_free(op);
}

msgpack_packer *dbop_reply(dbop_t *op, int status)
{
    msgpack_sbuffer_clear(&op->out);
    op->status = status;
    msgpack_pack_map(&op->pk, 2);
    mp_pack_kv_int(&op->pk, "status", status);
    mp_pack_cstr(&op->pk, "data");
    return &op->pk;
}

void dbop_reply_empty(dbop_t *op, int status)
{
    msgpack_sbuffer_clear(&op->out);
    op->status = status;
    msgpack_pack_map(&op->pk, 1);
    mp_pack_kv_int(&op->pk, "status", status);
}

void dbop_done(dbop_t *op)
{
    s_finish(op);
}

void dbop_error(dbop_t *op, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    mp_error_body(&op->out, status, code, message);
    op->status = status;
    s_finish(op);
}

void dbop_event(dbop_t *op, int64_t user_id, msgpack_sbuffer *body)
{
    if (op->nevents == OP_EVENTS_MAX) {
        slog_error("db: %s: too many events (our bug)", op->name);
        msgpack_sbuffer_destroy(body);
        return;
    }
    op->events[op->nevents].user_id = user_id;
    op->events[op->nevents].body = *body; /* taken over */
    op->nevents++;
    msgpack_sbuffer_init(body);
}

/* ---- running statements for an op ---- */

static void s_resume(dbop_t *op)
{
    op->fn(op);
}

/* Back to the op's first step, state cleared: a retry after a lost connection. */
static void s_restart(dbop_t *op)
{
    op->ops->retries++;
    op->retries++;
    op->pc = 0;
    op->committing = false;
    op->writing_alone = false;
    op->sql_err = 0;
    op->stage = 0;
    for (int i = 0; i < op->nevents; i++)
        msgpack_sbuffer_destroy(&op->events[i].body);
    op->nevents = 0;
    dbres_clear(&op->res);
    msgpack_sbuffer_clear(&op->out);
    op->status = 0;
    memset(op->state, 0, sizeof op->state);
    op->fn(op);
}

/* The connection died under the op: decide between retry, 503 and 504. */
static void s_lost(dbop_t *op)
{
    char why[256];
    snprintf(why, sizeof why, "%s (%u)", conn_error(op->conn), conn_errno(op->conn));
    bool aborted = conn_errno(op->conn) == CONN_ERR_ABORTED;
    conn_t *conn = op->conn;
    op->conn = NULL;
    pool_return(op->ops->pool, conn, true);
    if (op->committing && !op->idem) {
        dbop_error(op, 503, "unavailable",
                   "the database connection was lost while committing this write, so it may or "
                   "may not have been applied (%s); repeat it with an Idempotency-Key to be safe",
                   why);
    } else if (aborted || clock_now_ms() >= op->req->deadline_ms) {
        dbop_error(op, 504, "timeout", "the request's deadline passed during a database operation");
    } else if (op->retries < 1) {
        slog_warn("db: %s: connection lost (%s); retrying once on a fresh connection", op->name,
                  why);
        s_restart(op);
    } else {
        dbop_error(op, 503, "unavailable", "the database is unavailable: %s", why);
    }
}

static void s_on_done(conn_t *conn, void *arg)
{
    dbop_t *op = arg;
    if (!conn_failed(conn)) {
        op->sql_err = 0;
        op->next(op);
        return;
    }
    unsigned err = conn_errno(conn);
    if (conn_lost(conn)) {
        s_lost(op);
    } else if (err == ER_LOCK_DEADLOCK && op->retries < 1) {
        /* the server answered, so nothing is unknown (not even for COMMIT or an
           autocommit write): it rolled the whole transaction back, and running it
           again is safe */
        slog_info("db: %s: deadlock; retrying once", op->name);
        conn_t *c = op->conn;
        op->conn = NULL;
        pool_return(op->ops->pool, c, false);
        s_restart(op);
    } else if (err == ER_QUERY_INTERRUPTED && op->writing_alone) {
        /* KILL QUERY (ours at the deadline, see ops_tick): the autocommit write
           was rolled back */
        dbop_error(op, 504, "timeout",
                   "the database statement was stopped (its deadline passed); nothing was "
                   "written");
    } else if (err == ER_LOCK_DEADLOCK || err == ER_LOCK_WAIT_TIMEOUT) {
        dbop_error(op, 503, "unavailable",
                   "timed out waiting for data locked by another request; retry");
    } else if (op->try_errors) {
        op->sql_err = err;
        op->next(op);
    } else {
        slog_error("db: %s: %s (%u)", op->name, conn_error(conn), err);
        dbop_error(op, 500, "internal", "database error (%u)", err);
    }
}

static void s_on_conn(pool_waiter_t *waiter, conn_t *conn)
{
    dbop_t *op = waiter->arg;
    if (!conn) {
        dbop_error(op, 503, "unavailable", "the database is unreachable; retry later");
        return;
    }
    op->conn = conn;
    op->start(op);
}

/* Runs start(op) once the op holds a connection (checking one out if needed). */
static void s_with_conn(dbop_t *op, void (*start)(dbop_t *))
{
    if (op->conn) {
        start(op);
        return;
    }
    if (clock_now_ms() >= op->req->deadline_ms) {
        dbop_error(op, 504, "timeout",
                   "the request's deadline passed before it reached the database");
        return;
    }
    op->waiter.ready = s_on_conn;
    op->waiter.arg = op;
    op->start = start;
    op->waiter.verify = op->retries > 0; /* a retry gets a connection known to work */
    pool_checkout(op->ops->pool, &op->waiter);
}

static void s_start_exec(dbop_t *op)
{
    if (conn_exec(op->conn, op->sql, op->params, op->nparams, &op->res, s_on_done, op) != 0) {
        slog_error("db: %s: cannot start a statement: %s", op->name, conn_error(op->conn));
        dbop_error(op, 500, "internal", "database error");
    }
}

static void s_set_statement(dbop_t *op, const char *sql, const dbparam_t *params, size_t n,
                            bool try_errors)
{
    op->sql = sql;
    op->nparams = n < CONN_PARAMS_MAX ? n : CONN_PARAMS_MAX;
    if (n)
        memcpy(op->params, params, op->nparams * sizeof *params);
    op->try_errors = try_errors;
}

void dbop_exec(dbop_t *op, const char *sql, const dbparam_t *params, size_t n, bool try_errors)
{
    s_set_statement(op, sql, params, n, try_errors);
    op->next = s_resume;
    s_with_conn(op, s_start_exec);
}

static void s_write_done(dbop_t *op)
{
    op->committing = false; /* answered: applied, or not at all */
    op->writing_alone = false;
    s_resume(op);
}

/* Known only once the connection is checked out: whether a transaction is open. */
static void s_start_write(dbop_t *op)
{
    op->committing = op->writing_alone = !conn_in_transaction(op->conn);
    s_start_exec(op);
}

void dbop_exec_write(dbop_t *op, const char *sql, const dbparam_t *params, size_t n)
{
    s_set_statement(op, sql, params, n, true);
    op->next = s_write_done;
    s_with_conn(op, s_start_write);
}

void dbop_release(dbop_t *op)
{
    if (op->conn) {
        conn_t *conn = op->conn;
        op->conn = NULL;
        pool_return(op->ops->pool, conn, false);
    }
}

/* ---- transactions and idempotency ---- */

static void s_idem_replay(dbop_t *op)
{
    const dbcell_t *name = dbres_cell(&op->res, 0, 0);
    const dbcell_t *body = dbres_cell(&op->res, 0, 2);
    if (op->res.rows == 0 || body->null) {
        dbop_error(op, 409, "conflict", "a request with this Idempotency-Key is in progress");
        return;
    }
    if (name->null || strcmp(name->s, op->name) != 0) {
        dbop_error(op, 409, "conflict",
                   "this Idempotency-Key was already used for a different operation (%s)",
                   name->null ? "?" : name->s);
        return;
    }
    /* the first result, byte for byte */
    msgpack_sbuffer_clear(&op->out);
    msgpack_sbuffer_write(&op->out, body->s, body->len);
    op->status = 0;
    s_finish(op);
}

static void s_idem_rolled_back(dbop_t *op)
{
    op->sql = DB_SQL("SELECT op, status, body FROM idempotency_keys"
                     " WHERE user_id = ? AND idem_key = ?");
    op->params[0] = P_INT(op->user_id);
    op->params[1] = P_STR(op->idem, op->idem_len);
    op->nparams = 2;
    op->try_errors = false;
    op->next = s_idem_replay;
    s_start_exec(op);
}

static void s_idem_claimed(dbop_t *op)
{
    if (op->sql_err == 0) {
        s_resume(op);
    } else if (op->sql_err == ER_DUP_ENTRY) {
        /* already done (committed) by an earlier try, here or on another worker */
        op->next = s_idem_rolled_back;
        if (conn_rollback(op->conn, s_on_done, op) != 0)
            dbop_error(op, 500, "internal", "database error");
    } else {
        slog_error("db: %s: idempotency claim failed (%u)", op->name, op->sql_err);
        dbop_error(op, 500, "internal", "database error (%u)", op->sql_err);
    }
}

static void s_tx_started(dbop_t *op)
{
    if (!op->idem) {
        s_resume(op);
        return;
    }
    /* A concurrent twin with the same key blocks on this row until the first
       commits (then gets a duplicate key and replays its reply) or rolls back
       (then goes on as the first). */
    op->sql =
        DB_SQL("INSERT INTO idempotency_keys (user_id, idem_key, op, status, body, created_at)"
               " VALUES (?, ?, ?, 0, '', ?)");
    op->params[0] = P_INT(op->user_id);
    op->params[1] = P_STR(op->idem, op->idem_len);
    op->params[2] = P_CSTR(op->name);
    op->params[3] = P_TIME(op->now_ms);
    op->nparams = 4;
    op->try_errors = true;
    op->next = s_idem_claimed;
    s_start_exec(op);
}

static void s_start_tx(dbop_t *op)
{
    if (conn_query(op->conn, DB_SQL("START TRANSACTION"), s_on_done, op) != 0)
        dbop_error(op, 500, "internal", "database error");
}

void dbop_tx_begin(dbop_t *op)
{
    op->try_errors = false;
    op->next = s_tx_started;
    s_with_conn(op, s_start_tx);
}

static void s_committed(dbop_t *op)
{
    op->committing = false;
    for (int i = 0; i < op->nevents; i++)
        events_publish(op->ops->events, op->events[i].user_id, op->events[i].body.data,
                       op->events[i].body.size);
    s_finish(op);
}

static void s_commit_now(dbop_t *op)
{
    op->committing = true;
    op->try_errors = false;
    op->next = s_committed;
    if (conn_commit(op->conn, s_on_done, op) != 0)
        dbop_error(op, 500, "internal", "database error");
}

void dbop_commit(dbop_t *op)
{
    if (!op->conn) {
        slog_error("db: %s: commit without a transaction (our bug)", op->name);
        dbop_error(op, 500, "internal", "internal error");
        return;
    }
    if (!op->idem) {
        if (conn_in_transaction(op->conn))
            s_commit_now(op);
        else
            s_committed(op); /* an autocommit write: applied already */
        return;
    }
    op->sql = DB_SQL("UPDATE idempotency_keys SET status = ?, body = ?"
                     " WHERE user_id = ? AND idem_key = ?");
    op->params[0] = P_INT(s_reply_status(op));
    op->params[1] = P_STR(op->out.data, op->out.size);
    op->params[2] = P_INT(op->user_id);
    op->params[3] = P_STR(op->idem, op->idem_len);
    op->nparams = 4;
    op->try_errors = false;
    op->next = s_commit_now;
    s_start_exec(op);
}

/* ---- Argon2id off the loop ---- */

static void s_on_hash(void *arg, hash_result_t result, const char *hash)
{
    dbop_t *op = arg;
    op->hash_job = NULL;
    if (result == HASH_EXPIRED) {
        dbop_error(op, 504, "timeout",
                   "the request's deadline passed before its password hash could start; it was "
                   "not computed");
        return;
    }
    op->hash_ok = result == HASH_OK;
    snprintf(op->hash, sizeof op->hash, "%s", hash);
    s_resume(op);
}

/*  The hash stage of an op. The connection goes back to the pool first (no
    connection waits on a CPU job), and while the job is queued the op does not
    count against the credit this worker advertises (main.c adds
    hash_worker_pending to it): a login flood fills the hash queue, never the
    `db` service's credit, so every other op still gets a connection at once. A
    full queue is a fast 503 naming its limit, not a wait until the deadline. */
static void s_hash_refused(dbop_t *op, hash_refusal_t why)
{
    if (why == HASH_REFUSED_FULL)
        dbop_error(op, 503, "unavailable",
                   "too many passwords are being checked on this worker (hash_queue_max = %zu); "
                   "retry shortly",
                   hash_worker_queue_max(op->ops->hash));
    else if (why == HASH_REFUSED_LATE)
        dbop_error(op, 504, "timeout",
                   "too little of the request's deadline is left to check a password; it was not "
                   "computed");
    else
        dbop_error(op, 500, "internal", "cannot check the password (out of memory)");
}

bool dbop_hash_room(dbop_t *op)
{
    if (hash_worker_pending(op->ops->hash) < hash_worker_queue_max(op->ops->hash))
        return true;
    hash_worker_refuse(op->ops->hash);
    s_hash_refused(op, HASH_REFUSED_FULL);
    return false;
}

void dbop_hash(dbop_t *op, const char *password, size_t len)
{
    dbop_release(op);
    hash_refusal_t why = 0;
    op->hash_job =
        hash_worker_hash(op->ops->hash, password, len, op->req->deadline_ms, s_on_hash, op, &why);
    if (!op->hash_job)
        s_hash_refused(op, why);
}

void dbop_verify(dbop_t *op, const char *hash, const char *password, size_t len)
{
    dbop_release(op);
    hash_refusal_t why = 0;
    op->hash_job = hash_worker_verify(op->ops->hash, hash, password, len, op->req->deadline_ms,
                                      s_on_hash, op, &why);
    if (!op->hash_job)
        s_hash_refused(op, why);
}

size_t ops_hashing(const ops_t *self)
{
    return hash_worker_pending(self->hash);
}

/* ---- requests in, cancels, deadlines ---- */

static const s_def_t *s_find(smp_bytes_t name)
{
    for (size_t i = 0; i < sizeof s_defs / sizeof s_defs[0]; i++)
        if (smp_bytes_eq(name, s_defs[i].name))
            return &s_defs[i];
    return NULL;
}

void ops_on_request(void *arg, worker_request_t *req)
{
    ops_t *self = arg;
    dbop_t *op = calloc(1, sizeof *op);
    if (!op) {
        msgpack_sbuffer buf;
        msgpack_sbuffer_init(&buf);
        mp_error_body(&buf, 500, "internal", "out of memory");
        worker_reply(self->worker, &req, buf.data, buf.size);
        msgpack_sbuffer_destroy(&buf);
        return;
    }
    op->ops = self;
    op->req = req;
    req->user = op;
    op->started_us = clock_now_us();
    op->now_ms = clock_wall_ms();
    msgpack_sbuffer_init(&op->out);
    msgpack_packer_init(&op->pk, &op->out, msgpack_sbuffer_write);
    op->handle = zlistx_add_end(self->running, op);

    const msgpack_object *body = &req->msg.body_obj;
    const s_def_t *def = s_find(req->msg.op);
    if (!def) {
        dbop_error(op, 400, "bad_request", "unknown op \"%.*s\"", (int)req->msg.op.size,
                   (const char *)req->msg.op.data);
        return;
    }
    op->name = def->name;
    op->fn = def->fn;
    const msgpack_object *args = mp_get(body, "args");
    op->args = args && args->type == MSGPACK_OBJECT_MAP ? args : NULL;
    if (def->auth) {
        const msgpack_object *auth = mp_get(body, "auth");
        if (!auth || auth->type != MSGPACK_OBJECT_MAP ||
            !mp_get_int(auth, "user_id", &op->user_id) || op->user_id <= 0 ||
            !mp_get_int(auth, "device_id", &op->device_id) || op->device_id <= 0) {
            dbop_error(op, 401, "unauthorized",
                       "%s needs \"auth\": {\"user_id\", \"device_id\"} (positive integers)",
                       def->name);
            return;
        }
        const char *idem;
        size_t idem_len;
        if (def->write && mp_get_str(body, "idem", &idem, &idem_len) && idem_len > 0) {
            op->idem = idem;
            op->idem_len = idem_len;
        }
    }
    op->fn(op);
}

void ops_on_cancel(void *arg, worker_request_t *req)
{
    (void)arg;
    dbop_t *op = req->user;
    /* Only an op still waiting for a connection stops: one that holds a connection
       is short, and stopping a write half-way would buy nothing. */
    if (op && op->waiter.handle) {
        pool_cancel(op->ops->pool, &op->waiter);
        dbop_error(op, 499, "cancelled", "cancelled by the client");
    } else if (op && op->hash_job) {
        hash_worker_cancel(op->ops->hash, &op->hash_job); /* waiting: never computed */
        dbop_error(op, 499, "cancelled", "cancelled by the client");
    }
}

static bool s_still_running(ops_t *self, dbop_t *op)
{
    for (dbop_t *o = zlistx_first(self->running); o; o = zlistx_next(self->running))
        if (o == op)
            return true;
    return false;
}

void ops_tick(ops_t *self)
{
    int64_t now = clock_now_ms();
    size_t n = zlistx_size(self->running);
    if (n == 0 || now < self->next_tick_ms)
        return;
    self->next_tick_ms = now + 20;
    /* hash jobs that can no longer finish in time are dropped, not computed; their
       ops answer 504 (s_on_hash) and leave the running list */
    hash_worker_tick(self->hash, now);
    n = zlistx_size(self->running);
    if (n == 0)
        return;
    dbop_t **late = calloc(n, sizeof *late);
    if (!late)
        return;
    size_t count = 0;
    for (dbop_t *op = zlistx_first(self->running); op && count < n; op = zlistx_next(self->running))
        if (op->req && now >= op->req->deadline_ms)
            late[count++] = op;
    for (size_t i = 0; i < count; i++) {
        dbop_t *op = late[i];
        if (!s_still_running(self, op))
            continue;
        if (op->waiter.handle) {
            pool_cancel(self->pool, &op->waiter);
            dbop_error(op, 504, "timeout",
                       "the request's deadline passed while waiting for a database connection");
        } else if (op->conn && conn_busy(op->conn) && !op->committing) {
            /* a statement still running past the deadline (a lock wait, a slow
               query): the client has its 504 from the broker already; stop it, so
               the connection is not held for nothing. Not during COMMIT: that
               would turn a write's outcome into "unknown". */
            conn_abort(op->conn);
        } else if (op->conn && conn_busy(op->conn) && op->writing_alone) {
            /* An autocommit write cannot be cut off like that: the server would
               go on and might apply it after all, with nobody told (no reply, no
               event). KILL QUERY stops it at the server and its answer says
               whether it was applied. */
            pool_kill_query(op->ops->pool, op->conn);
        }
    }
    free(late);
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void ops_status(ops_t *self, msgpack_packer *pk)
{
    double p50 = 0, p99 = 0;
    if (self->latency_count) {
        int64_t sorted[S_LATENCY_RING];
        memcpy(sorted, self->latency_us, self->latency_count * sizeof sorted[0]);
        qsort(sorted, self->latency_count, sizeof sorted[0], s_cmp_i64);
        p50 = (double)sorted[self->latency_count / 2] / 1000.0;
        p99 = (double)sorted[self->latency_count * 99 / 100] / 1000.0;
    }
    mp_pack_kv_int(pk, "ops", (int64_t)self->ops);
    mp_pack_kv_int(pk, "errors", (int64_t)self->errors);
    mp_pack_kv_int(pk, "retries", (int64_t)self->retries);
    mp_pack_kv_int(pk, "in_flight", (int64_t)zlistx_size(self->running));
    mp_pack_cstr(pk, "latency_p50_ms");
    msgpack_pack_double(pk, p50);
    mp_pack_cstr(pk, "latency_p99_ms");
    msgpack_pack_double(pk, p99);
    hash_worker_status(self->hash, pk);
}

/* ---- args ---- */

bool utf8_valid(const char *s, size_t len, size_t *chars)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t extra;
        unsigned cp;
        if (c < 0x80) {
            i++;
            n++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
        n++;
    }
    if (chars)
        *chars = n;
    return true;
}

static const msgpack_object *s_arg(dbop_t *op, const char *key)
{
    const msgpack_object *v = op->args ? mp_get(op->args, key) : NULL;
    return v && v->type != MSGPACK_OBJECT_NIL ? v : NULL;
}

bool arg_str(dbop_t *op, const char *key, bool required, size_t min_chars, size_t max_chars,
             const char **s, size_t *len)
{
    const msgpack_object *v = s_arg(op, key);
    *s = NULL;
    *len = 0;
    if (!v) {
        if (!required)
            return true;
        dbop_error(op, 400, "bad_request", "\"%s\" is required", key);
        return false;
    }
    size_t chars = 0;
    if (v->type != MSGPACK_OBJECT_STR) {
        dbop_error(op, 400, "bad_request", "\"%s\" must be a string", key);
        return false;
    }
    if (!utf8_valid(v->via.str.ptr, v->via.str.size, &chars)) {
        dbop_error(op, 400, "bad_request", "\"%s\" is not valid UTF-8", key);
        return false;
    }
    if (chars < min_chars || chars > max_chars) {
        dbop_error(op, 400, "bad_request", "\"%s\" must be %zu-%zu characters long", key, min_chars,
                   max_chars);
        return false;
    }
    *s = v->via.str.ptr;
    *len = v->via.str.size;
    return true;
}

/* An integer from a msgpack int or a string of digits; a reason when it is not. */
static const char *s_int_of(const msgpack_object *v, int64_t *value)
{
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > INT64_MAX)
            return "must be at most 9223372036854775807";
        *value = (int64_t)v->via.u64;
        return NULL;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *value = v->via.i64;
        return NULL;
    }
    if (v->type == MSGPACK_OBJECT_STR) {
        size_t n = v->via.str.size;
        const char *p = v->via.str.ptr;
        if (n == 0 || n > 19)
            return n ? "must be at most 9223372036854775807" : "must be an integer";
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return "must be a string of digits or an integer";
            x = x * 10 + (uint64_t)(p[i] - '0');
        }
        if (x > INT64_MAX)
            return "must be at most 9223372036854775807";
        *value = (int64_t)x;
        return NULL;
    }
    return "must be an integer";
}

bool arg_id(dbop_t *op, const char *key, bool required, int64_t *value)
{
    const msgpack_object *v = s_arg(op, key);
    *value = 0;
    if (!v) {
        if (!required)
            return true;
        dbop_error(op, 400, "bad_request", "\"%s\" is required", key);
        return false;
    }
    const char *why = s_int_of(v, value);
    if (!why && *value <= 0)
        why = "must be a positive id";
    if (why) {
        dbop_error(op, 400, "bad_request", "\"%s\" %s", key, why);
        return false;
    }
    return true;
}

bool arg_int(dbop_t *op, const char *key, int64_t min, int64_t max, int64_t fallback,
             int64_t *value)
{
    const msgpack_object *v = s_arg(op, key);
    *value = fallback;
    if (!v)
        return true;
    const char *why = s_int_of(v, value);
    if (why) {
        dbop_error(op, 400, "bad_request", "\"%s\" %s", key, why);
        return false;
    }
    if (*value < min || *value > max) {
        dbop_error(op, 400, "bad_request", "\"%s\" must be between %" PRId64 " and %" PRId64, key,
                   min, max);
        return false;
    }
    return true;
}

bool arg_bool(dbop_t *op, const char *key, bool required, bool fallback, bool *value)
{
    const msgpack_object *v = s_arg(op, key);
    *value = fallback;
    if (!v) {
        if (!required)
            return true;
        dbop_error(op, 400, "bad_request", "\"%s\" is required", key);
        return false;
    }
    if (v->type != MSGPACK_OBJECT_BOOLEAN) {
        dbop_error(op, 400, "bad_request", "\"%s\" must be true or false", key);
        return false;
    }
    *value = v->via.boolean;
    return true;
}

void op_pack_time(msgpack_packer *pk, const char *key, int64_t wall_ms)
{
    mp_pack_cstr(pk, key);
    if (wall_ms < 0) {
        msgpack_pack_nil(pk);
        return;
    }
    char text[CLOCK_RFC3339_SIZE];
    clock_format_rfc3339(wall_ms, text);
    mp_pack_cstr(pk, text);
}

/* db.ping: the database answers a statement. */
static void s_op_db_ping(dbop_t *op)
{
    OP_BEGIN(op);
    OP_EXEC0(op, "SELECT 1");
    msgpack_pack_map(dbop_reply(op, 200), 0);
    dbop_done(op);
    OP_END(op);
}
