/*  broker.c - sockets, the poll loop, the janitor tick and signals. See broker.h. */
#include "broker.h"
#include "bus.h"
#include "clock.h"
#include "curve.h"
#include "slog.h"
#include "smp.h"
#include "wire.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_BATCH 256      /* messages read from one socket before looking at the others */
#define S_HWM 100000     /* replies and partials are dropped past this, so keep it high */
#define S_LINGER_MS 2000 /* time final replies get to leave after the loop ends */
/* A frame above this drops the peer's connection instead of filling memory. Twice
   the largest body the codec accepts, so a body a little too large still gets a
   clear 400 from it. */
#define S_FRAME_MAX (2 * (int64_t)SMP_BODY_MAX)

struct broker_t {
    zsock_t *frontend;   /* ROUTER, clients */
    zsock_t *backend;    /* ROUTER, workers */
    zsock_t *events_in;  /* XSUB, publishers */
    zsock_t *events_out; /* XPUB, subscribers */
    curve_t curve;       /* the broker's keys, when CurveZMQ is on */
    zactor_t *auth;      /* zauth: the ZAP handler that checks peers' keys */
    router_t *router;
    wire_t *wire;  /* receive buffer shared by both ROUTER sockets */
    int signal_fd; /* SIGTERM/SIGINT/SIGHUP, read in the loop: no handler, no global flag */
    int64_t drain_ms;
    broker_reload_fn *on_reload; /* SIGHUP, run on the loop (NULL: SIGHUP ignored) */
    void *reload_arg;
};

static zsock_t *s_bind(const curve_t *curve, int type, const char *endpoint, const char *what)
{
    zsock_t *sock = zsock_new(type);
    if (!sock) {
        slog_error("cannot create the %s socket", what);
        return NULL;
    }
    if (curve_apply_server(curve, zsock_resolve(sock)) != 0) {
        slog_error("cannot make the %s socket a CURVE server: %s", what, zmq_strerror(errno));
        zsock_destroy(&sock);
        return NULL;
    }
    zsock_set_sndhwm(sock, S_HWM);
    zsock_set_rcvhwm(sock, S_HWM);
    zsock_set_maxmsgsize(sock, (int)S_FRAME_MAX);
    if (type == ZMQ_ROUTER)
        zsock_set_router_handover(sock, 1); /* a peer reconnecting with its id takes over */
    if (zsock_bind(sock, "%s", endpoint) < 0) {
        slog_error("cannot bind the %s socket to %s: %s", what, endpoint, zmq_strerror(errno));
        zsock_destroy(&sock);
    }
    return sock;
}

/*  The CurveZMQ settings: both or neither, a readable key pair, a folder. Fills
    curve (disabled when CurveZMQ is off). */
static int s_curve_check(const broker_config_t *cfg, curve_t *curve, char *why, size_t why_size)
{
    memset(curve, 0, sizeof *curve);
    bool cert = cfg->curve_cert && *cfg->curve_cert, allow = cfg->curve_allow && *cfg->curve_allow;
    if (!cert && !allow)
        return 0;
    if (!allow) {
        snprintf(why, why_size,
                 "curve_cert is set but curve_allow (the folder of allowed public "
                 "certificates) is not");
        return -1;
    }
    if (!cert) {
        snprintf(why, why_size, "curve_allow is set but curve_cert (the broker's key pair) is not");
        return -1;
    }
    char reason[512];
    if (curve_load(curve, cfg->curve_cert, NULL, true, reason, sizeof reason) != 0) {
        snprintf(why, why_size, "curve_cert: %s", reason);
        return -1;
    }
    return curve_allow_check(cfg->curve_allow, why, why_size) < 0 ? -1 : 0;
}

int broker_check(const broker_config_t *cfg, char *why, size_t why_size)
{
    const char *reason = NULL;
    curve_t curve;
    if (cfg->drain_ms < 0 || cfg->drain_ms > 3600000) {
        snprintf(why, why_size, "drain_ms must be 0-3600000, got %lld", (long long)cfg->drain_ms);
        return -1;
    }
    if (router_config_check(&cfg->router, &reason) != 0) {
        snprintf(why, why_size, "%s", reason);
        return -1;
    }
    return s_curve_check(cfg, &curve, why, why_size);
}

