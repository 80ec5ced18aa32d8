/*  sluicectl - the operator's tool: status of the brokers, calls to any service,
    live events, CurveZMQ keys, draining a worker. Built on the client library
    (sluice/client.h); see docs/deploy.md ("Operator tool") for the commands.

    Exit codes (also in --help): 0 ok; 1 a local failure (files, keys); 2 usage;
    3 no broker answered (unreachable, or no reply within the deadline); 4 the reply
    was 4xx (e.g. drain of an unknown worker: 404); 5 the reply was 5xx.
*/
#include "config.h"
#include "curve.h"
#include "json.h"
#include "mp.h"
#include "sluice/client.h"

#include <czmq.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_EXIT_OK 0
#define S_EXIT_LOCAL 1
#define S_EXIT_USAGE 2
#define S_EXIT_NO_BROKER 3
#define S_EXIT_4XX 4
#define S_EXIT_5XX 5
#define S_ARGS_MAX 8

static const config_option_t s_options[] = {
    {"frontend", CONFIG_STR, "tcp://127.0.0.1:5550",
     "broker frontends, comma-separated (status and drain ask each one)"},
    {"events_out", CONFIG_STR, "tcp://127.0.0.1:5553",
     "broker event outputs, comma-separated (tail)"},
    {"deadline_ms", CONFIG_INT, "5000", "deadline of each call"},
    {"json", CONFIG_BOOL, "false", "print JSON only (status, drain), for scripts"},
    {"watch", CONFIG_BOOL, "false", "status: refresh until interrupted, like top"},
    {"interval_ms", CONFIG_INT, "1000", "status --watch: refresh period"},
    {"count", CONFIG_INT, "0", "tail: exit after this many events (0: until interrupted)"},
    CURVE_CLIENT_OPTIONS,
    {NULL, 0, NULL, NULL},
};

static const char *s_summary =
    "The Sluice operator tool.\n\n"
    "Commands:\n"
    "  sluicectl status [--watch] [--json]  services, workers, pools, queues of each broker\n"
    "  sluicectl call SERVICE OP [JSON]     call SERVICE with {\"op\": OP, \"args\": JSON};\n"
    "                                       prints each partial as a JSON line, then the reply\n"
    "  sluicectl tail [USER]                print live events (of one user) as JSON lines\n"
    "  sluicectl keygen PATH                write a CurveZMQ key pair: PATH (public) and\n"
    "                                       PATH_secret (secret); never overwrites\n"
    "  sluicectl drain WORKER               every broker stops sending new work to WORKER\n"
    "                                       (its id or name in `status`); it finishes what\n"
    "                                       it holds and can then be stopped\n\n"
    "Exit codes: 0 ok; 1 local failure (files, keys); 2 usage; 3 no broker answered\n"
    "(unreachable, or no reply within the deadline); 4 the reply was 4xx (drain: no such\n"
    "worker); 5 the reply was 5xx. Interrupting status --watch or tail exits 0.";

static volatile sig_atomic_t s_interrupted = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

/* SIGINT/SIGTERM set a flag and interrupt poll (no SA_RESTART). */
static void s_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

typedef struct {
    config_t *config;
    const char *args[S_ARGS_MAX];
    size_t nargs;
    bool json;
    uint32_t deadline_ms;
} s_ctl_t;

static int s_exit_for(const sl_reply_t *reply)
{
    if (reply->local)
        return S_EXIT_NO_BROKER;
    if (reply->status >= 500)
        return S_EXIT_5XX;
    if (reply->status >= 400)
        return S_EXIT_4XX;
    return S_EXIT_OK;
}

static void s_print_json(json_t *value, bool compact)
{
    char *text = json_dumps(value, (compact ? JSON_COMPACT : JSON_INDENT(2)) | JSON_ENCODE_ANY);
    if (text) {
        puts(text);
        free(text);
    }
    fflush(stdout);
}

/* {"op": op, "args": args} packed into buf. args may be NULL. */
static void s_request(msgpack_sbuffer *buf, const char *op, const json_t *args)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, args ? 2 : 1);
    mp_pack_kv_str(&pk, "op", op);
    if (args) {
        mp_pack_cstr(&pk, "args");
        json_pack_msgpack(&pk, args);
    }
}

