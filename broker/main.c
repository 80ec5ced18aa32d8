/*  main.c - sluice-broker: settings, then the broker loop. See docs/protocol.md.

    Every setting is checked before the first socket is made (broker_check), so a
    bad one is reported as such (exit 2) even when a port is taken.

    SIGHUP: the settings are read again (config file, environment, flags);
    log_level and curve_allow are applied (zauth reads the allowed keys anew), the
    others need a restart. The broker's loop calls s_reload, so nothing here runs
    beside the loop. A new key pair in curve_cert is not used until a restart
    (curve_reload_note says so).
*/
#include "broker.h"
#include "config.h"
#include "slog.h"
#include "smp.h"

#include <stdbool.h>
#include <stdio.h>
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

/* What a SIGHUP applies; every other setting needs a restart. */
static const char *const s_reloadable[] = {"curve_allow", "log_level", NULL};

/* The broker's configurations. */
typedef struct {
    const config_t *config; /* as started */
    config_t *applied;      /* the last configuration a SIGHUP applied; NULL: config */
    broker_t *broker;
} s_reloader_t;

/* curve_allow, read anew whether or not its value changed: the reload is how an
   operator says the folder's contents changed (config_reload_apply's apply). */
static int s_apply(void *arg, const config_t *fresh, char *why, size_t why_size)
{
    s_reloader_t *r = arg;
    const char *allow = config_str(fresh, "curve_allow");
    if (!broker_curve(r->broker)->enabled) {
        if (!*allow)
            return 0;
        snprintf(why, why_size, "curve_allow: CurveZMQ is off here; turning it on needs a restart");
        return -1;
    }
    int keys = broker_curve_allow(r->broker, allow, why, why_size);
    if (keys < 0)
        return -1;
    slog_info("reload (SIGHUP): CurveZMQ: %d peer key(s) allowed from %s", keys, allow);
    curve_reload_note(broker_curve(r->broker), config_str(fresh, "curve_cert"), NULL, true, "");
    return 0;
}

/* One SIGHUP, on the broker's loop: all or nothing, one line saying what changed
   or why not. */
static void s_reload(void *arg, broker_t *broker)
{
    s_reloader_t *r = arg;
    r->broker = broker;
    config_t *fresh = NULL;
    if (config_reload_apply(r->config, r->applied ? r->applied : r->config, "", s_reloadable,
                            s_apply, r, &fresh) != 0)
        return;
    config_destroy(&r->applied);
    r->applied = fresh;
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
    char why[600];
    static const char *const endpoints[] = {"frontend", "backend", "events_in", "events_out"};
    for (size_t i = 0; i < 4; i++)
        if (config_check_endpoints(config, endpoints[i], why, sizeof why) != 0)
            rc = -1;
    if (rc != 0 || broker_check(&cfg, why, sizeof why) != 0) {
        fprintf(stderr, "sluice-broker: %s\n", why);
        config_destroy(&config);
        return 2;
    }
    s_reloader_t reloader = {.config = config};
    cfg.on_reload = s_reload;
    cfg.reload_arg = &reloader;
    /* SIGTERM, SIGINT and SIGHUP reach the loop's signalfd (broker_new blocks them
       before the first ZeroMQ thread exists) */
    broker_t *broker = broker_new(&cfg);
    rc = broker ? broker_run(broker) : 1;
    broker_destroy(&broker);
    config_destroy(&reloader.applied);
    config_destroy(&config);
    return rc;
}
