/*  conn.c - one MariaDB connection on Connector/C's non-blocking API. See conn.h.

    Each *_start call either finishes at once (status 0) or returns the events it
    waits for; the matching *_cont call resumes it once they happened. s_advance()
    is the whole state machine: it loops while steps finish without waiting and
    parks the connection (wait flags + timeout) as soon as one has to wait.
*/
#include "conn.h"
#include "clock.h"
#include "slog.h"

#include <czmq.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef ER_CONNECTION_KILLED
#define ER_CONNECTION_KILLED 1927
#endif

typedef enum {
    A_NONE,
    A_CONNECT,
    A_PREPARE, /* exec: preparing a statement not yet in the cache */
    A_EXECUTE, /* exec: executing */
    A_STORE,   /* exec: reading the whole result set */
    A_QUERY,   /* text query */
    A_COMMIT,
    A_ROLLBACK,
    A_PING,
} s_action_t;

typedef struct {
    const char *sql; /* the literal's address is the key */
    MYSQL_STMT *stmt;
} s_cached_t;

struct conn_t {
    MYSQL *mysql;
    const conn_config_t *config;
    uint64_t id;
    bool connected;
    int64_t created_ms;

    s_action_t action;
    int wait;           /* MYSQL_WAIT_* flags of the step that is waiting, 0: none */
    int64_t wait_until; /* monotonic deadline of that wait, -1: none */
    conn_done_fn *done;
    void *arg;

    /* results of the async calls */
    MYSQL *ret_mysql;
    int ret_int;
    my_bool ret_bool;

    /* the exec under way */
    const char *sql;
    MYSQL_STMT *stmt;
    MYSQL_BIND pbind[CONN_PARAMS_MAX];
    unsigned long plen[CONN_PARAMS_MAX];
    MYSQL_TIME ptime[CONN_PARAMS_MAX];
    size_t nparams;
    dbres_t *res;

    /* how the last action ended */
    bool failed;
    bool lost;
    unsigned err;
    char errmsg[256];

    s_cached_t *cache;
    size_t cache_count, cache_cap;
};

void dbres_clear(dbres_t *res)
{
    for (size_t i = 0; i < res->rows * res->cols; i++)
        free(res->cells[i].s);
    free(res->cells);
    memset(res, 0, sizeof *res);
}

const dbcell_t *dbres_cell(const dbres_t *res, size_t row, size_t col)
{
    static const dbcell_t null_cell = {.null = true};
    if (row >= res->rows || col >= res->cols)
        return &null_cell;
    return &res->cells[row * res->cols + col];
}