/* One blocking call; returns the reply as JSON (never NULL) and its exit code. */
static json_t *s_call_json(sl_client_t *client, const char *service, const char *op,
                           const json_t *args, uint32_t deadline_ms, int *code)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    s_request(&buf, op, args);
    sl_reply_t reply;
    json_t *out = NULL;
    if (sl_client_call(client, service, buf.data, buf.size, deadline_ms, NULL, NULL, &reply) == 0) {
        *code = s_exit_for(&reply);
        out = json_from_msgpack(reply.body, reply.size);
        sl_reply_free(&reply);
    } else {
        *code = S_EXIT_LOCAL;
    }
    msgpack_sbuffer_destroy(&buf);
    return out ? out : json_pack("{s:i}", "status", 0);
}

/* ---------------------------------------------------------------- status */

static const char *s_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

/* An integer field as text ("-" when absent), in a ring of buffers so that one
   printf can show several. */
static const char *s_num(json_t *obj, const char *key)
{
    static char ring[16][32];
    static unsigned next;
    char *out = ring[next++ % 16];
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        snprintf(out, sizeof ring[0], "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, sizeof ring[0], "-");
    return out;
}

static void s_print_broker(const char *endpoint, json_t *status, json_t *workers)
{
    json_t *data = json_object_get(status, "data");
    json_t *b = json_object_get(data, "broker");
    if (!b) {
        json_t *err = json_object_get(status, "error");
        printf("broker %s: %s\n\n", endpoint, s_str(err, "message"));
        return;
    }
    printf("broker %s  version %s  pid %s  up %ss%s\n", endpoint, s_str(b, "version"),
           s_num(b, "pid"), s_num(b, "uptime_s"),
           json_is_true(json_object_get(b, "draining")) ? "  SHUTTING DOWN" : "");
    printf("  requests %s  replies %s  partials %s  queued %s  in_flight %s\n",
           s_num(b, "requests"), s_num(b, "replies"), s_num(b, "partials"), s_num(b, "queued"),
           s_num(b, "in_flight"));
    printf("  unavailable %s  timeouts %s  worker_lost %s  cancelled %s  bad_request %s\n",
           s_num(b, "unavailable"), s_num(b, "timeouts"), s_num(b, "worker_lost"),
           s_num(b, "cancelled"), s_num(b, "bad_request"));

    printf("\n  %-16s %7s %8s %6s %9s %6s %9s\n", "SERVICE", "WORKERS", "CAPACITY", "CREDIT",
           "IN_FLIGHT", "QUEUED", "QUEUE_MAX");
    const char *name;
    json_t *s;
    json_object_foreach(json_object_get(data, "services"), name, s)
    {
        printf("  %-16s %7s %8s %6s %9s %6s %9s\n", name, s_num(s, "workers"), s_num(s, "capacity"),
               s_num(s, "credit"), s_num(s, "in_flight"), s_num(s, "queued"),
               s_num(s, "queue_max"));
    }

    printf("\n  %-20s %-20s %-10s %8s %9s %s\n", "WORKER", "NAME", "SERVICE", "CAPACITY",
           "IN_FLIGHT", "STATE");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(workers, "data"), i, w)
    {
        const char *state = json_is_true(json_object_get(w, "held"))       ? "drained"
                            : json_is_true(json_object_get(w, "draining")) ? "leaving"
                                                                           : "ready";
        printf("  %-20s %-20s %-10s %8s %9s %s\n", s_str(w, "worker"), s_str(w, "name"),
               s_str(w, "service"), s_num(w, "capacity"), s_num(w, "in_flight"), state);
    }

    json_t *pools = json_object_get(data, "pools");
    if (json_array_size(pools)) {
        printf("\n  %-20s %9s %12s %11s %8s %4s %7s %10s %s\n", "POOL", "POOL_SIZE", "MAX_OVERFLOW",
               "CHECKED_OUT", "OVERFLOW", "IDLE", "WAITING", "RECONNECTS", "DATABASE");
        json_array_foreach(pools, i, w)
        {
            json_t *up = json_object_get(w, "db_up");
            printf("  %-20s %9s %12s %11s %8s %4s %7s %10s %s\n", s_str(w, "worker"),
                   s_num(w, "pool_size"), s_num(w, "max_overflow"), s_num(w, "checked_out"),
                   s_num(w, "overflow"), s_num(w, "idle"), s_num(w, "waiting"),
                   s_num(w, "reconnects"),
                   !up                ? "-"
                   : json_is_true(up) ? "up"
                                      : "DOWN");
        }
    }
    printf("\n");
}

