/*  pool.c - the connection pool. See pool.h for the semantics. */
#include "pool.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"

#include <mysqld_error.h>
#include <stdlib.h>
#include <string.h>

#define S_BACKOFF_START_MS 100
#define S_KILLS_MAX 64

typedef enum {
    S_CONNECTING, /* connect and session setup under way */
    S_IDLE,       /* on the idle stack */
    S_PINGING,    /* pre-ping before it is handed out */
    S_USED,       /* checked out */
    S_RESETTING,  /* rolling back after it came back inside a transaction */
} s_state_t;

typedef struct {
    pool_t *pool;
    conn_t *conn;
    s_state_t state;
    int64_t idle_since_ms;
    dbparam_t setup_param; /* the session setup statement's parameter */
    dbres_t res;
    bool killed; /* a KILL QUERY was sent for its statement: closed when it comes back */
} s_slot_t;

/* The connection that sends KILL QUERY (pool_kill_query): opened when a kill is
   wanted, closed when none is left, so it never idles against wait_timeout. */
typedef struct {
    conn_t *conn;
    bool ready;                       /* connected */
    unsigned long queue[S_KILLS_MAX]; /* server thread ids still to kill */
    size_t queued;
    dbparam_t param;
    dbres_t res;
    conn_t *dead; /* closed in pool_tick, not in its own callback */
} s_killer_t;

struct pool_t {
    pool_config_t config;
    size_t max;       /* pool_size + max_overflow: connections open at most */
    size_t cap;       /* entries of slots and idle: the largest max so far (pool_resize) */
    s_slot_t **slots; /* cap entries, NULL when free; more than max are in use only
                         for a while after a shrink, until they come back */
    size_t *idle;     /* slot indexes; the top is the most recently returned */
    size_t idle_count;
    zlistx_t *waiters; /* pool_waiter_t*, oldest first */
    zlistx_t *dead;    /* s_slot_t* closed, freed in pool_tick */
    uint64_t next_id;

    bool server_up; /* the last connect attempt succeeded */
    bool started;
    int64_t backoff_ms;      /* current reconnect backoff */
    int64_t next_connect_ms; /* no connect attempt before this while the server is down */
    size_t replace_pending;  /* discarded connections not yet replaced */
    bool dispatching, redispatch;

    s_killer_t killer;

    uint64_t invalid;        /* connections discarded as lost or broken */
    uint64_t reconnects;     /* connections opened to replace discarded ones */
    uint64_t connect_errors; /* failed connect attempts */
};

static void s_dispatch(pool_t *self);
static void s_fill(pool_t *self);

pool_t *pool_new(const pool_config_t *config)
{
    if (config->pool_size < 1 || config->max_overflow < 0)
        return NULL;
    pool_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->max = (size_t)config->pool_size + (size_t)config->max_overflow;
    self->cap = self->max;
    self->slots = calloc(self->cap, sizeof *self->slots);
    self->idle = calloc(self->cap, sizeof *self->idle);
    self->waiters = zlistx_new();
    self->dead = zlistx_new();
    self->server_up = true; /* until a connect says otherwise */
    self->backoff_ms = S_BACKOFF_START_MS;
    if (!self->slots || !self->idle || !self->waiters || !self->dead) {
        pool_destroy(&self);
        return NULL;
    }
    return self;
}

static void s_slot_free(s_slot_t **slot_p)
{
    s_slot_t *slot = *slot_p;
    if (!slot)
        return;
    conn_destroy(&slot->conn);
    dbres_clear(&slot->res);
    free(slot);
    *slot_p = NULL;
}

void pool_destroy(pool_t **self_p)
{
    pool_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; self->slots && i < self->cap; i++)
        s_slot_free(&self->slots[i]);
    if (self->dead) {
        for (s_slot_t *s = zlistx_first(self->dead); s; s = zlistx_next(self->dead))
            s_slot_free(&s);
        zlistx_destroy(&self->dead);
    }
    conn_destroy(&self->killer.conn);
    conn_destroy(&self->killer.dead);
    dbres_clear(&self->killer.res);
    zlistx_destroy(&self->waiters);
    free(self->slots);
    free(self->idle);
    free(self);
    *self_p = NULL;
}

