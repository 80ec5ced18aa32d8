/*  pool.h - the DB worker's connection pool: QueuePool's semantics and more.

    - pool_size connections kept open (opened at start, replaced when lost, with
      exponential backoff while the server does not answer); up to max_overflow
      more opened under load and closed as soon as they come back idle.
    - LIFO reuse: the most recently returned connection is handed out first, so
      the others age out and the hot one stays warm.
    - recycle_s: a connection older than this is closed when it comes back or is
      found idle, and replaced.
    - pre-ping: a connection idle for longer than ping_after_idle_ms is pinged
      before it is handed out; a failed ping discards it (counted invalid).
    - reset on return: a connection that comes back inside a transaction is rolled
      back before anyone else gets it.
    - lost connections (server gone, killed, restarted) are discarded, never
      reconnected in place (no MYSQL_OPT_RECONNECT).
    - capacity: how many requests the pool can serve at once right now; the worker
      advertises it to the broker as credit, so requests wait in the broker.
    Every connection is driven by the process's one loop (pool_poll / pool_io).
*/
#ifndef SLUICE_DB_POOL_H
#define SLUICE_DB_POOL_H

#include "conn.h"

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    conn_config_t conn;
    int pool_size;
    int max_overflow;
    int64_t recycle_s;          /* 0: never */
    int64_t ping_after_idle_ms; /* <0: never; 0: before every use */
    int64_t backoff_max_ms;     /* cap of the reconnect backoff */
} pool_config_t;

typedef struct pool_t pool_t;

/* Someone waiting for a connection; embedded in the waiter's own struct. */
typedef struct pool_waiter_t pool_waiter_t;
typedef void(pool_ready_fn)(pool_waiter_t *waiter, conn_t *conn);
struct pool_waiter_t {
    pool_ready_fn *ready; /* called once: a connection, or NULL when the server is down */
    void *arg;
    bool verify;  /* ping the connection first whatever its idle time (a retry's) */
    void *handle; /* private: position in the waiting queue */
};

pool_t *pool_new(const pool_config_t *config);
/* Closes every connection (in-use ones too); waiters are forgotten. */
void pool_destroy(pool_t **self_p);

/* Opens the first pool_size connections (asynchronously). */
void pool_start(pool_t *self);

/*  Asks for a connection: waiter->ready runs when one is ready, perhaps before
    this returns. Requests are served in arrival order. While the server is
    unreachable (a connect attempt failed) ready gets NULL at once, and so do the
    waiters when a connect attempt fails: answer them 503, do not wait. */
void pool_checkout(pool_t *self, pool_waiter_t *waiter);
/* Withdraws a waiter that has not been served; ready is not called. */
void pool_cancel(pool_t *self, pool_waiter_t *waiter);
/*  Gives a connection back. discard: it is lost or in an unknown state; it is
    closed (counted invalid when lost) and replaced. */
void pool_return(pool_t *self, conn_t *conn, bool discard);

/*  Stops the statement under way on conn (checked out) at the server: KILL QUERY
    from a connection of the pool's own, opened for it and closed when no kill is
    left. The statement then ends with ER_QUERY_INTERRUPTED (rolled back), or with
    its result if it had finished first: its outcome is known either way, which
    conn_abort cannot tell for a statement in autocommit. conn is closed (and
    replaced) when it comes back, so a late kill cannot hit its next statement. */
void pool_kill_query(pool_t *self, conn_t *conn);

/*  Changes pool_size, max_overflow, recycle_s and ping_after_idle_ms at run time
    (the connection settings and backoff of limits are ignored). Growing opens the
    new connections at once; shrinking closes idle ones beyond the new pool_size at
    the next pool_tick and checked-out ones when they come back, never one in use.
    pool_capacity follows at once. -1 (nothing changed) when pool_size < 1 or
    max_overflow < 0, or out of memory. */
int pool_resize(pool_t *self, const pool_config_t *limits);

/* Requests the pool can serve at once now (0 while the server is unreachable and
   nothing is open). */
uint32_t pool_capacity(const pool_t *self);
size_t pool_waiting(const pool_t *self);
bool pool_server_up(const pool_t *self);

/* Loop glue: appends a poll item per waiting connection (owners[i] is its conn),
   returns how many; *timeout_ms is lowered to the nearest deadline. */
size_t pool_poll(pool_t *self, zmq_pollitem_t *items, conn_t **owners, size_t max,
                 int64_t *timeout_ms);
/* A poll result for conn (revents 0: check its timeout). */
void pool_io(pool_t *self, conn_t *conn, short revents);
/* Timeouts of waiting connections, idle recycling, reconnect backoff; frees
   discarded connections (never inside their own callbacks). */
void pool_tick(pool_t *self);
/* Connections currently in any state; 0 means pool_destroy has nothing to wait for. */
size_t pool_open_count(const pool_t *self);

/* The status map's pool fields (inside a map the caller opened: 10 pairs). */
#define POOL_STATUS_PAIRS 10
void pool_status(const pool_t *self, msgpack_packer *pk);

#endif
