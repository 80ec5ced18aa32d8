/*  sluice-dbworker: the only process that owns MariaDB connections.

    One thread runs one loop (zmq_poll) over: the DEALER to each broker, the hash
    thread's pipe, every pooled connection's socket (with the events and timeout
    Connector/C's non-blocking API asked for), and a signalfd. Ops arrive as SMP
    REQUESTs, each runs on one pooled connection, and the connection is back in
    the pool before the REPLY leaves. The credit advertised to the brokers is what
    the pool can take now (plus the ops hashing a password, which hold no
    connection: s_credit), so requests wait in the broker, never here.

    SIGTERM/SIGINT: credit 0 (no new work), in-flight ops finish and reply,
    DISCONNECT to every broker, connections closed, exit 0.

    SIGHUP: the settings are read again (config file, environment, flags) and
    pool_size, max_overflow, recycle_s, ping_after_idle_ms and log_level applied
    without dropping a connection (s_reload); the others need a restart.
*/
#include "clock.h"
#include "config.h"
#include "curve.h"
#include "events.h"
#include "hash_worker.h"
#include "migrate.h"
#include "mp.h"
#include "ops.h"
#include "pool.h"
#include "slog.h"
#include "smp.h"
#include "worker.h"

#include <czmq.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <sys/signalfd.h>
#include <unistd.h>

#ifndef SLUICE_DB_MIGRATIONS_DIR
#define SLUICE_DB_MIGRATIONS_DIR "workers/db/migrations"
#endif

#define S_LINKS_MAX 16
#define S_POLL_MAX 1100
#define S_TICK_MS 100

static const config_option_t s_options[] = {
    {"service", CONFIG_STR, "db", "service name announced to the brokers"},
    {"backend", CONFIG_STR, "tcp://127.0.0.1:5551",
     "brokers' backend endpoints, comma-separated (one DEALER each)"},
    {"events_in", CONFIG_STR, "tcp://127.0.0.1:5552",
     "brokers' events-in endpoints, comma-separated (events are published to each)"},
    {"worker_name", CONFIG_STR, NULL, "name in status and logs; empty: db-<host>-<pid>"},
    {"db_host", CONFIG_STR, "127.0.0.1", "MariaDB host"},
    {"db_port", CONFIG_INT, "3307", "MariaDB TCP port"},
    {"db_socket", CONFIG_STR, NULL,
     "MariaDB unix socket path (used instead of host:port when set)"},
    {"db_user", CONFIG_STR, "sluice", "MariaDB user"},
    {"db_password", CONFIG_STR, "sluice", "MariaDB password (better: SLUICE_DB_PASSWORD)"},
    {"db_name", CONFIG_STR, "sluice", "database"},
    {"pool_size", CONFIG_INT, "10", "connections kept open"},
    {"max_overflow", CONFIG_INT, "5", "extra connections opened under load, closed when idle"},
    {"recycle_s", CONFIG_INT, "3600",
     "replace a connection older than this (0: never); keep it below the server's wait_timeout"},
    {"ping_after_idle_ms", CONFIG_INT, "10000",
     "ping a connection idle for longer than this before use (0: always, -1: never)"},
    {"connect_timeout_s", CONFIG_INT, "5", "connect timeout"},
    {"read_timeout_s", CONFIG_INT, "30", "a statement's reply must start within this"},
    {"write_timeout_s", CONFIG_INT, "30", "sending a statement must finish within this"},
    {"lock_wait_timeout_s", CONFIG_INT, "10",
     "innodb_lock_wait_timeout of every connection (0: the server's)"},
    {"reconnect_backoff_max_ms", CONFIG_INT, "5000",
     "longest wait between connect attempts while the server is down"},
    {"migrations_dir", CONFIG_STR, SLUICE_DB_MIGRATIONS_DIR, "folder of NNN_name.sql migrations"},
    {"migrate", CONFIG_BOOL, "true", "apply migrations at start"},
    {"startup_wait_s", CONFIG_INT, "60", "how long to wait for the database at start"},
    {"argon2_opslimit", CONFIG_INT, "2", "Argon2id passes (crypto_pwhash opslimit)"},
    {"argon2_memlimit_kib", CONFIG_INT, "65536", "Argon2id memory in KiB"},
    {"hash_queue_max", CONFIG_INT, "8",
     "password hashes (logins, sign-ups) held at once, waiting or computing; more get 503"},
    {"hash_nice", CONFIG_INT, "10",
     "nice value of the hash thread (0-19): other work gets the CPU before password hashing"},
    {"max_item_bytes", CONFIG_INT, "1048576", "largest clipboard item or chat message (413 above)"},
    {"shutdown_timeout_s", CONFIG_INT, "30", "on SIGTERM, the longest wait for in-flight ops"},
    CURVE_CLIENT_OPTIONS,
    {NULL, 0, NULL, NULL},
};

