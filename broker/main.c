/*  main.c - sluice-broker: settings, then the broker loop. See docs/protocol.md.

    SIGHUP: the settings are read again (config file, environment, flags) and
    log_level applied; the others need a restart. The loop (broker.c) owns the
    router, so the reload runs on a thread of its own here that waits for SIGHUP
    and touches nothing but the log level (which slog keeps atomically).
*/
#include "broker.h"
#include "config.h"
#include "slog.h"
#include "smp.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

static const config_option_t s_options[] = {
    {"frontend", CONFIG_STR, "tcp://127.0.0.1:5550", "ROUTER endpoint clients connect to"},
    {"backend", CONFIG_STR, "tcp://127.0.0.1:5551", "ROUTER endpoint workers connect to"},
    {"events_in", CONFIG_STR, "tcp://127.0.0.1:5552", "XSUB endpoint event publishers connect to"},
    {"events_out", CONFIG_STR, "tcp://127.0.0.1:5553",
     "XPUB endpoint event subscribers connect to"},
    {"queue_max", CONFIG_INT, "1000", "bound of each service's request queue"},
    {"service_queue_max", CONFIG_STR, "", "per-service queue bounds, e.g. db=2000,chat=100"},
    {"heartbeat_ms", CONFIG_INT, "1000", "heartbeat interval to and from workers"},
    {"liveness", CONFIG_INT, "3", "heartbeat intervals of silence before a worker is dead"},
    {"default_deadline_ms", CONFIG_INT, "5000", "deadline of a request that sends 0"},
    {"drain_ms", CONFIG_INT, "5000", "on SIGTERM, how long to wait for in-flight replies"},
    {"pool_service", CONFIG_STR, "db", "workers of this service report pools in sys status"},
    {"curve_cert", CONFIG_STR, "",
     "CurveZMQ: the broker's key pair (sluicectl keygen PATH; PATH_secret holds the secret); "
     "empty: plain TCP"},
    {"curve_allow", CONFIG_STR, "",
     "CurveZMQ: folder of the public certificates of the clients and workers let in"},
    {NULL, 0, NULL, NULL},
};

/* The reload thread's context; the thread owns applied. */
typedef struct {
    const config_t *config; /* as started */
    config_t *applied;      /* the last configuration a SIGHUP applied; NULL: config */
    bool stop;              /* set (atomically) before the thread is woken to end */
} s_reloader_t;

/* One SIGHUP: all or nothing, one line saying what changed or why not. */
static void s_reload(s_reloader_t *r)
{
    config_t *fresh = NULL;
    if (config_reload_log_level(r->config, r->applied ? r->applied : r->config, "", &fresh) != 0)
        return;
    config_destroy(&r->applied);
    r->applied = fresh;
}

static void *s_reloader(void *arg)
{
    s_reloader_t *r = arg;
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    int signo;
    while (sigwait(&hup, &signo) == 0 && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
        s_reload(r);
    return NULL;
}

int main(int argc, char **argv)
{
    config_t *config = NULL;
    int rc = config_load(&config, "sluice-broker",
                         "Routes SMP/1 requests from clients to workers by service, with credit, "
                         "bounded queues, deadlines and heartbeats; proxies the event bus.",
                         s_options, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int64_t queue_max = config_int(config, "queue_max");
    broker_config_t cfg = {
        .frontend = config_str(config, "frontend"),
        .backend = config_str(config, "backend"),
        .events_in = config_str(config, "events_in"),
        .events_out = config_str(config, "events_out"),
        .drain_ms = config_int(config, "drain_ms"),
        .curve_cert = config_str(config, "curve_cert"),
        .curve_allow = config_str(config, "curve_allow"),
        .router =
            {
                .heartbeat_ms = config_int(config, "heartbeat_ms"),
                .liveness = config_int(config, "liveness"),
                .default_deadline_ms = config_int(config, "default_deadline_ms"),
                .queue_max = queue_max < 0 ? SIZE_MAX : (size_t)queue_max,
                .service_queue_max = config_str(config, "service_queue_max"),
                .pool_service = config_str(config, "pool_service"),
            },
    };
    /* Every thread made from here on (ZeroMQ's, the reloader) inherits this mask:
       SIGHUP goes only to the reloader's sigwait, SIGTERM/SIGINT to the loop's
       signalfd (broker_new). */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    s_reloader_t reloader = {.config = config};
    pthread_t thread;
    if (pthread_create(&thread, NULL, s_reloader, &reloader) != 0) {
        slog_error("cannot start the reload thread");
        config_destroy(&config);
        return 1;
    }
    broker_t *broker = broker_new(&cfg);
    rc = broker ? broker_run(broker) : 1;
    broker_destroy(&broker);
    __atomic_store_n(&reloader.stop, true, __ATOMIC_RELEASE);
    pthread_kill(thread, SIGHUP);
    pthread_join(thread, NULL);
    config_destroy(&reloader.applied);
    config_destroy(&config);
    return rc;
}