static int s_split(const char *list, char out[][256], size_t max)
{
    size_t n = 0;
    const char *p = list;
    while (*p && n < max) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len && len < 256) {
            memcpy(out[n], p, len);
            out[n++][len] = 0;
        }
        p += len + (end ? 1 : 0);
    }
    return (int)n;
}

#define S_BROKERS_MAX 16

/* A client of endpoints, over CurveZMQ when curve_cert is set; says why it cannot. */
static sl_client_t *s_client_new(const s_ctl_t *ctl, const char *endpoints)
{
    char why[512] = "";
    sl_client_t *client =
        sl_client_new_curve(endpoints, config_str(ctl->config, "curve_cert"),
                            config_str(ctl->config, "curve_broker_cert"), why, sizeof why);
    if (!client && *why)
        fprintf(stderr, "sluicectl: CurveZMQ: %s\n", why);
    return client;
}

/* One snapshot of every broker: printed, and the worst exit code returned. */
static int s_status_once(s_ctl_t *ctl, sl_client_t **clients, char endpoints[][256], int n)
{
    json_t *all = json_array();
    int code = S_EXIT_OK;
    for (int i = 0; i < n; i++) {
        int c1 = S_EXIT_OK, c2 = S_EXIT_OK;
        json_t *status = s_call_json(clients[i], "sys", "status", NULL, ctl->deadline_ms, &c1);
        json_t *workers =
            c1 == S_EXIT_OK ? s_call_json(clients[i], "sys", "workers", NULL, ctl->deadline_ms, &c2)
                            : json_pack("{s:i}", "status", 0);
        int worst = c1 > c2 ? c1 : c2;
        if (worst > code)
            code = worst;
        json_t *entry = json_pack("{s:s}", "endpoint", endpoints[i]);
        json_t *data = json_object_get(status, "data");
        if (data && c1 == S_EXIT_OK) {
            json_object_update(entry, data);
            json_object_set(entry, "workers", json_object_get(workers, "data"));
        } else {
            json_object_set(entry, "error", json_object_get(status, "error"));
        }
        json_array_append_new(all, entry);
        if (!ctl->json)
            s_print_broker(endpoints[i], status, workers);
        json_decref(status);
        json_decref(workers);
    }
    if (ctl->json) {
        json_t *out = json_pack("{s:o}", "brokers", all);
        s_print_json(out, true);
        json_decref(out);
    } else {
        json_decref(all);
    }
    return code;
}

static int s_status(s_ctl_t *ctl)
{
    char endpoints[S_BROKERS_MAX][256];
    int n = s_split(config_str(ctl->config, "frontend"), endpoints, S_BROKERS_MAX);
    sl_client_t *clients[S_BROKERS_MAX];
    for (int i = 0; i < n; i++) {
        clients[i] = s_client_new(ctl, endpoints[i]);
        if (!clients[i]) {
            fprintf(stderr, "sluicectl: bad endpoint %s: %s\n", endpoints[i], strerror(errno));
            while (i--)
                sl_client_destroy(&clients[i]);
            return S_EXIT_USAGE;
        }
    }
    int code;
    bool watch = config_bool(ctl->config, "watch");
    int64_t interval = config_int(ctl->config, "interval_ms");
    for (;;) {
        if (watch && !ctl->json)
            printf("\033[H\033[2J"); /* clear the screen, like top */
        code = s_status_once(ctl, clients, endpoints, n);
        fflush(stdout);
        if (!watch || s_interrupted)
            break;
        poll(NULL, 0, (int)(interval < 10 ? 10 : interval));
        if (s_interrupted) {
            code = S_EXIT_OK;
            break;
        }
    }
    for (int i = 0; i < n; i++)
        sl_client_destroy(&clients[i]);
    return code;
}

/* ---------------------------------------------------------------- call */

typedef struct {
    bool done;
    int code;
} s_call_state_t;