/* What a SIGHUP applies; every other setting needs a restart. */
static const char *s_reloadable[] = {"pool_size",          "max_overflow", "recycle_s",
                                     "ping_after_idle_ms", "log_level",    NULL};

typedef struct {
    const config_t *config; /* as started: the pool's connection settings point into it */
    config_t *applied;      /* the last configuration a SIGHUP applied; NULL: config */
    char name[128];
    pool_t *pool;
    hash_worker_t *hash;
    ops_t *ops;
    worker_t *worker;
    int sigfd;
    bool stopping;
    const curve_t *curve; /* the keys in use; a new pair needs a restart */
} s_ctx_t;

/* Splits a comma-separated list into out (pointers into the copy *buf). */
static size_t s_split(const char *list, char **buf, const char **out, size_t max)
{
    *buf = strdup(list ? list : "");
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(*buf, ", ", &save); tok && n < max; tok = strtok_r(NULL, ", ", &save))
        out[n++] = tok;
    return n;
}

/* A stop signal arrived (during the startup wait). A SIGHUP stays pending: the
   loop reloads once it runs. */
static bool s_signalled(void *arg)
{
    (void)arg;
    sigset_t pending;
    if (sigpending(&pending) != 0)
        return false;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

/*  The credit advertised to the brokers: what the pool can take now, plus the ops
    in their hash stage. Those hold no connection (they gave it back before
    hashing) and wait in the hash worker's own bounded queue, so they must not
    hold `db` credit either: otherwise a login flood takes every credit while it
    waits for the hash thread, and every other request queues behind it in the
    broker (issue 16). Adding them back keeps the credit left at the broker
    (total - requests held) equal to what the pool can take. A worker whose
    database is unreachable advertises 0 whatever it is hashing. */
static uint32_t s_credit(const s_ctx_t *ctx)
{
    uint32_t capacity = pool_capacity(ctx->pool);
    return capacity ? capacity + (uint32_t)ops_hashing(ctx->ops) : 0;
}

/* The pool limits of fresh, checked then applied (config_reload_apply's apply). */
static int s_apply_pool(void *arg, const config_t *fresh, char *why, size_t why_size)
{
    s_ctx_t *ctx = arg;
    int64_t size = config_int(fresh, "pool_size"), overflow = config_int(fresh, "max_overflow");
    int64_t recycle_s = config_int(fresh, "recycle_s");
    if (size < 1 || overflow < 0 || size + overflow > 1000 || recycle_s < 0) {
        snprintf(why, why_size,
                 "pool_size must be >= 1, max_overflow >= 0, their sum at most 1000 and "
                 "recycle_s >= 0 (got %" PRId64 ", %" PRId64 ", %" PRId64 ")",
                 size, overflow, recycle_s);
        return -1;
    }
    pool_config_t limits = {
        .pool_size = (int)size,
        .max_overflow = (int)overflow,
        .recycle_s = recycle_s,
        .ping_after_idle_ms = config_int(fresh, "ping_after_idle_ms"),
    };
    if (pool_resize(ctx->pool, &limits) != 0) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    worker_set_credit(ctx->worker, s_credit(ctx)); /* the brokers know at once */
    return 0;
}

/*  SIGHUP. The whole new configuration is checked before anything is applied, so a
    bad one changes nothing; one line says what changed, what needs a restart, or
    why the reload was rejected (config_reload_apply). */
static void s_reload(s_ctx_t *ctx)
{
    config_t *fresh = NULL;
    if (config_reload_apply(ctx->config, ctx->applied ? ctx->applied : ctx->config,
                            "db: ", s_reloadable, s_apply_pool, ctx, &fresh) != 0)
        return;
    curve_reload_note(ctx->curve, config_str(fresh, "curve_cert"),
                      config_str(fresh, "curve_broker_cert"), false, "db: ");
    config_destroy(&ctx->applied);
    ctx->applied = fresh;
}

/*  Every setting, before the database is asked anything or a socket made: a bad
    one stops the worker at once with its name (exit 2), rather than after the
    wait for the database or as a vague failure to start. */
static int s_check(const config_t *c, char *why, size_t why_size)
{
    static const config_range_t ranges[] = {
        {"db_port", 1, 65535},
        {"pool_size", 1, 1000},
        {"max_overflow", 0, 999},
        {"recycle_s", 0, 31536000},
        {"ping_after_idle_ms", -1, 86400000},
        {"connect_timeout_s", 1, 3600},
        {"read_timeout_s", 1, 86400},
        {"write_timeout_s", 1, 86400},
        {"lock_wait_timeout_s", 0, 1073741824},
        {"reconnect_backoff_max_ms", 1, 3600000},
        {"startup_wait_s", 0, 86400},
        {"argon2_opslimit", (int64_t)crypto_pwhash_OPSLIMIT_MIN, 1000},
        {"argon2_memlimit_kib", (int64_t)crypto_pwhash_MEMLIMIT_MIN / 1024, 4194304},
        {"hash_queue_max", 1, 1000},
        {"hash_nice", 0, 19},
        {"max_item_bytes", 1, SMP_BODY_MAX},
        {"shutdown_timeout_s", 0, 86400},
        {NULL, 0, 0},
    };
    if (config_check_ints(c, ranges, why, why_size) != 0)
        return -1;
    if (config_int(c, "pool_size") + config_int(c, "max_overflow") > 1000) {
        snprintf(why, why_size, "pool_size + max_overflow must be at most 1000");
        return -1;
    }
    const char *service = config_str(c, "service");
    if (!*service || strlen(service) > SMP_SERVICE_MAX) {
        snprintf(why, why_size, "service must be 1-%d bytes", SMP_SERVICE_MAX);
        return -1;
    }
    if (config_check_endpoints(c, "backend", why, why_size) != 0 ||
        config_check_endpoints(c, "events_in", why, why_size) != 0)
        return -1;
    return 0;
}

static void s_status(void *arg, msgpack_packer *pk)
{
    s_ctx_t *ctx = arg;
    msgpack_pack_map(pk, 3 + POOL_STATUS_PAIRS + OPS_STATUS_PAIRS);
    mp_pack_kv_str(pk, "worker", ctx->name);
    mp_pack_kv_bool(pk, "db_up", pool_server_up(ctx->pool));
    mp_pack_kv_int(pk, "capacity", pool_capacity(ctx->pool));
    pool_status(ctx->pool, pk);
    ops_status(ctx->ops, pk);
}

static void s_on_request(void *arg, worker_request_t *req)
{
    ops_on_request(((s_ctx_t *)arg)->ops, req);
}

static void s_on_cancel(void *arg, worker_request_t *req)
{
    ops_on_cancel(((s_ctx_t *)arg)->ops, req);
}

static int s_loop(s_ctx_t *ctx, hash_worker_t *hash)
{
    zmq_pollitem_t items[S_POLL_MAX];
    conn_t *owners[S_POLL_MAX];
    int64_t stop_deadline = 0;
    for (;;) {
        /* first: a tick may replace a link's socket, so the poll set is built after */
        int64_t timeout = worker_tick(ctx->worker);
        if (timeout > S_TICK_MS)
            timeout = S_TICK_MS;
        size_t links = worker_link_count(ctx->worker);
        size_t n = 0;
        items[n++] = (zmq_pollitem_t){.fd = ctx->sigfd, .events = ZMQ_POLLIN};
        for (size_t i = 0; i < links; i++) {
            zsock_t *sock = worker_link_socket(ctx->worker, i);
            items[n++] = (zmq_pollitem_t){.socket = sock ? zsock_resolve(sock) : NULL,
                                          .fd = -1,
                                          .events = sock ? ZMQ_POLLIN : 0};
        }
        /* the hash pipe is polled only while a hash is under way */
        if (hash_worker_pending(hash))
            items[n++] = (zmq_pollitem_t){.socket = zsock_resolve(hash_worker_socket(hash)),
                                          .events = ZMQ_POLLIN};
        else
            items[n++] = (zmq_pollitem_t){.socket = NULL, .fd = -1, .events = 0};
        size_t first_conn = n;
        n += pool_poll(ctx->pool, items + n, owners + n, S_POLL_MAX - n, &timeout);
        int rc = zmq_poll(items, (int)n, (long)timeout);
        if (rc < 0 && zmq_errno() != EINTR) {
            slog_error("db: poll failed: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
            struct signalfd_siginfo si;
            ssize_t got = read(ctx->sigfd, &si, sizeof si);
            if (got > 0 && si.ssi_signo == SIGHUP) {
                if (ctx->stopping)
                    slog_info("db: reload (SIGHUP) ignored: stopping");
                else
                    s_reload(ctx);
            } else if (got > 0 && !ctx->stopping) {
                slog_info("db: signal %u: no new work; finishing %zu op(s) in flight", si.ssi_signo,
                          ops_running(ctx->ops));
                ctx->stopping = true;
                worker_stop(ctx->worker);
                stop_deadline =
                    clock_now_ms() + config_int(ctx->config, "shutdown_timeout_s") * 1000;
            }
        }
        /* connections first: their results free capacity for the requests below */
        for (size_t i = first_conn; rc > 0 && i < n; i++)
            if (items[i].revents)
                pool_io(ctx->pool, owners[i], items[i].revents);
        if (rc > 0 && (items[first_conn - 1].revents & ZMQ_POLLIN))
            hash_worker_handle(hash);
        for (size_t i = 0; rc > 0 && i < links; i++)
            if (items[1 + i].revents & ZMQ_POLLIN)
                worker_handle(ctx->worker, i);
        pool_tick(ctx->pool);
        ops_tick(ctx->ops);
        if (!ctx->stopping) {
            worker_set_credit(ctx->worker, s_credit(ctx));
        } else {
            if (ops_running(ctx->ops) == 0)
                return 0;
            if (clock_now_ms() >= stop_deadline) {
                slog_warn("db: %zu op(s) still running after shutdown_timeout_s; exiting",
                          ops_running(ctx->ops));
                return 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    /* Signals arrive through a signalfd polled by the loop; blocked before any
       thread exists, so no thread (ZeroMQ's, the hash thread) takes them. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL);

    config_t *config = NULL;
    int rc = config_load(&config, "sluice-dbworker",
                         "The Sluice DB worker: serves the `db` service from a pool of MariaDB "
                         "connections.",
                         s_options, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    slog_level_t level = SLOG_INFO;
    slog_level_parse(config_str(config, "log_level"), &level);
    slog_init("dbworker", level);
    char why[600];
    if (s_check(config, why, sizeof why) != 0) {
        fprintf(stderr, "sluice-dbworker: %s\n", why);
        config_destroy(&config);
        return 2;
    }
    if (sodium_init() < 0) {
        slog_error("db: libsodium failed to initialise");
        return 1;
    }
    curve_t curve;
    char curve_why[512];
    if (curve_load(&curve, config_str(config, "curve_cert"),
                   config_str(config, "curve_broker_cert"), false, curve_why,
                   sizeof curve_why) != 0) {
        fprintf(stderr, "sluice-dbworker: CurveZMQ: %s\n", curve_why);
        config_destroy(&config);
        return 2;
    }
    mysql_library_init(0, NULL, NULL);

    s_ctx_t ctx = {.config = config, .curve = &curve};
    ctx.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    const char *name = config_str(config, "worker_name");
    if (name && *name) {
        snprintf(ctx.name, sizeof ctx.name, "%s", name);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(ctx.name, sizeof ctx.name, "db-%s-%d", host, (int)getpid());
    }

    pool_config_t pc = {
        .conn =
            {
                .host = config_str(config, "db_host"),
                .port = (unsigned)config_int(config, "db_port"),
                .socket = config_str(config, "db_socket"),
                .user = config_str(config, "db_user"),
                .password = config_str(config, "db_password"),
                .database = config_str(config, "db_name"),
                .connect_timeout_s = (unsigned)config_int(config, "connect_timeout_s"),
                .read_timeout_s = (unsigned)config_int(config, "read_timeout_s"),
                .write_timeout_s = (unsigned)config_int(config, "write_timeout_s"),
                .lock_wait_timeout_s = config_int(config, "lock_wait_timeout_s"),
            },
        .pool_size = (int)config_int(config, "pool_size"),
        .max_overflow = (int)config_int(config, "max_overflow"),
        .recycle_s = config_int(config, "recycle_s"),
        .ping_after_idle_ms = config_int(config, "ping_after_idle_ms"),
        .backoff_max_ms = config_int(config, "reconnect_backoff_max_ms"),
    };
    long wait_timeout = 0;
    const char *dir = config_bool(config, "migrate") ? config_str(config, "migrations_dir") : NULL;
    if (migrate_run(&pc.conn, dir, (int)config_int(config, "startup_wait_s"), s_signalled, &ctx,
                    &wait_timeout) != 0) {
        bool signalled = s_signalled(&ctx);
        slog_error("db: %s", signalled ? "stopped before the database was ready"
                                       : "cannot prepare the database; exiting");
        config_destroy(&config);
        mysql_library_end();
        return signalled ? 0 : 1;
    }
    if (pc.recycle_s > 0 && wait_timeout > 0 && pc.recycle_s >= wait_timeout)
        slog_warn("db: recycle_s (%" PRId64 ") is not below the server's wait_timeout (%ld s): "
                  "idle connections may be cut by the server first (pre-ping still catches them)",
                  pc.recycle_s, wait_timeout);

    const char *links[S_LINKS_MAX], *sinks[S_LINKS_MAX];
    char *links_buf, *sinks_buf;
    size_t nlinks = s_split(config_str(config, "backend"), &links_buf, links, S_LINKS_MAX);
    size_t nsinks = s_split(config_str(config, "events_in"), &sinks_buf, sinks, S_LINKS_MAX);
    hash_worker_t *hash = hash_worker_new((uint64_t)config_int(config, "argon2_opslimit"),
                                          (size_t)config_int(config, "argon2_memlimit_kib") * 1024,
                                          (size_t)config_int(config, "hash_queue_max"),
                                          (int)config_int(config, "hash_nice"));
    ctx.hash = hash;
    ctx.pool = pool_new(&pc);
    events_t *events = events_new(sinks, nsinks, &curve);
    ops_config_t oc = {.max_item_bytes = (size_t)config_int(config, "max_item_bytes")};
    ctx.ops = ctx.pool && hash && events ? ops_new(&oc, ctx.pool, hash, events) : NULL;
    worker_callbacks_t cb = {
        .on_request = s_on_request, .on_cancel = s_on_cancel, .on_status = s_status};
    ctx.worker =
        nlinks ? worker_new(config_str(config, "service"), links, nlinks, &cb, &ctx) : NULL;
    rc = 1;
    if (!hash || !ctx.pool || !events || !ctx.ops || !ctx.worker) {
        slog_error("db: cannot start (check the argon2 limits, backend and events_in)");
    } else {
        ops_set_worker(ctx.ops, ctx.worker);
        worker_set_curve(ctx.worker, &curve);
        pool_start(ctx.pool);
        if (worker_start(ctx.worker, s_credit(&ctx)) == 0) {
            slog_info("db: %s serving \"%s\" via %zu broker(s), pool %d+%d", ctx.name,
                      config_str(config, "service"), nlinks, pc.pool_size, pc.max_overflow);
            rc = s_loop(&ctx, hash) == 0 ? 0 : 1;
        }
    }
    /* DISCONNECT to every broker, then close everything */
    worker_destroy(&ctx.worker);
    ops_destroy(&ctx.ops);
    pool_destroy(&ctx.pool);
    events_destroy(&events);
    hash_worker_destroy(&hash);
    free(links_buf);
    free(sinks_buf);
    if (ctx.sigfd >= 0)
        close(ctx.sigfd);
    slog_info("db: stopped");
    config_destroy(&ctx.applied);
    config_destroy(&config);
    mysql_library_end();
    return rc;
}