conn_t *conn_new(const conn_config_t *config, uint64_t id)
{
    conn_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = config;
    self->id = id;
    self->wait_until = -1;
    self->mysql = mysql_init(NULL);
    if (!self->mysql) {
        free(self);
        return NULL;
    }
    /* Never MYSQL_OPT_RECONNECT: a silent reconnect loses the session (an open
       transaction, prepared statements) behind our back. A lost connection is
       discarded by the pool and a new one opened. */
    my_bool no = 0;
    mysql_optionsv(self->mysql, MYSQL_OPT_RECONNECT, &no);
    mysql_optionsv(self->mysql, MYSQL_OPT_NONBLOCK, 0);
    mysql_optionsv(self->mysql, MYSQL_OPT_CONNECT_TIMEOUT, &config->connect_timeout_s);
    mysql_optionsv(self->mysql, MYSQL_OPT_READ_TIMEOUT, &config->read_timeout_s);
    mysql_optionsv(self->mysql, MYSQL_OPT_WRITE_TIMEOUT, &config->write_timeout_s);
    mysql_optionsv(self->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (config->socket && *config->socket) {
        unsigned proto = MYSQL_PROTOCOL_SOCKET;
        mysql_optionsv(self->mysql, MYSQL_OPT_PROTOCOL, &proto);
    } else {
        unsigned proto = MYSQL_PROTOCOL_TCP;
        mysql_optionsv(self->mysql, MYSQL_OPT_PROTOCOL, &proto);
    }
    return self;
}

void conn_destroy(conn_t **self_p)
{
    conn_t *self = *self_p;
    if (!self)
        return;
    if (self->mysql) {
        /* A lost connection's socket is shut down first, so the COM_QUIT that
           mysql_close writes fails at once instead of waiting on a dead peer. A
           healthy one says COM_QUIT: one small write, no reply awaited. */
        my_socket fd = mysql_get_socket(self->mysql);
        if (self->connected && self->lost && fd != INVALID_SOCKET)
            shutdown(fd, SHUT_RDWR);
        /* mysql_close detaches the statements (they are freed below, and the
           server frees them with the session) */
        mysql_close(self->mysql);
    }
    for (size_t i = 0; i < self->cache_count; i++)
        mysql_stmt_close(self->cache[i].stmt);
    free(self->cache);
    free(self);
    *self_p = NULL;
}

uint64_t conn_id(const conn_t *self)
{
    return self->id;
}

unsigned long conn_thread_id(conn_t *self)
{
    return self->connected ? mysql_thread_id(self->mysql) : 0;
}

int64_t conn_created_ms(const conn_t *self)
{
    return self->created_ms;
}

bool conn_busy(const conn_t *self)
{
    return self->action != A_NONE;
}

bool conn_in_transaction(conn_t *self)
{
    unsigned int status = 0;
    if (!self->connected ||
        mariadb_get_infov(self->mysql, MARIADB_CONNECTION_SERVER_STATUS, &status) != 0)
        return true; /* unknown: assume the worst, the caller rolls back */
    return (status & SERVER_STATUS_IN_TRANS) != 0;
}

bool conn_failed(const conn_t *self)
{
    return self->failed;
}

unsigned conn_errno(const conn_t *self)
{
    return self->err;
}

const char *conn_error(const conn_t *self)
{
    return self->errmsg;
}

bool conn_lost(const conn_t *self)
{
    return self->lost;
}

static bool s_is_lost(unsigned err)
{
    switch (err) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case CONN_ERR_ABORTED:
        return true;
    default:
        return err >= 2000 && err < 3000; /* any other client-side error: do not trust it */
    }
}

static void s_fail(conn_t *self, unsigned err, const char *msg)
{
    self->failed = true;
    self->err = err;
    snprintf(self->errmsg, sizeof self->errmsg, "%s", msg && *msg ? msg : "unknown error");
    if (s_is_lost(err))
        self->lost = true;
}

static void s_fail_mysql(conn_t *self)
{
    if (self->lost && self->err == CONN_ERR_ABORTED)
        return; /* keep the reason we aborted for */
    s_fail(self, mysql_errno(self->mysql), mysql_error(self->mysql));
}

static void s_fail_stmt(conn_t *self)
{
    if (self->lost && self->err == CONN_ERR_ABORTED)
        return;
    s_fail(self, mysql_stmt_errno(self->stmt), mysql_stmt_error(self->stmt));
}

/* Completes the action: the callback may start the next one on this connection. */
static void s_finish(conn_t *self)
{
    conn_done_fn *done = self->done;
    void *arg = self->arg;
    self->action = A_NONE;
    self->wait = 0;
    self->wait_until = -1;
    self->stmt = NULL;
    self->sql = NULL;
    self->res = NULL;
    if (done)
        done(self, arg);
}

static int s_begin(conn_t *self, s_action_t action, conn_done_fn *done, void *arg)
{
    if (self->action != A_NONE) {
        s_fail(self, CR_COMMANDS_OUT_OF_SYNC, "connection busy (our bug)");
        slog_error("db: conn %" PRIu64 ": action started while busy", self->id);
        return -1;
    }
    if (action != A_CONNECT && !self->connected) {
        s_fail(self, CR_SERVER_GONE_ERROR, "not connected");
        return -1;
    }
    self->action = action;
    self->done = done;
    self->arg = arg;
    self->failed = false;
    self->err = 0;
    self->errmsg[0] = 0;
    return 0;
}