static ssize_t s_index_of(const pool_t *self, const conn_t *conn)
{
    for (size_t i = 0; i < self->cap; i++)
        if (self->slots[i] && self->slots[i]->conn == conn)
            return (ssize_t)i;
    return -1;
}

static size_t s_open(const pool_t *self)
{
    size_t n = 0;
    for (size_t i = 0; i < self->cap; i++)
        n += self->slots[i] != NULL;
    return n;
}

static size_t s_count(const pool_t *self, s_state_t state)
{
    size_t n = 0;
    for (size_t i = 0; i < self->cap; i++)
        n += self->slots[i] && self->slots[i]->state == state;
    return n;
}

static void s_idle_remove(pool_t *self, size_t index)
{
    for (size_t i = 0; i < self->idle_count; i++) {
        if (self->idle[i] == index) {
            memmove(&self->idle[i], &self->idle[i + 1],
                    (self->idle_count - i - 1) * sizeof self->idle[0]);
            self->idle_count--;
            return;
        }
    }
}

/*  Takes the slot out of the pool; its memory is freed in pool_tick, because this
    may run inside the connection's own callback. lost: counted invalid and
    replaced. */
static void s_close(pool_t *self, size_t index, bool lost, const char *reason)
{
    s_slot_t *slot = self->slots[index];
    if (slot->state == S_IDLE)
        s_idle_remove(self, index);
    self->slots[index] = NULL;
    if (lost) {
        self->invalid++;
        self->replace_pending++;
        slog_warn("db: pool: connection %" PRIu64 " discarded: %s", conn_id(slot->conn), reason);
    } else {
        slog_debug("db: pool: connection %" PRIu64 " closed: %s", conn_id(slot->conn), reason);
    }
    zlistx_add_end(self->dead, slot);
}

/* A healthy connection closed for a reason of ours (recycled, its statement
   killed): it is replaced, without counting as invalid. */
static void s_retire(pool_t *self, size_t index, const char *reason)
{
    s_close(self, index, false, reason);
    self->replace_pending++;
}

static void s_on_setup(conn_t *conn, void *arg);

/*  The server cannot be reached: nobody waiting can be served before a probe
    succeeds, after the backoff (up to backoff_max_ms). They are told now (ready
    with NULL), so their clients get a fast 503 instead of a 504 at their deadline
    (issue 7: no waiting on a database that is down). */
static void s_fail_waiters(pool_t *self)
{
    pool_waiter_t *w;
    while ((w = zlistx_first(self->waiters))) {
        zlistx_delete(self->waiters, w->handle);
        w->handle = NULL;
        w->ready(w, NULL);
    }
}

static void s_on_connect(conn_t *conn, void *arg)
{
    s_slot_t *slot = arg;
    pool_t *self = slot->pool;
    ssize_t index = s_index_of(self, conn);
    if (index < 0)
        return;
    if (conn_failed(conn)) {
        self->connect_errors++;
        if (self->server_up)
            slog_warn("db: pool: cannot connect to the database: %s (%u); retrying with backoff",
                      conn_error(conn), conn_errno(conn));
        self->server_up = false;
        self->next_connect_ms = clock_now_ms() + self->backoff_ms;
        self->backoff_ms *= 2;
        if (self->backoff_ms > self->config.backoff_max_ms)
            self->backoff_ms = self->config.backoff_max_ms;
        self->slots[index] = NULL;
        zlistx_add_end(self->dead, slot);
        s_fail_waiters(self); /* last: their replies may check out or return */
        return;
    }
    if (!self->server_up)
        slog_info("db: pool: database reachable again");
    self->server_up = true;
    self->backoff_ms = S_BACKOFF_START_MS;
    if (self->replace_pending) {
        self->replace_pending--;
        self->reconnects++;
    }
    if (self->config.conn.lock_wait_timeout_s > 0) {
        /* The session's lock-wait bound, so an op blocked by another session's
           lock fails with 1205 in bounded time instead of holding on for 50 s. */
        slot->setup_param = P_INT(self->config.conn.lock_wait_timeout_s);
        if (conn_exec(conn, DB_SQL("SET SESSION innodb_lock_wait_timeout = ?"), &slot->setup_param,
                      1, &slot->res, s_on_setup, slot) != 0) {
            s_close(self, (size_t)index, true, conn_error(conn));
            s_fill(self);
        }
        return;
    }
    s_on_setup(conn, slot);
}

