/*  conn.h - one MariaDB connection driven by Connector/C's non-blocking API.

    Every action (connect, execute a prepared statement, a text query for
    START TRANSACTION, commit, rollback, ping) is started here and then advanced
    by the owner's event loop: conn_wait() says which socket events (and by when)
    the connection waits for, conn_io() feeds them back. When the action is over
    the done callback runs once; conn_failed() / conn_errno() / conn_lost() tell
    how it ended. Nothing here ever blocks, so one slow query holds only its own
    connection.

    Statements are prepared once per connection and cached by their SQL text's
    address: callers pass string literals (DB_SQL enforces it), never built text.
*/
#ifndef SLUICE_DB_CONN_H
#define SLUICE_DB_CONN_H

#include <mysql.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Only a string literal compiles here: SQL is never built at run time. */
#define DB_SQL(literal) ("" literal "")

#define CONN_PARAMS_MAX 12

typedef enum { DBP_NULL, DBP_INT, DBP_STR, DBP_TIME } dbparam_type_t;

/* One bound parameter. Strings are borrowed until the action completes. */
typedef struct {
    dbparam_type_t type;
    int64_t i;     /* DBP_INT; DBP_TIME: wall-clock milliseconds (UTC) */
    const char *s; /* DBP_STR */
    size_t len;
} dbparam_t;

#define P_NULL ((dbparam_t){.type = DBP_NULL})
#define P_INT(v) ((dbparam_t){.type = DBP_INT, .i = (int64_t)(v)})
#define P_STR(p, n) ((dbparam_t){.type = DBP_STR, .s = (const char *)(p), .len = (size_t)(n)})
#define P_CSTR(p) P_STR((p), strlen(p))
#define P_TIME(ms) ((dbparam_t){.type = DBP_TIME, .i = (int64_t)(ms)})

/* One cell of a result row: integers as int64, DATETIME as wall ms, the rest as bytes. */
typedef struct {
    bool null;
    int64_t i; /* integer columns; DATETIME columns as UTC milliseconds */
    char *s;   /* other columns: NUL-terminated copy (binary-safe with len) */
    size_t len;
} dbcell_t;

/* The outcome of one statement: rows of a SELECT, or counts of a write. */
typedef struct {
    size_t rows, cols;
    dbcell_t *cells; /* rows * cols */
    size_t cap;
    uint64_t affected;
    uint64_t insert_id;
} dbres_t;

void dbres_clear(dbres_t *res);
const dbcell_t *dbres_cell(const dbres_t *res, size_t row, size_t col);

typedef struct {
    const char *host;
    unsigned port;
    const char *socket; /* unix socket path; empty: TCP to host:port */
    const char *user;
    const char *password;
    const char *database;
    unsigned connect_timeout_s;
    unsigned read_timeout_s;
    unsigned write_timeout_s;
    int64_t lock_wait_timeout_s; /* innodb_lock_wait_timeout of every session; 0 = server's */
} conn_config_t;

typedef struct conn_t conn_t;
typedef void(conn_done_fn)(conn_t *conn, void *arg);

conn_t *conn_new(const conn_config_t *config, uint64_t id);
/* Closes the socket and frees; the connection must not be inside an action. */
void conn_destroy(conn_t **self_p);

uint64_t conn_id(const conn_t *self);        /* ours, for logs */
unsigned long conn_thread_id(conn_t *self);  /* the server's connection id */
int64_t conn_created_ms(const conn_t *self); /* monotonic, when connected */
bool conn_busy(const conn_t *self);          /* an action is under way */
bool conn_in_transaction(conn_t *self);      /* the server says a transaction is open */

/* Actions: each returns 0 when started (done will run) or -1 when it could not
   start (done will not run; conn_error says why). */
int conn_connect(conn_t *self, conn_done_fn *done, void *arg);
int conn_exec(conn_t *self, const char *sql, const dbparam_t *params, size_t n, dbres_t *res,
              conn_done_fn *done, void *arg);
int conn_query(conn_t *self, const char *sql, conn_done_fn *done, void *arg);
int conn_commit(conn_t *self, conn_done_fn *done, void *arg);
int conn_rollback(conn_t *self, conn_done_fn *done, void *arg);
int conn_ping(conn_t *self, conn_done_fn *done, void *arg);

/* How the last action ended. */
bool conn_failed(const conn_t *self);
unsigned conn_errno(const conn_t *self);
const char *conn_error(const conn_t *self);
/* The connection is unusable (server gone, killed, timed out, aborted). */
bool conn_lost(const conn_t *self);

/* Event-loop glue: the fd and poll events (ZMQ_POLLIN/ZMQ_POLLOUT) this connection
   waits for, and the monotonic time at which it times out (-1: none). Returns false
   when it waits for nothing. */
bool conn_wait(const conn_t *self, int *fd, short *events, int64_t *timeout_at_ms);
/* Advances the action with what poll returned (0 for a timeout). */
void conn_io(conn_t *self, short revents);
/* Makes the action under way fail at once (its socket is shut down): used when the
   request it serves is past its deadline. The connection is lost afterwards. */
void conn_abort(conn_t *self);

/* Distinct from any MySQL error number: the action was aborted by us. */
#define CONN_ERR_ABORTED 9001

#endif