static MYSQL_STMT *s_cache_find(conn_t *self, const char *sql)
{
    for (size_t i = 0; i < self->cache_count; i++)
        if (self->cache[i].sql == sql)
            return self->cache[i].stmt;
    return NULL;
}

static void s_cache_add(conn_t *self, const char *sql, MYSQL_STMT *stmt)
{
    if (self->cache_count == self->cache_cap) {
        size_t cap = self->cache_cap ? self->cache_cap * 2 : 16;
        s_cached_t *cache = realloc(self->cache, cap * sizeof *cache);
        if (!cache)
            return; /* not cached: closed with the connection below */
        self->cache = cache;
        self->cache_cap = cap;
    }
    self->cache[self->cache_count].sql = sql;
    self->cache[self->cache_count].stmt = stmt;
    self->cache_count++;
}

static void s_ms_to_time(int64_t ms, MYSQL_TIME *t)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    memset(t, 0, sizeof *t);
    t->year = (unsigned)tm.tm_year + 1900;
    t->month = (unsigned)tm.tm_mon + 1;
    t->day = (unsigned)tm.tm_mday;
    t->hour = (unsigned)tm.tm_hour;
    t->minute = (unsigned)tm.tm_min;
    t->second = (unsigned)tm.tm_sec;
    t->second_part = (unsigned long)(ms % 1000) * 1000;
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
}

static int64_t s_time_to_ms(const MYSQL_TIME *t)
{
    struct tm tm = {0};
    tm.tm_year = (int)t->year - 1900;
    tm.tm_mon = (int)t->month - 1;
    tm.tm_mday = (int)t->day;
    tm.tm_hour = (int)t->hour;
    tm.tm_min = (int)t->minute;
    tm.tm_sec = (int)t->second;
    return (int64_t)timegm(&tm) * 1000 + (int64_t)(t->second_part / 1000);
}

static bool s_bind_params(conn_t *self)
{
    if (mysql_stmt_param_count(self->stmt) != self->nparams) {
        s_fail(self, CR_COMMANDS_OUT_OF_SYNC, "statement parameter count mismatch (our bug)");
        slog_error("db: %zu params given for %lu placeholders in: %s", self->nparams,
                   mysql_stmt_param_count(self->stmt), self->sql);
        return false;
    }
    if (self->nparams && mysql_stmt_bind_param(self->stmt, self->pbind)) {
        s_fail_stmt(self);
        return false;
    }
    return true;
}

