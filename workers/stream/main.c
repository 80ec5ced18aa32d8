/*  sluice-streamworker: the `chat` service. Many chat answers stream at once in
    one thread: one zloop carries the DEALERs to the brokers (worker side and db
    client side), libcurl's sockets and timeout (openai provider), the stream
    actors' timers, and a signalfd. The process never opens a database connection:
    it persists through `db` requests like any other client (docs/chat.md).

    SIGTERM/SIGINT: credit 0, running streams get shutdown_grace_ms to complete,
    the rest are stored as failed (worker_shutdown), DISCONNECT, exit 0. A second
    signal skips the grace period.

    SIGHUP: the settings are read again (config file, environment, flags);
    max_streams (the credit follows at once) and log_level are applied, the others
    need a restart (s_reload).
*/
#include "chat.h"
#include "config.h"
#include "curve.h"
#include "slog.h"
#include "smp.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const config_option_t s_options[] = {
    {"service", CONFIG_STR, "chat", "service name announced to the brokers"},
    {"backend", CONFIG_STR, "tcp://127.0.0.1:5551",
     "brokers' backend endpoints, comma-separated (streams arrive here)"},
    {"frontend", CONFIG_STR, "tcp://127.0.0.1:5550",
     "brokers' frontend endpoints, comma-separated (db requests leave here)"},
    {"worker_name", CONFIG_STR, NULL,
     "name in status, logs and the journal (default stream-<host>-<pid>)"},
    {"provider", CONFIG_STR, "echo", "where answers come from: echo or openai"},
    {"max_streams", CONFIG_INT, "1000", "streams this process runs at once (its credit)"},
    {"checkpoint_ms", CONFIG_INT, "1000",
     "store the text so far at most this often while a stream runs"},
    {"token_delay_ms", CONFIG_INT, "20", "echo: delay between words"},
    {"db_timeout_ms", CONFIG_INT, "5000",
     "deadline of each db request (begin, checkpoint, finish)"},
    {"db_max_in_flight", CONFIG_INT, "64",
     "db requests of this process at the broker at once; more wait here, finishes first"},
    {"max_stream_ms", CONFIG_INT, "600000", "longest answer, whatever the request's deadline"},
    {"max_answer_bytes", CONFIG_INT, "1048576",
     "longest answer (keep it at most the db worker's max_item_bytes)"},
    {"max_content_bytes", CONFIG_INT, "1048576", "longest user message accepted"},
    {"max_context_messages", CONFIG_INT, "50", "openai: earlier messages sent as context"},
    {"max_context_bytes", CONFIG_INT, "1048576", "openai: bytes of context, newest first"},
    {"journal_dir", CONFIG_STR, "var/stream-journal",
     "folder of the crash journals shared by the stream workers of a host (empty: none)"},
    {"journal_scan_ms", CONFIG_INT, "5000",
     "how often to look for journals of stream workers that died"},
    {"shutdown_grace_ms", CONFIG_INT, "10000",
     "on SIGTERM, how long running streams may go on before they are stopped"},
    {"base_url", CONFIG_STR, "https://api.openai.com/v1",
     "openai: API base; requests go to {base_url}/chat/completions"},
    {"model", CONFIG_STR, "gpt-4o-mini", "openai: model name"},
    {"api_key_env", CONFIG_STR, "OPENAI_API_KEY",
     "openai: name of the environment variable holding the API key"},
    {"system_prompt", CONFIG_STR, NULL, "openai: system message sent first (empty: none)"},
    {"connect_timeout_ms", CONFIG_INT, "10000", "openai: connect timeout"},
    {"idle_timeout_ms", CONFIG_INT, "60000",
     "openai: longest silence of the provider, first byte included"},
    {"max_event_bytes", CONFIG_INT, "1048576", "openai: largest server-sent event accepted"},
    CURVE_CLIENT_OPTIONS,
    {NULL, 0, NULL, NULL},
};

/* The process's context: the chat service and its configurations. */
typedef struct {
    chat_t *chat;
    const config_t *config; /* as started: the settings point into it */
    config_t *applied;      /* the last configuration a SIGHUP applied; NULL: config */
    bool draining;
    const curve_t *curve; /* the keys in use; a new pair needs a restart */
} s_ctx_t;

/* What a SIGHUP applies; every other setting needs a restart. */
static const char *const s_reloadable[] = {"max_streams", "log_level", NULL};