/* A connection that is ready for use: to the oldest waiter, else onto the idle stack. */
static void s_ready(pool_t *self, size_t index)
{
    s_slot_t *slot = self->slots[index];
    if (zlistx_size(self->waiters) > 0) {
        pool_waiter_t *w = zlistx_first(self->waiters);
        zlistx_delete(self->waiters, w->handle);
        w->handle = NULL;
        slot->state = S_USED;
        w->ready(w, slot->conn);
        return;
    }
    if (s_open(self) > (size_t)self->config.pool_size) {
        s_close(self, index, false, "overflow connection returned idle");
        return;
    }
    slot->state = S_IDLE;
    slot->idle_since_ms = clock_now_ms();
    self->idle[self->idle_count++] = index;
}

static void s_on_setup(conn_t *conn, void *arg)
{
    s_slot_t *slot = arg;
    pool_t *self = slot->pool;
    ssize_t index = s_index_of(self, conn);
    if (index < 0)
        return;
    dbres_clear(&slot->res);
    if (conn_failed(conn)) {
        s_close(self, (size_t)index, true, conn_error(conn));
        s_fill(self);
        return;
    }
    s_ready(self, (size_t)index);
    s_dispatch(self);
}

/* Opens connections while fewer are open than wanted: pool_size, or as many as are
   in use plus waiting (up to the maximum). While the server is down, one probe at
   a time, after the backoff. */
static void s_fill(pool_t *self)
{
    if (!self->started)
        return;
    int64_t now = clock_now_ms();
    for (;;) {
        size_t open = s_open(self);
        /* connections connecting or being pinged will serve the waiters */
        size_t coming = s_count(self, S_CONNECTING) + s_count(self, S_PINGING);
        bool wanted = open < (size_t)self->config.pool_size ||
                      zlistx_size(self->waiters) > coming + self->idle_count;
        if (open >= self->max || !wanted)
            return;
        if (!self->server_up && (now < self->next_connect_ms || s_count(self, S_CONNECTING)))
            return;
        size_t index = 0;
        while (index < self->cap && self->slots[index])
            index++;
        if (index == self->cap)
            return;
        s_slot_t *slot = calloc(1, sizeof *slot);
        if (!slot)
            return;
        slot->pool = self;
        slot->state = S_CONNECTING;
        slot->conn = conn_new(&self->config.conn, ++self->next_id);
        if (!slot->conn) {
            free(slot);
            return;
        }
        self->slots[index] = slot;
        if (!self->server_up)
            self->next_connect_ms = now + self->backoff_ms; /* one probe per backoff */
        if (conn_connect(slot->conn, s_on_connect, slot) != 0) {
            self->slots[index] = NULL;
            zlistx_add_end(self->dead, slot);
            return;
        }
    }
}

void pool_start(pool_t *self)
{
    self->started = true;
    s_fill(self);
}

static void s_on_ping(conn_t *conn, void *arg)
{
    s_slot_t *slot = arg;
    pool_t *self = slot->pool;
    ssize_t index = s_index_of(self, conn);
    if (index < 0)
        return;
    if (conn_failed(conn)) {
        s_close(self, (size_t)index, true, conn_error(conn));
        s_fill(self);
    } else {
        s_ready(self, (size_t)index);
    }
    s_dispatch(self);
}