/* Binds output buffers sized by the stored result's max_length and copies every row. */
static bool s_fetch_all(conn_t *self)
{
    MYSQL_STMT *stmt = self->stmt;
    dbres_t *res = self->res;
    MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
    if (!meta) {
        s_fail_stmt(self);
        return false;
    }
    unsigned cols = mysql_num_fields(meta);
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    MYSQL_BIND *bind = calloc(cols, sizeof *bind);
    int64_t *ints = calloc(cols, sizeof *ints);
    MYSQL_TIME *times = calloc(cols, sizeof *times);
    char **bufs = calloc(cols, sizeof *bufs);
    unsigned long *lens = calloc(cols, sizeof *lens);
    my_bool *nulls = calloc(cols, sizeof *nulls);
    bool ok = bind && ints && times && bufs && lens && nulls;
    for (unsigned c = 0; ok && c < cols; c++) {
        bind[c].length = &lens[c];
        bind[c].is_null = &nulls[c];
        switch (fields[c].type) {
        case MYSQL_TYPE_TINY:
        case MYSQL_TYPE_SHORT:
        case MYSQL_TYPE_LONG:
        case MYSQL_TYPE_INT24:
        case MYSQL_TYPE_LONGLONG:
        case MYSQL_TYPE_YEAR:
            bind[c].buffer_type = MYSQL_TYPE_LONGLONG;
            bind[c].buffer = &ints[c];
            break;
        case MYSQL_TYPE_DATETIME:
        case MYSQL_TYPE_TIMESTAMP:
        case MYSQL_TYPE_DATE:
            bind[c].buffer_type = MYSQL_TYPE_DATETIME;
            bind[c].buffer = &times[c];
            break;
        default:
            bind[c].buffer_type = MYSQL_TYPE_STRING;
            bind[c].buffer_length = fields[c].max_length + 1;
            bufs[c] = malloc(bind[c].buffer_length);
            bind[c].buffer = bufs[c];
            ok = bufs[c] != NULL;
            break;
        }
    }
    if (ok && mysql_stmt_bind_result(stmt, bind)) {
        s_fail_stmt(self);
        ok = false;
    } else if (!ok) {
        s_fail(self, CR_OUT_OF_MEMORY, "out of memory binding a result");
    }
    res->cols = cols;
    /* Stored results are read from memory: mysql_stmt_fetch does no I/O here. */
    while (ok) {
        int rc = mysql_stmt_fetch(stmt);
        if (rc == MYSQL_NO_DATA)
            break;
        if (rc == 1) {
            s_fail_stmt(self);
            ok = false;
            break;
        }
        if (res->rows * cols + cols > res->cap) {
            size_t cap = res->cap ? res->cap * 2 : (size_t)cols * 8;
            while (cap < res->rows * cols + cols)
                cap *= 2;
            dbcell_t *cells = realloc(res->cells, cap * sizeof *cells);
            if (!cells) {
                s_fail(self, CR_OUT_OF_MEMORY, "out of memory reading a result");
                ok = false;
                break;
            }
            res->cells = cells;
            res->cap = cap;
        }
        dbcell_t *row = &res->cells[res->rows * cols];
        memset(row, 0, cols * sizeof *row);
        res->rows++;
        for (unsigned c = 0; c < cols; c++) {
            row[c].null = nulls[c];
            if (nulls[c])
                continue;
            if (bind[c].buffer_type == MYSQL_TYPE_LONGLONG) {
                row[c].i = ints[c];
            } else if (bind[c].buffer_type == MYSQL_TYPE_DATETIME) {
                row[c].i = s_time_to_ms(&times[c]);
            } else {
                size_t n = lens[c] < bind[c].buffer_length ? lens[c] : bind[c].buffer_length;
                row[c].s = malloc(n + 1);
                if (!row[c].s) {
                    s_fail(self, CR_OUT_OF_MEMORY, "out of memory reading a result");
                    ok = false;
                    break;
                }
                memcpy(row[c].s, bufs[c], n);
                row[c].s[n] = 0;
                row[c].len = n;
            }
        }
    }
    mysql_stmt_free_result(stmt);
    for (unsigned c = 0; c < cols && bufs; c++)
        free(bufs[c]);
    free(bind);
    free(ints);
    free(times);
    free(bufs);
    free(lens);
    free(nulls);
    mysql_free_result(meta);
    return ok;
}

/* Resumes the step under way with the poll result (ready = MYSQL_WAIT_* flags). */
static int s_cont(conn_t *self, int ready)
{
    switch (self->action) {
    case A_CONNECT:
        return mysql_real_connect_cont(&self->ret_mysql, self->mysql, ready);
    case A_EXECUTE:
        return mysql_stmt_execute_cont(&self->ret_int, self->stmt, ready);
    case A_PREPARE:
        return mysql_stmt_prepare_cont(&self->ret_int, self->stmt, ready);
    case A_STORE:
        return mysql_stmt_store_result_cont(&self->ret_int, self->stmt, ready);
    case A_QUERY:
        return mysql_real_query_cont(&self->ret_int, self->mysql, ready);
    case A_COMMIT:
        return mysql_commit_cont(&self->ret_bool, self->mysql, ready);
    case A_ROLLBACK:
        return mysql_rollback_cont(&self->ret_bool, self->mysql, ready);
    case A_PING:
        return mysql_ping_cont(&self->ret_int, self->mysql, ready);
    case A_NONE:
        break;
    }
    return 0;
}