/* A new max_streams: the worker's credit at once (config_reload_apply's apply). */
static int s_apply_max_streams(void *arg, const config_t *fresh, char *why, size_t why_size)
{
    s_ctx_t *ctx = arg;
    int64_t max_streams = config_int(fresh, "max_streams");
    if (max_streams < 1 || max_streams > 1000000) {
        snprintf(why, why_size, "max_streams must be 1-1000000, got %" PRId64, max_streams);
        return -1;
    }
    if (ctx->draining)
        slog_info("reload (SIGHUP): draining, max_streams stays 0");
    else
        chat_set_max_streams(ctx->chat, (uint32_t)max_streams);
    return 0;
}

/*  SIGHUP: everything is checked before anything is applied; one line says what
    changed, what needs a restart, or why the reload was rejected. */
static void s_reload(s_ctx_t *ctx)
{
    config_t *fresh = NULL;
    if (config_reload_apply(ctx->config, ctx->applied ? ctx->applied : ctx->config, "",
                            s_reloadable, s_apply_max_streams, ctx, &fresh) != 0)
        return;
    curve_reload_note(ctx->curve, config_str(fresh, "curve_cert"),
                      config_str(fresh, "curve_broker_cert"), false, "");
    config_destroy(&ctx->applied);
    ctx->applied = fresh;
}

static int s_on_signal(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    s_ctx_t *ctx = arg;
    struct signalfd_siginfo info;
    while (read(item->fd, &info, sizeof info) == (ssize_t)sizeof info) {
        if (info.ssi_signo == SIGHUP) {
            s_reload(ctx);
            continue;
        }
        slog_info("signal %u: draining", info.ssi_signo);
        ctx->draining = true;
        chat_shutdown(ctx->chat);
    }
    return 0;
}

/* Reads an integer setting within [min, max]; prints why and returns false if not. */
static bool s_range(const config_t *config, const char *name, int64_t min, int64_t max,
                    int64_t *out)
{
    int64_t v = config_int(config, name);
    if (v < min || v > max) {
        fprintf(stderr, "sluice-streamworker: %s must be %lld-%lld, got %lld\n", name,
                (long long)min, (long long)max, (long long)v);
        return false;
    }
    *out = v;
    return true;
}

static bool s_settings(const config_t *config, chat_settings_t *s, char *name, size_t name_size)
{
    memset(s, 0, sizeof *s);
    const char *given = config_str(config, "worker_name");
    if (*given) {
        snprintf(name, name_size, "%s", given);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(name, name_size, "stream-%s-%d", host, (int)getpid());
    }
    s->worker_name = name;
    s->service = config_str(config, "service");
    char why[600];
    if (!*s->service || strlen(s->service) > SMP_SERVICE_MAX) {
        fprintf(stderr, "sluice-streamworker: service must be 1-%d bytes\n", SMP_SERVICE_MAX);
        return false;
    }
    if (config_check_endpoints(config, "backend", why, sizeof why) != 0 ||
        config_check_endpoints(config, "frontend", why, sizeof why) != 0) {
        fprintf(stderr, "sluice-streamworker: %s\n", why);
        return false;
    }
    s->backend = config_str(config, "backend");
    s->frontend = config_str(config, "frontend");
    s->journal_dir = config_str(config, "journal_dir");
    const char *provider = config_str(config, "provider");
    if (strcmp(provider, "echo") == 0)
        s->actor.provider = ACTOR_PROVIDER_ECHO;
    else if (strcmp(provider, "openai") == 0)
        s->actor.provider = ACTOR_PROVIDER_OPENAI;
    else {
        fprintf(stderr, "sluice-streamworker: provider must be echo or openai, got '%s'\n",
                provider);
        return false;
    }
    int64_t max_streams, db_in_flight, db_timeout, answer, content, context, context_bytes, event;
    actor_settings_t *a = &s->actor;
    if (!s_range(config, "max_streams", 1, 1000000, &max_streams) ||
        !s_range(config, "checkpoint_ms", 10, 3600000, &a->checkpoint_ms) ||
        !s_range(config, "token_delay_ms", 0, 60000, &a->token_delay_ms) ||
        !s_range(config, "db_timeout_ms", 10, 600000, &db_timeout) ||
        !s_range(config, "db_max_in_flight", 1, 100000, &db_in_flight) ||
        !s_range(config, "max_stream_ms", 100, 86400000, &a->max_stream_ms) ||
        !s_range(config, "max_answer_bytes", 1, 64 * 1024 * 1024, &answer) ||
        !s_range(config, "max_content_bytes", 1, 3 * 1024 * 1024, &content) ||
        !s_range(config, "max_context_messages", 1, 500, &context) ||
        !s_range(config, "max_context_bytes", 1, 3 * 1024 * 1024, &context_bytes) ||
        !s_range(config, "journal_scan_ms", 10, 3600000, &s->journal_scan_ms) ||
        !s_range(config, "shutdown_grace_ms", 0, 3600000, &s->shutdown_grace_ms) ||
        !s_range(config, "connect_timeout_ms", 1, 600000, &a->openai.connect_timeout_ms) ||
        !s_range(config, "idle_timeout_ms", 1, 3600000, &a->openai.idle_timeout_ms) ||
        !s_range(config, "max_event_bytes", 64, 64 * 1024 * 1024, &event))
        return false;
    s->max_streams = (uint32_t)max_streams;
    s->db_max_in_flight = (size_t)db_in_flight;
    a->db_timeout_ms = (uint32_t)db_timeout;
    a->max_answer_bytes = (size_t)answer;
    a->max_content_bytes = (size_t)content;
    a->max_context_messages = (size_t)context;
    a->max_context_bytes = (size_t)context_bytes;
    a->openai.max_event_bytes = (size_t)event;
    a->openai.base_url = config_str(config, "base_url");
    a->openai.model = config_str(config, "model");
    a->openai.system_prompt = config_str(config, "system_prompt");
    const char *key_env = config_str(config, "api_key_env");
    a->openai.api_key = *key_env ? getenv(key_env) : NULL;
    if (a->provider == ACTOR_PROVIDER_OPENAI) {
        if (!*a->openai.base_url || !*a->openai.model) {
            fprintf(stderr, "sluice-streamworker: provider openai needs base_url and model\n");
            return false;
        }
        if (!a->openai.api_key || !*a->openai.api_key)
            slog_warn("provider openai: environment variable %s is not set; requests go "
                      "without an Authorization header",
                      *key_env ? key_env : "(api_key_env is empty)");
    }
    return true;
}