/*  CurveZMQ, when curve_cert is set: every socket is a CURVE server, and zauth (a
    czmq actor answering ZAP in this process's ZeroMQ context) lets in only the
    public keys whose certificates are in curve_allow. A peer with another key, or
    none, never gets a connection: its messages never reach the broker. */
static int s_curve_start(broker_t *self, const broker_config_t *cfg)
{
    char why[600];
    if (s_curve_check(cfg, &self->curve, why, sizeof why) != 0) {
        slog_error("CurveZMQ: %s", why);
        return -1;
    }
    if (!self->curve.enabled)
        return 0;
    self->auth = zactor_new(zauth, NULL);
    int keys = self->auth ? broker_curve_allow(self, cfg->curve_allow, why, sizeof why) : -1;
    if (keys < 0) {
        slog_error("cannot start the CurveZMQ authenticator: %s", self->auth ? why : "no memory");
        return -1;
    }
    slog_info("CurveZMQ on: broker public key %s; %d peer key(s) allowed from %s",
              self->curve.public_txt, keys, cfg->curve_allow);
    if (keys == 0)
        slog_warn("CurveZMQ: curve_allow %s holds no public certificate: no peer can connect",
                  cfg->curve_allow);
    return 0;
}

const curve_t *broker_curve(const broker_t *self)
{
    return &self->curve;
}

int broker_curve_allow(broker_t *self, const char *folder, char *why, size_t why_size)
{
    if (!self->auth) {
        snprintf(why, why_size, "curve_allow: CurveZMQ is off here; turning it on needs a restart");
        return -1;
    }
    int keys = curve_allow_check(folder, why, why_size);
    if (keys < 0)
        return -1;
    /* zauth drops its certificate store and reads the folder anew */
    if (zstr_sendx(self->auth, "CURVE", folder, NULL) != 0 || zsock_wait(self->auth) != 0) {
        snprintf(why, why_size, "curve_allow: the authenticator did not answer");
        return -1;
    }
    return keys;
}

broker_t *broker_new(const broker_config_t *cfg)
{
    /* Signals are taken by a signalfd. They are blocked before the first socket is
       made, so ZeroMQ's threads inherit the mask and never take them either; czmq's
       own handler is turned off for the same reason. */
    zsys_handler_set(NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        slog_error("cannot block signals: %s", strerror(errno));
        return NULL;
    }
    broker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->drain_ms = cfg->drain_ms;
    self->on_reload = cfg->on_reload;
    self->reload_arg = cfg->reload_arg;
    self->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->signal_fd < 0) {
        slog_error("cannot make a signalfd: %s", strerror(errno));
        broker_destroy(&self);
        return NULL;
    }
    char why[600];
    if (broker_check(cfg, why, sizeof why) != 0) {
        slog_error("bad setting: %s", why);
        broker_destroy(&self);
        return NULL;
    }
    if (s_curve_start(self, cfg) != 0) {
        broker_destroy(&self);
        return NULL;
    }
    const curve_t *curve = &self->curve;
    self->frontend = s_bind(curve, ZMQ_ROUTER, cfg->frontend, "frontend");
    self->backend = self->frontend ? s_bind(curve, ZMQ_ROUTER, cfg->backend, "backend") : NULL;
    self->events_in = self->backend ? s_bind(curve, ZMQ_XSUB, cfg->events_in, "events_in") : NULL;
    self->events_out =
        self->events_in ? s_bind(curve, ZMQ_XPUB, cfg->events_out, "events_out") : NULL;
    if (!self->events_out) {
        broker_destroy(&self);
        return NULL;
    }
    self->wire = wire_new();
    if (!self->wire) {
        broker_destroy(&self);
        return NULL;
    }
    const char *reason = NULL;
    self->router = router_new(&cfg->router, self->frontend, self->backend, &reason);
    if (!self->router) {
        slog_error("bad setting: %s", reason);
        broker_destroy(&self);
        return NULL;
    }
    slog_info("listening: frontend %s, backend %s, events in %s, out %s", cfg->frontend,
              cfg->backend, cfg->events_in, cfg->events_out);
    return self;
}