static int s_start_execute(conn_t *self)
{
    self->action = A_EXECUTE;
    if (!s_bind_params(self))
        return -1;
    return mysql_stmt_execute_start(&self->ret_int, self->stmt);
}

/*  Runs steps until one has to wait (status != 0: park) or the action is over.
    status is what the last *_start / *_cont returned. */
static void s_advance(conn_t *self, int status)
{
    for (;;) {
        if (status != 0) {
            self->wait = status;
            self->wait_until = -1;
            if (status & MYSQL_WAIT_TIMEOUT)
                self->wait_until =
                    clock_now_ms() + (int64_t)mysql_get_timeout_value_ms(self->mysql);
            return;
        }
        self->wait = 0;
        self->wait_until = -1;
        switch (self->action) {
        case A_CONNECT:
            if (!self->ret_mysql) {
                s_fail_mysql(self);
                self->lost = true;
                break;
            }
            self->connected = true;
            self->created_ms = clock_now_ms();
            break;
        case A_PREPARE:
            if (self->ret_int) {
                s_fail_stmt(self);
                mysql_stmt_close(self->stmt);
                self->stmt = NULL;
                break;
            }
            s_cache_add(self, self->sql, self->stmt);
            status = s_start_execute(self);
            if (status < 0)
                break;
            continue;
        case A_EXECUTE:
            if (self->ret_int) {
                s_fail_stmt(self);
                break;
            }
            if (mysql_stmt_field_count(self->stmt) > 0) {
                my_bool yes = 1;
                mysql_stmt_attr_set(self->stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &yes);
                self->action = A_STORE;
                status = mysql_stmt_store_result_start(&self->ret_int, self->stmt);
                continue;
            }
            self->res->affected = mysql_stmt_affected_rows(self->stmt);
            self->res->insert_id = mysql_stmt_insert_id(self->stmt);
            break;
        case A_STORE:
            if (self->ret_int) {
                s_fail_stmt(self);
                break;
            }
            s_fetch_all(self);
            break;
        case A_QUERY:
            if (self->ret_int)
                s_fail_mysql(self);
            break;
        case A_COMMIT:
        case A_ROLLBACK:
            if (self->ret_bool)
                s_fail_mysql(self);
            break;
        case A_PING:
            if (self->ret_int) {
                s_fail_mysql(self);
                self->lost = true;
            }
            break;
        case A_NONE:
            return;
        }
        if (status < 0 && !self->failed)
            s_fail(self, CR_UNKNOWN_ERROR, "could not start statement");
        s_finish(self);
        return;
    }
}

int conn_connect(conn_t *self, conn_done_fn *done, void *arg)
{
    if (s_begin(self, A_CONNECT, done, arg))
        return -1;
    const conn_config_t *c = self->config;
    bool unix_socket = c->socket && *c->socket;
    int status = mysql_real_connect_start(
        &self->ret_mysql, self->mysql, unix_socket ? "localhost" : c->host, c->user, c->password,
        c->database, c->port, unix_socket ? c->socket : NULL, CLIENT_FOUND_ROWS);
    s_advance(self, status);
    return 0;
}