static void s_on_partial(void *arg, uint64_t call, const uint8_t *body, size_t size)
{
    (void)arg;
    (void)call;
    json_t *value = json_from_msgpack(body, size);
    if (value) {
        s_print_json(value, true);
        json_decref(value);
    }
}

static void s_on_reply(void *arg, uint64_t call, const sl_reply_t *reply)
{
    (void)call;
    s_call_state_t *state = arg;
    state->done = true;
    state->code = s_exit_for(reply);
    json_t *value = json_from_msgpack(reply->body, reply->size);
    if (value) {
        s_print_json(value, false);
        json_decref(value);
    }
    if (reply->local)
        fprintf(stderr, "sluicectl: no answer from a broker\n");
}

/* The async API with poll(2): Ctrl-C sends CANCEL, and the 499 that answers it is
   printed like any reply. */
static int s_call(s_ctl_t *ctl)
{
    if (ctl->nargs < 3 || ctl->nargs > 4) {
        fprintf(stderr, "sluicectl: usage: sluicectl call SERVICE OP [JSON]\n");
        return S_EXIT_USAGE;
    }
    json_t *args = NULL;
    if (ctl->nargs == 4) {
        json_error_t error;
        args = json_loads(ctl->args[3], JSON_DECODE_ANY, &error);
        if (!args) {
            fprintf(stderr, "sluicectl: JSON args: %s (column %d)\n", error.text, error.column);
            return S_EXIT_USAGE;
        }
    }
    sl_client_t *client = s_client_new(ctl, config_str(ctl->config, "frontend"));
    if (!client) {
        fprintf(stderr, "sluicectl: bad frontend endpoint: %s\n", strerror(errno));
        json_decref(args);
        return S_EXIT_USAGE;
    }
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    s_request(&buf, ctl->args[2], args);
    json_decref(args);
    s_call_state_t state = {false, S_EXIT_OK};
    sl_call_handlers_t handlers = {s_on_partial, s_on_reply};
    uint64_t id;
    int code = S_EXIT_OK;
    if (sl_client_send(client, ctl->args[1], buf.data, buf.size, ctl->deadline_ms, &handlers,
                       &state, &id) != 0) {
        fprintf(stderr, "sluicectl: bad service name or op\n");
        code = S_EXIT_USAGE;
    }
    bool cancelled = false;
    while (code == S_EXIT_OK && !state.done) {
        sl_client_dispatch(client);
        if (state.done)
            break;
        if (s_interrupted && !cancelled) {
            cancelled = true;
            sl_client_cancel(client, id);
            continue;
        }
        struct pollfd fds[4];
        size_t n = sl_client_fd_count(client);
        for (size_t i = 0; i < n && i < 4; i++)
            fds[i] = (struct pollfd){sl_client_fd(client, i), POLLIN, 0};
        int64_t timeout = sl_client_timeout_ms(client);
        poll(fds, n < 4 ? n : 4, (int)timeout);
    }
    if (state.done)
        code = state.code;
    msgpack_sbuffer_destroy(&buf);
    sl_client_destroy(&client);
    return code;
}

/* ---------------------------------------------------------------- tail */

typedef struct {
    int64_t seen;
    int64_t count;
} s_tail_t;

static void s_on_event(void *arg, const char *topic, size_t topic_size, const uint8_t *body,
                       size_t size)
{
    s_tail_t *tail = arg;
    json_t *value = json_from_msgpack(body, size);
    json_t *line = json_pack("{s:s%,s:o?}", "topic", topic, topic_size, "event", value);
    if (line) {
        s_print_json(line, true);
        json_decref(line);
    }
    tail->seen++;
}