void broker_destroy(broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_t *self = *self_p;
    router_destroy(&self->router);
    wire_destroy(&self->wire);
    /* replies and DISCONNECTs already queued get a moment to leave */
    if (self->frontend)
        zsock_set_linger(self->frontend, S_LINGER_MS);
    if (self->backend)
        zsock_set_linger(self->backend, S_LINGER_MS);
    zsock_destroy(&self->frontend);
    zsock_destroy(&self->backend);
    zsock_destroy(&self->events_in);
    zsock_destroy(&self->events_out);
    zactor_destroy(&self->auth);
    if (self->signal_fd >= 0)
        close(self->signal_fd);
    free(self);
    *self_p = NULL;
}

/* Reads up to S_BATCH messages from sock without blocking, hands each to handle.
   Returns how many. */
static int s_drain(broker_t *self, zsock_t *sock, void (*handle)(router_t *, wire_t *))
{
    void *handle_raw = zsock_resolve(sock);
    int i = 0;
    for (; i < S_BATCH && wire_recv(self->wire, handle_raw) == 1; i++)
        handle(self->router, self->wire);
    return i;
}

/* Returns how many stop signals were pending (0 if none). A SIGHUP is handled
   here, on the loop: the reload may touch what the loop owns (zauth's store). */
static int s_signals(broker_t *self)
{
    struct signalfd_siginfo info;
    int count = 0;
    while (read(self->signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
        if (info.ssi_signo == SIGHUP) {
            if (self->on_reload)
                self->on_reload(self->reload_arg, self);
            continue;
        }
        slog_info("signal %s received", strsignal((int)info.ssi_signo));
        count++;
    }
    return count;
}

int broker_run(broker_t *self)
{
    zmq_pollitem_t items[] = {
        {zsock_resolve(self->backend), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->frontend), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->events_in), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->events_out), 0, ZMQ_POLLIN, 0},
        {NULL, self->signal_fd, ZMQ_POLLIN, 0},
    };
    int64_t tick_ms = router_tick_ms(self->router);
    int64_t next_tick = clock_now_ms() + tick_ms;
    bool stopping = false;
    int64_t stop_by = 0;
    bool busy = false; /* the last pass moved messages: look again before sleeping */

    for (;;) {
        int64_t now = clock_now_ms();
        if (now >= next_tick) {
            router_tick(self->router, now);
            next_tick = now + tick_ms;
        }
        if (stopping && (router_in_flight(self->router) == 0 || now >= stop_by))
            break;
        int64_t wait = next_tick - now;
        if (stopping && stop_by - now < wait)
            wait = stop_by - now;
        /* Under load, messages keep arriving while a batch is handled: reading again
           at once costs no system call, while polling costs one per pass. */
        if (busy) {
            for (size_t i = 0; i < 4; i++)
                items[i].revents = ZMQ_POLLIN;
            items[4].revents = 0;
        } else if (zmq_poll(items, 5, (long)(wait < 0 ? 0 : wait)) < 0) {
            if (errno == EINTR)
                continue;
            slog_error("poll failed: %s", zmq_strerror(errno));
            break;
        }
        busy = false;
        if (items[4].revents & ZMQ_POLLIN && s_signals(self)) {
            if (stopping) {
                slog_info("second signal: not waiting for workers any longer");
                break;
            }
            stopping = true;
            stop_by = clock_now_ms() + self->drain_ms;
            router_shutdown(self->router);
            slog_info("shutting down: waiting up to %lld ms for %zu request(s) in flight",
                      (long long)self->drain_ms, router_in_flight(self->router));
        }
        /* workers first: their replies return credit that queued requests wait for */
        int moved = 0;
        if (items[0].revents & ZMQ_POLLIN)
            moved += s_drain(self, self->backend, router_worker_message);
        if (items[1].revents & ZMQ_POLLIN)
            moved += s_drain(self, self->frontend, router_client_message);
        if (items[2].revents & ZMQ_POLLIN)
            moved += bus_forward(self->events_in, self->events_out, S_BATCH);
        if (items[3].revents & ZMQ_POLLIN)
            moved += bus_forward(self->events_out, self->events_in, S_BATCH);
        busy = moved > 0;
    }
    size_t left = router_in_flight(self->router);
    if (left)
        slog_warn("shutting down: answering %zu request(s) still in flight with 503", left);
    router_abort(self->router);
    slog_info("stopped");
    return 0;
}