/* Hands idle connections to waiters, oldest waiter first, newest connection first. */
static void s_dispatch(pool_t *self)
{
    if (self->dispatching) {
        self->redispatch = true; /* a ready callback re-entered: the outer loop goes on */
        return;
    }
    self->dispatching = true;
    do {
        self->redispatch = false;
        int64_t now = clock_now_ms();
        while (zlistx_size(self->waiters) > 0 && self->idle_count > 0) {
            size_t index = self->idle[--self->idle_count];
            s_slot_t *slot = self->slots[index];
            if (self->config.recycle_s > 0 &&
                now - conn_created_ms(slot->conn) >= self->config.recycle_s * 1000) {
                slot->state = S_USED; /* off the idle stack already */
                s_retire(self, index, "recycled (older than recycle_s)");
                continue;
            }
            pool_waiter_t *first = zlistx_first(self->waiters);
            if (first->verify || (self->config.ping_after_idle_ms >= 0 &&
                                  now - slot->idle_since_ms >= self->config.ping_after_idle_ms)) {
                first->verify = false; /* the ping's connection goes to the oldest waiter */
                slot->state = S_PINGING;
                if (conn_ping(slot->conn, s_on_ping, slot) != 0)
                    s_close(self, index, true, conn_error(slot->conn));
                continue;
            }
            pool_waiter_t *w = zlistx_first(self->waiters);
            zlistx_delete(self->waiters, w->handle);
            w->handle = NULL;
            slot->state = S_USED;
            w->ready(w, slot->conn);
        }
        s_fill(self);
    } while (self->redispatch);
    self->dispatching = false;
}

void pool_checkout(pool_t *self, pool_waiter_t *waiter)
{
    if (!self->server_up && self->idle_count == 0) {
        waiter->handle = NULL;
        waiter->ready(waiter, NULL); /* down, nothing open: refused at once */
        return;
    }
    waiter->handle = zlistx_add_end(self->waiters, waiter);
    s_dispatch(self);
}

void pool_cancel(pool_t *self, pool_waiter_t *waiter)
{
    if (waiter->handle) {
        zlistx_delete(self->waiters, waiter->handle);
        waiter->handle = NULL;
    }
}

static void s_on_reset(conn_t *conn, void *arg)
{
    s_slot_t *slot = arg;
    pool_t *self = slot->pool;
    ssize_t index = s_index_of(self, conn);
    if (index < 0)
        return;
    if (conn_failed(conn)) {
        s_close(self, (size_t)index, true, conn_error(conn));
        s_fill(self);
    } else {
        s_ready(self, (size_t)index);
    }
    s_dispatch(self);
}

void pool_return(pool_t *self, conn_t *conn, bool discard)
{
    ssize_t found = s_index_of(self, conn);
    if (found < 0)
        return;
    size_t index = (size_t)found;
    s_slot_t *slot = self->slots[index];
    if (discard || conn_lost(conn)) {
        s_close(self, index, true,
                conn_failed(conn) ? conn_error(conn) : "returned in an unknown state");
        s_dispatch(self);
        return;
    }
    if (slot->killed) {
        s_retire(self, index, "its statement was killed at its deadline");
        s_dispatch(self);
        return;
    }
    if (self->config.recycle_s > 0 &&
        clock_now_ms() - conn_created_ms(conn) >= self->config.recycle_s * 1000) {
        s_retire(self, index, "recycled (older than recycle_s)");
        s_dispatch(self);
        return;
    }
    if (conn_in_transaction(conn)) {
        /* reset on return: whatever the op left open is rolled back first */
        slot->state = S_RESETTING;
        if (conn_rollback(conn, s_on_reset, slot) != 0) {
            s_close(self, index, true, conn_error(conn));
            s_dispatch(self);
        }
        return;
    }
    s_ready(self, index);
    s_dispatch(self);
}

int pool_resize(pool_t *self, const pool_config_t *limits)
{
    if (limits->pool_size < 1 || limits->max_overflow < 0)
        return -1;
    size_t max = (size_t)limits->pool_size + (size_t)limits->max_overflow;
    if (max > self->cap) {
        /* slot indexes stay as they are (the idle stack holds them), so the arrays
           only grow; the new tail is free */
        s_slot_t **slots = realloc(self->slots, max * sizeof *slots);
        if (!slots)
            return -1;
        self->slots = slots;
        memset(slots + self->cap, 0, (max - self->cap) * sizeof *slots);
        size_t *idle = realloc(self->idle, max * sizeof *idle);
        if (!idle)
            return -1; /* slots is larger than needed, which is harmless */
        self->idle = idle;
        self->cap = max;
    }
    self->max = max;
    self->config.pool_size = limits->pool_size;
    self->config.max_overflow = limits->max_overflow;
    self->config.recycle_s = limits->recycle_s;
    self->config.ping_after_idle_ms = limits->ping_after_idle_ms;
    /* Growing opens up to pool_size now (s_fill). Shrinking closes idle connections
       beyond pool_size in pool_tick, and checked-out ones as they come back (s_ready):
       never one in use. Waiters beyond the new max keep their place; the credit
       (pool_capacity) already says max. */
    s_dispatch(self);
    return 0;
}