int main(int argc, char **argv)
{
    config_t *config = NULL;
    int rc = config_load(&config, "sluice-streamworker",
                         "Chat stream worker: service chat, op chat.generate (docs/chat.md).",
                         s_options, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    chat_settings_t settings;
    char name[128];
    if (!s_settings(config, &settings, name, sizeof name)) {
        config_destroy(&config);
        return 2;
    }
    curve_t curve;
    char curve_why[512];
    if (curve_load(&curve, config_str(config, "curve_cert"),
                   config_str(config, "curve_broker_cert"), false, curve_why,
                   sizeof curve_why) != 0) {
        fprintf(stderr, "sluice-streamworker: CurveZMQ: %s\n", curve_why);
        config_destroy(&config);
        return 2;
    }
    settings.curve = &curve;

    /* Signals arrive on a signalfd in the loop. They are blocked before any thread
       (libzmq's, czmq's) exists, so every thread inherits the mask, and czmq's own
       handler (which would end zloop at once) is never installed. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    zsys_handler_set(NULL);
    if (sfd < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        slog_error("cannot set up signals or libcurl");
        config_destroy(&config);
        return 1;
    }

    zloop_t *loop = zloop_new();
    char why[512] = "";
    chat_t *chat = chat_new(loop, &settings, why, sizeof why);
    s_ctx_t ctx = {.chat = chat, .config = config, .curve = &curve};
    zmq_pollitem_t sig = {NULL, sfd, ZMQ_POLLIN, 0};
    rc = 1;
    if (!chat) {
        slog_error("cannot start: %s", why);
    } else if (zloop_poller(loop, &sig, s_on_signal, &ctx) != 0 || chat_start(chat) != 0) {
        slog_error("cannot start: cannot reach the brokers at %s", settings.backend);
    } else {
        slog_info("serving service %s as %s: provider %s, max_streams %u, brokers %s / %s",
                  settings.service, settings.worker_name, config_str(config, "provider"),
                  settings.max_streams, settings.backend, settings.frontend);
        zloop_start(loop);
        rc = 0;
        slog_info("stopped");
    }
    chat_destroy(&chat);
    zloop_destroy(&loop);
    close(sfd);
    curl_global_cleanup();
    config_destroy(&ctx.applied);
    config_destroy(&config);
    return rc;
}
