/*  curve.c - CurveZMQ keys from czmq certificate files. See curve.h. */
#include "curve.h"
#include "slog.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool s_empty(const char *s)
{
    return !s || !*s;
}

/* zcert_load falls back to the public file alone when PATH_secret is missing */
static zcert_t *s_load(const char *path, bool need_secret, char *why, size_t why_size)
{
    if (access(path, R_OK) != 0) {
        snprintf(why, why_size, "cannot read the certificate %s: %s", path, strerror(errno));
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        snprintf(why, why_size, "%s is not a CurveZMQ certificate (make one with sluicectl keygen)",
                 path);
        return NULL;
    }
    static const char zero_key[] = "0000000000000000000000000000000000000000";
    if (need_secret && strcmp(zcert_secret_txt(cert), zero_key) == 0) {
        snprintf(why, why_size, "no secret key for %s: %s_secret is missing or unreadable", path,
                 path);
        zcert_destroy(&cert);
        return NULL;
    }
    return cert;
}

int curve_load(curve_t *self, const char *cert_path, const char *server_cert_path, bool server,
               char *why, size_t why_size)
{
    memset(self, 0, sizeof *self);
    if (s_empty(cert_path) && s_empty(server_cert_path))
        return 0;
    if (!zsys_has_curve()) {
        snprintf(why, why_size, "CurveZMQ is configured but this libzmq has no CURVE support");
        return -1;
    }
    if (s_empty(cert_path)) {
        snprintf(why, why_size,
                 "curve_broker_cert is set but curve_cert (this process's own key "
                 "pair) is not");
        return -1;
    }
    if (!server && s_empty(server_cert_path)) {
        snprintf(why, why_size,
                 "curve_cert is set but curve_broker_cert (the broker's public "
                 "certificate) is not");
        return -1;
    }
    zcert_t *own = s_load(cert_path, true, why, why_size);
    if (!own)
        return -1;
    snprintf(self->public_txt, sizeof self->public_txt, "%s", zcert_public_txt(own));
    snprintf(self->secret_txt, sizeof self->secret_txt, "%s", zcert_secret_txt(own));
    zcert_destroy(&own);
    if (!server) {
        zcert_t *broker = s_load(server_cert_path, false, why, why_size);
        if (!broker)
            return -1;
        snprintf(self->server_txt, sizeof self->server_txt, "%s", zcert_public_txt(broker));
        zcert_destroy(&broker);
    }
    self->enabled = true;
    return 0;
}

static int s_set(void *sock, int option, const char *value)
{
    return zmq_setsockopt(sock, option, value, strlen(value));
}

int curve_apply_client(const curve_t *self, void *zmq_socket)
{
    if (!self || !self->enabled)
        return 0;
    if (s_set(zmq_socket, ZMQ_CURVE_SERVERKEY, self->server_txt) != 0 ||
        s_set(zmq_socket, ZMQ_CURVE_PUBLICKEY, self->public_txt) != 0 ||
        s_set(zmq_socket, ZMQ_CURVE_SECRETKEY, self->secret_txt) != 0)
        return -1;
    return 0;
}

int curve_apply_server(const curve_t *self, void *zmq_socket)
{
    if (!self || !self->enabled)
        return 0;
    int on = 1;
    if (zmq_setsockopt(zmq_socket, ZMQ_CURVE_SERVER, &on, sizeof on) != 0 ||
        s_set(zmq_socket, ZMQ_CURVE_SECRETKEY, self->secret_txt) != 0 ||
        s_set(zmq_socket, ZMQ_ZAP_DOMAIN, "sluice") != 0)
        return -1;
    return 0;
}

static bool s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Counts the files zauth's certificate store would load: every readable
   certificate in folder except the *_secret ones. */
int curve_allow_check(const char *folder, char *why, size_t why_size)
{
    struct stat st;
    if (s_empty(folder) || stat(folder, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, why_size, "curve_allow %s is not a folder", s_empty(folder) ? "''" : folder);
        return -1;
    }
    DIR *dir = opendir(folder);
    if (!dir) {
        snprintf(why, why_size, "curve_allow %s cannot be read: %s", folder, strerror(errno));
        return -1;
    }
    int keys = 0;
    for (struct dirent *e = readdir(dir); e; e = readdir(dir)) {
        if (e->d_name[0] == '.' || s_ends_with(e->d_name, "_secret"))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        zcert_t *cert = zcert_load(path);
        if (cert)
            keys++;
        zcert_destroy(&cert);
    }
    closedir(dir);
    return keys;
}

/* The secret key of a copy must not stay on the stack (a plain memset may be
   optimised away). */
static void s_wipe(curve_t *c)
{
    volatile unsigned char *p = (volatile unsigned char *)c;
    for (size_t i = 0; i < sizeof *c; i++)
        p[i] = 0;
}

bool curve_changed(const curve_t *running, const char *cert_path, const char *server_cert_path,
                   bool server, char *what, size_t what_size)
{
    curve_t fresh;
    char why[512];
    bool changed = true;
    if (curve_load(&fresh, cert_path, server_cert_path, server, why, sizeof why) != 0)
        snprintf(what, what_size, "%s", why);
    else if (fresh.enabled != running->enabled)
        snprintf(what, what_size, "CurveZMQ would be turned %s", fresh.enabled ? "on" : "off");
    else if (strcmp(fresh.public_txt, running->public_txt) != 0 ||
             strcmp(fresh.secret_txt, running->secret_txt) != 0)
        snprintf(what, what_size, "curve_cert %s holds another key pair than the one in use",
                 cert_path);
    else if (strcmp(fresh.server_txt, running->server_txt) != 0)
        snprintf(what, what_size, "curve_broker_cert %s holds another key than the one in use",
                 server_cert_path);
    else
        changed = false;
    s_wipe(&fresh);
    return changed;
}

void curve_reload_note(const curve_t *running, const char *cert_path, const char *server_cert_path,
                       bool server, const char *who)
{
    char what[700];
    if (curve_changed(running, cert_path, server_cert_path, server, what, sizeof what))
        slog_warn("%sreload (SIGHUP): CurveZMQ keys are not reloaded: %s; the keys in use stay "
                  "until a restart (docs/security.md)",
                  who, what);
}