uint32_t pool_capacity(const pool_t *self)
{
    if (self->server_up)
        return (uint32_t)self->max;
    size_t n = 0;
    for (size_t i = 0; i < self->cap; i++)
        n += self->slots[i] && self->slots[i]->state != S_CONNECTING;
    return (uint32_t)n;
}

size_t pool_waiting(const pool_t *self)
{
    return zlistx_size(self->waiters);
}

bool pool_server_up(const pool_t *self)
{
    return self->server_up;
}

size_t pool_open_count(const pool_t *self)
{
    return s_open(self);
}

/* ---- KILL QUERY from a connection of its own ---- */

static void s_killer_next(pool_t *self);

static void s_killer_close(pool_t *self, const char *why)
{
    s_killer_t *k = &self->killer;
    if (why && k->queued)
        slog_warn("db: pool: cannot kill %zu statement(s) past their deadline: %s; they end "
                  "by lock_wait_timeout_s or read_timeout_s",
                  k->queued, why);
    conn_destroy(&k->dead); /* a previous one, long out of its callback */
    k->dead = k->conn;
    k->conn = NULL;
    k->ready = false;
    k->queued = 0;
}

static void s_on_killed(conn_t *conn, void *arg)
{
    pool_t *self = arg;
    dbres_clear(&self->killer.res);
    if (conn_lost(conn)) {
        s_killer_close(self, conn_error(conn));
        return;
    }
    /* unknown thread: the statement and its connection were gone already */
    if (conn_failed(conn) && conn_errno(conn) != ER_NO_SUCH_THREAD)
        slog_warn("db: pool: KILL QUERY failed: %s (%u)", conn_error(conn), conn_errno(conn));
    s_killer_next(self);
}

static void s_on_killer_connect(conn_t *conn, void *arg)
{
    pool_t *self = arg;
    if (conn_failed(conn)) {
        s_killer_close(self, conn_error(conn));
        return;
    }
    self->killer.ready = true;
    s_killer_next(self);
}

static void s_killer_next(pool_t *self)
{
    s_killer_t *k = &self->killer;
    if (k->conn && (!k->ready || conn_busy(k->conn)))
        return; /* connecting, or a kill under way: it comes back here */
    if (k->queued == 0) {
        if (k->conn)
            s_killer_close(self, NULL);
        return;
    }
    if (!k->conn) {
        k->conn = conn_new(&self->config.conn, ++self->next_id);
        if (!k->conn || conn_connect(k->conn, s_on_killer_connect, self) != 0)
            s_killer_close(self, k->conn ? conn_error(k->conn) : "out of memory");
        return;
    }
    k->param = P_INT(k->queue[0]);
    memmove(&k->queue[0], &k->queue[1], (k->queued - 1) * sizeof k->queue[0]);
    k->queued--;
    if (conn_exec(k->conn, DB_SQL("KILL QUERY ?"), &k->param, 1, &k->res, s_on_killed, self) != 0)
        s_killer_close(self, conn_error(k->conn));
}

void pool_kill_query(pool_t *self, conn_t *conn)
{
    ssize_t index = s_index_of(self, conn);
    if (index < 0 || self->slots[index]->killed || !conn_busy(conn))
        return;
    s_killer_t *k = &self->killer;
    if (k->queued == S_KILLS_MAX) {
        slog_warn("db: pool: too many kills at once; connection %" PRIu64 " is left to its "
                  "timeouts",
                  conn_id(conn));
        return;
    }
    self->slots[index]->killed = true;
    k->queue[k->queued++] = conn_thread_id(conn);
    slog_info("db: pool: connection %" PRIu64 ": killing its statement (past its deadline)",
              conn_id(conn));
    s_killer_next(self);
}

