/*  curve.c - CurveZMQ keys from czmq certificate files. See curve.h. */
#include "curve.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
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
        snprintf(why, why_size, "curve_broker_cert is set but curve_cert (this process's own key "
                                "pair) is not");
        return -1;
    }
    if (!server && s_empty(server_cert_path)) {
        snprintf(why, why_size, "curve_cert is set but curve_broker_cert (the broker's public "
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