int conn_exec(conn_t *self, const char *sql, const dbparam_t *params, size_t n, dbres_t *res,
              conn_done_fn *done, void *arg)
{
    if (n > CONN_PARAMS_MAX) {
        s_fail(self, CR_COMMANDS_OUT_OF_SYNC, "too many parameters (our bug)");
        return -1;
    }
    if (s_begin(self, A_EXECUTE, done, arg))
        return -1;
    dbres_clear(res);
    self->res = res;
    self->sql = sql;
    self->nparams = n;
    memset(self->pbind, 0, n * sizeof self->pbind[0]);
    for (size_t i = 0; i < n; i++) {
        MYSQL_BIND *b = &self->pbind[i];
        switch (params[i].type) {
        case DBP_NULL:
            b->buffer_type = MYSQL_TYPE_NULL;
            break;
        case DBP_INT:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = (void *)&params[i].i;
            break;
        case DBP_STR:
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = (void *)(params[i].s ? params[i].s : "");
            self->plen[i] = (unsigned long)params[i].len;
            b->buffer_length = self->plen[i];
            b->length = &self->plen[i];
            break;
        case DBP_TIME:
            s_ms_to_time(params[i].i, &self->ptime[i]);
            b->buffer_type = MYSQL_TYPE_DATETIME;
            b->buffer = &self->ptime[i];
            break;
        }
    }
    self->stmt = s_cache_find(self, sql);
    int status;
    if (self->stmt) {
        status = s_start_execute(self);
    } else {
        self->action = A_PREPARE;
        self->stmt = mysql_stmt_init(self->mysql);
        if (!self->stmt) {
            s_fail_mysql(self);
            status = -1;
        } else {
            status = mysql_stmt_prepare_start(&self->ret_int, self->stmt, sql, strlen(sql));
        }
    }
    if (status < 0) {
        /* could not even start: report through done like any failure, so the
           caller has one path for errors */
        if (!self->failed)
            s_fail(self, CR_UNKNOWN_ERROR, "could not start statement");
        s_finish(self);
        return 0;
    }
    s_advance(self, status);
    return 0;
}

int conn_query(conn_t *self, const char *sql, conn_done_fn *done, void *arg)
{
    if (s_begin(self, A_QUERY, done, arg))
        return -1;
    s_advance(self, mysql_real_query_start(&self->ret_int, self->mysql, sql, strlen(sql)));
    return 0;
}

int conn_commit(conn_t *self, conn_done_fn *done, void *arg)
{
    if (s_begin(self, A_COMMIT, done, arg))
        return -1;
    s_advance(self, mysql_commit_start(&self->ret_bool, self->mysql));
    return 0;
}

int conn_rollback(conn_t *self, conn_done_fn *done, void *arg)
{
    if (s_begin(self, A_ROLLBACK, done, arg))
        return -1;
    s_advance(self, mysql_rollback_start(&self->ret_bool, self->mysql));
    return 0;
}

int conn_ping(conn_t *self, conn_done_fn *done, void *arg)
{
    if (s_begin(self, A_PING, done, arg))
        return -1;
    s_advance(self, mysql_ping_start(&self->ret_int, self->mysql));
    return 0;
}

bool conn_wait(const conn_t *self, int *fd, short *events, int64_t *timeout_at_ms)
{
    if (self->action == A_NONE || !self->wait)
        return false;
    *fd = (int)mysql_get_socket(self->mysql);
    *events = 0;
    if (self->wait & MYSQL_WAIT_READ)
        *events |= ZMQ_POLLIN;
    if (self->wait & MYSQL_WAIT_WRITE)
        *events |= ZMQ_POLLOUT;
    if (self->wait & MYSQL_WAIT_EXCEPT)
        *events |= ZMQ_POLLERR;
    *timeout_at_ms = self->wait_until;
    return true;
}

void conn_io(conn_t *self, short revents)
{
    if (self->action == A_NONE || !self->wait)
        return;
    int ready = 0;
    if (revents & ZMQ_POLLIN)
        ready |= MYSQL_WAIT_READ;
    if (revents & ZMQ_POLLOUT)
        ready |= MYSQL_WAIT_WRITE;
    if (revents & ZMQ_POLLERR)
        ready |= MYSQL_WAIT_EXCEPT | MYSQL_WAIT_READ;
    if (!ready) {
        if (self->wait_until < 0 || clock_now_ms() < self->wait_until)
            return;
        ready = MYSQL_WAIT_TIMEOUT;
    }
    s_advance(self, s_cont(self, ready));
}

void conn_abort(conn_t *self)
{
    if (self->action == A_NONE || !self->connected)
        return;
    s_fail(self, CONN_ERR_ABORTED, "aborted: the request's deadline passed");
    /* the pending read or write now fails at once; the library reports 2013 */
    my_socket fd = mysql_get_socket(self->mysql);
    if (fd != INVALID_SOCKET)
        shutdown(fd, SHUT_RDWR);
}