/* Appends conn's poll item (when it waits for something) and lowers *timeout_ms
   to its timeout. */
static void s_poll_conn(conn_t *conn, zmq_pollitem_t *items, conn_t **owners, size_t *n,
                        int64_t now, int64_t *timeout_ms)
{
    int fd;
    short events;
    int64_t until;
    if (!conn || !conn_wait(conn, &fd, &events, &until))
        return;
    items[*n] = (zmq_pollitem_t){.socket = NULL, .fd = fd, .events = events};
    owners[*n] = conn;
    (*n)++;
    if (until >= 0) {
        int64_t left = until > now ? until - now : 0;
        if (left < *timeout_ms)
            *timeout_ms = left;
    }
}

/* Feeds conn its timeout when that has passed. */
static void s_check_timeout(conn_t *conn, int64_t now)
{
    int fd;
    short events;
    int64_t until;
    if (conn && conn_wait(conn, &fd, &events, &until) && until >= 0 && now >= until)
        conn_io(conn, 0);
}

size_t pool_poll(pool_t *self, zmq_pollitem_t *items, conn_t **owners, size_t max,
                 int64_t *timeout_ms)
{
    size_t n = 0;
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < self->cap && n < max; i++)
        if (self->slots[i])
            s_poll_conn(self->slots[i]->conn, items, owners, &n, now, timeout_ms);
    if (n < max)
        s_poll_conn(self->killer.conn, items, owners, &n, now, timeout_ms);
    if (!self->server_up && s_open(self) < (size_t)self->config.pool_size) {
        int64_t left = self->next_connect_ms > now ? self->next_connect_ms - now : 0;
        if (left < *timeout_ms)
            *timeout_ms = left;
    }
    return n;
}

void pool_io(pool_t *self, conn_t *conn, short revents)
{
    /* only connections still in the pool: a discarded one waits in the dead list */
    if (s_index_of(self, conn) >= 0 || (conn && conn == self->killer.conn))
        conn_io(conn, revents);
}

void pool_tick(pool_t *self)
{
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < self->cap; i++)
        if (self->slots[i])
            s_check_timeout(self->slots[i]->conn, now);
    s_check_timeout(self->killer.conn, now);
    conn_destroy(&self->killer.dead);
    /* idle connections past recycle_s are replaced while nobody needs them, and
       overflow ones are closed */
    for (size_t k = self->idle_count; k-- > 0;) {
        if (k >= self->idle_count)
            continue;
        size_t index = self->idle[k];
        s_slot_t *slot = self->slots[index];
        if (self->config.recycle_s > 0 &&
            now - conn_created_ms(slot->conn) >= self->config.recycle_s * 1000) {
            s_retire(self, index, "recycled (older than recycle_s)");
        } else if (s_open(self) > (size_t)self->config.pool_size) {
            s_close(self, index, false, "overflow connection idle");
        }
    }
    s_dispatch(self);
    for (s_slot_t *s = zlistx_first(self->dead); s; s = zlistx_next(self->dead))
        s_slot_free(&s);
    zlistx_purge(self->dead);
}

void pool_status(const pool_t *self, msgpack_packer *pk)
{
    size_t open = s_open(self);
    mp_pack_kv_int(pk, "pool_size", self->config.pool_size);
    mp_pack_kv_int(pk, "max_overflow", self->config.max_overflow);
    mp_pack_kv_int(pk, "checked_out", (int64_t)s_count(self, S_USED));
    mp_pack_kv_int(pk, "overflow",
                   open > (size_t)self->config.pool_size
                       ? (int64_t)(open - (size_t)self->config.pool_size)
                       : 0);
    mp_pack_kv_int(pk, "idle", (int64_t)self->idle_count);
    mp_pack_kv_int(pk, "invalid", (int64_t)self->invalid);
    mp_pack_kv_int(pk, "waiting", (int64_t)zlistx_size(self->waiters));
    mp_pack_kv_int(pk, "reconnects", (int64_t)self->reconnects);
    mp_pack_kv_int(pk, "connect_errors", (int64_t)self->connect_errors);
    mp_pack_kv_int(pk, "open", (int64_t)open);
}