static int s_tail(s_ctl_t *ctl)
{
    if (ctl->nargs > 2) {
        fprintf(stderr, "sluicectl: usage: sluicectl tail [USER]\n");
        return S_EXIT_USAGE;
    }
    char prefix[128] = "";
    if (ctl->nargs == 2) {
        const char *user = ctl->args[1];
        if (!*user || strspn(user, "0123456789") != strlen(user) || strlen(user) > 20) {
            fprintf(stderr, "sluicectl: USER is a user id (digits)\n");
            return S_EXIT_USAGE;
        }
        snprintf(prefix, sizeof prefix, "user/%s/", user);
    }
    /* the client needs a frontend; tail never calls, so any valid one will do */
    sl_client_t *client = s_client_new(ctl, config_str(ctl->config, "frontend"));
    s_tail_t tail = {0, config_int(ctl->config, "count")};
    if (!client || sl_client_subscribe(client, config_str(ctl->config, "events_out"), prefix,
                                       s_on_event, &tail) != 0) {
        fprintf(stderr, "sluicectl: bad endpoint: %s\n", strerror(errno));
        sl_client_destroy(&client);
        return S_EXIT_USAGE;
    }
    fprintf(stderr, "sluicectl: subscribed to %s\n", *prefix ? prefix : "every event");
    while (!s_interrupted && (tail.count <= 0 || tail.seen < tail.count)) {
        sl_client_dispatch(client);
        if (tail.count > 0 && tail.seen >= tail.count)
            break;
        struct pollfd fds[4];
        size_t n = sl_client_fd_count(client);
        for (size_t i = 0; i < n && i < 4; i++)
            fds[i] = (struct pollfd){sl_client_fd(client, i), POLLIN, 0};
        poll(fds, n < 4 ? n : 4, (int)sl_client_timeout_ms(client));
    }
    sl_client_destroy(&client);
    return S_EXIT_OK;
}

/* ---------------------------------------------------------------- keygen */

static int s_keygen(s_ctl_t *ctl)
{
    if (ctl->nargs != 2) {
        fprintf(stderr, "sluicectl: usage: sluicectl keygen PATH\n");
        return S_EXIT_USAGE;
    }
    const char *path = ctl->args[1];
    char secret[4096];
    if (snprintf(secret, sizeof secret, "%s_secret", path) >= (int)sizeof secret) {
        fprintf(stderr, "sluicectl: path too long\n");
        return S_EXIT_USAGE;
    }
    if (!zsys_has_curve()) {
        fprintf(stderr, "sluicectl: this libzmq has no CURVE support\n");
        return S_EXIT_LOCAL;
    }
    if (access(path, F_OK) == 0 || access(secret, F_OK) == 0) {
        fprintf(stderr, "sluicectl: %s or %s exists: not overwritten\n", path, secret);
        return S_EXIT_LOCAL;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        fprintf(stderr, "sluicectl: cannot make a key pair\n");
        return S_EXIT_LOCAL;
    }
    zcert_set_meta(cert, "created-by", "sluicectl %s", SLUICE_VERSION);
    /* the secret file is written 0600 by czmq (zcert_save_secret) */
    int rc = zcert_save(cert, path);
    if (rc != 0) {
        fprintf(stderr, "sluicectl: cannot write %s: %s\n", path, strerror(errno));
        zcert_destroy(&cert);
        return S_EXIT_LOCAL;
    }
    if (ctl->json) {
        json_t *out = json_pack("{s:s,s:s,s:s}", "public_key", zcert_public_txt(cert),
                                "public_file", path, "secret_file", secret);
        s_print_json(out, true);
        json_decref(out);
    } else {
        printf("public key %s\nwritten to %s (public) and %s (secret: keep it private)\n",
               zcert_public_txt(cert), path, secret);
    }
    zcert_destroy(&cert);
    return S_EXIT_OK;
}

/* ---------------------------------------------------------------- drain */

static int s_drain(s_ctl_t *ctl)
{
    if (ctl->nargs != 2) {
        fprintf(stderr, "sluicectl: usage: sluicectl drain WORKER\n");
        return S_EXIT_USAGE;
    }
    char endpoints[S_BROKERS_MAX][256];
    int n = s_split(config_str(ctl->config, "frontend"), endpoints, S_BROKERS_MAX);
    json_t *args = json_pack("{s:s}", "worker", ctl->args[1]);
    json_t *all = json_array();
    bool drained = false, refused = false, failed = false;
    for (int i = 0; i < n; i++) {
        sl_client_t *client = s_client_new(ctl, endpoints[i]);
        int code = S_EXIT_USAGE;
        json_t *reply = client ? s_call_json(client, "sys", "drain", args, ctl->deadline_ms, &code)
                               : json_pack("{s:i}", "status", 0);
        sl_client_destroy(&client);
        drained |= code == S_EXIT_OK;
        refused |= code == S_EXIT_4XX;
        failed |= code != S_EXIT_OK && code != S_EXIT_4XX;
        json_t *entry = json_pack("{s:s,s:O}", "endpoint", endpoints[i], "reply", reply);
        json_array_append_new(all, entry);
        if (!ctl->json) {
            json_t *list = json_object_get(json_object_get(reply, "data"), "drained");
            if (code == S_EXIT_OK) {
                printf("%s: drained", endpoints[i]);
                size_t k;
                json_t *w;
                json_array_foreach(list, k, w) printf(" %s", json_string_value(w));
                printf("\n");
            } else {
                printf("%s: %s\n", endpoints[i], s_str(json_object_get(reply, "error"), "message"));
            }
        }
        json_decref(reply);
    }
    if (ctl->json) {
        json_t *out = json_pack("{s:o}", "brokers", all);
        s_print_json(out, true);
        json_decref(out);
    } else {
        json_decref(all);
    }
    json_decref(args);
    /* drained somewhere is success: a worker need not be registered at every broker */
    return drained ? S_EXIT_OK : refused && !failed ? S_EXIT_4XX : S_EXIT_NO_BROKER;
}

/* ---------------------------------------------------------------- main */

/* Flags go to config_load, the rest are the command and its arguments. A flag
   without '=' takes the next word as its value unless it is a boolean. */
static int s_split_argv(int argc, char **argv, char **flags, int *nflags, s_ctl_t *ctl)
{
    static const char *bools[] = {"json", "watch", "help", "version", "h", NULL};
    *nflags = 0;
    flags[(*nflags)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] == '-' && arg[1]) {
            flags[(*nflags)++] = argv[i];
            const char *name = arg + (arg[1] == '-' ? 2 : 1);
            bool is_bool = strchr(name, '=') != NULL;
            for (size_t k = 0; bools[k] && !is_bool; k++)
                is_bool = strcmp(name, bools[k]) == 0;
            if (!is_bool && i + 1 < argc)
                flags[(*nflags)++] = argv[++i];
        } else if (ctl->nargs < S_ARGS_MAX) {
            ctl->args[ctl->nargs++] = arg;
        } else {
            fprintf(stderr, "sluicectl: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    s_ctl_t ctl = {0};
    char **flags = calloc((size_t)argc + 1, sizeof *flags);
    int nflags = 0;
    if (!flags || s_split_argv(argc, argv, flags, &nflags, &ctl) != 0) {
        free(flags);
        return S_EXIT_USAGE;
    }
    int rc = config_load(&ctl.config, "sluicectl", s_summary, s_options, nflags, flags);
    free(flags);
    if (rc != 0)
        return rc > 0 ? S_EXIT_OK : S_EXIT_USAGE;
    ctl.json = config_bool(ctl.config, "json");
    /* every setting before any socket: a bad one is a usage error, named */
    static const config_range_t ranges[] = {
        {"deadline_ms", 1, 3600000},
        {"interval_ms", 10, 3600000},
        {"count", 0, INT64_MAX},
        {NULL, 0, 0},
    };
    char why[300];
    if (config_check_ints(ctl.config, ranges, why, sizeof why) != 0) {
        fprintf(stderr, "sluicectl: %s\n", why);
        config_destroy(&ctl.config);
        return S_EXIT_USAGE;
    }
    ctl.deadline_ms = (uint32_t)config_int(ctl.config, "deadline_ms");
    s_catch_signals();
    const char *cmd = ctl.nargs ? ctl.args[0] : "";
    int code;
    if (strcmp(cmd, "status") == 0 && ctl.nargs == 1)
        code = s_status(&ctl);
    else if (strcmp(cmd, "call") == 0)
        code = s_call(&ctl);
    else if (strcmp(cmd, "tail") == 0)
        code = s_tail(&ctl);
    else if (strcmp(cmd, "keygen") == 0)
        code = s_keygen(&ctl);
    else if (strcmp(cmd, "drain") == 0)
        code = s_drain(&ctl);
    else {
        fprintf(stderr, "sluicectl: %s%s (see --help: status, call, tail, keygen, drain)\n",
                *cmd ? "unknown command or arguments: " : "no command", cmd);
        code = S_EXIT_USAGE;
    }
    config_destroy(&ctl.config);
    return code;
}
