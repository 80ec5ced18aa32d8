/*  curve.h - CurveZMQ on a process's ZeroMQ sockets, when configured.

    Keys are czmq certificate files, as `sluicectl keygen PATH` writes them: PATH
    holds the public key, PATH_secret the pair (mode 0600). Every process has:
      curve_cert         its own key pair (PATH; the secret is read from PATH_secret)
      curve_broker_cert  clients and workers only: the broker's public certificate
    Both empty: plain TCP, as before (the ZeroMQ network must then be private).
    The broker, with curve_cert set, is a CURVE server on all four of its sockets
    and accepts only the public keys found in its curve_allow folder (zauth).

    The keys are copied into a curve_t once at start; applying them to a socket
    (before it binds or connects) is a few setsockopt calls, for czmq and raw
    libzmq sockets alike (zsock_resolve gives the raw one).
*/
#ifndef SLUICE_CURVE_H
#define SLUICE_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#define CURVE_KEY_TXT 41 /* Z85 text of a 32-byte key, with its NUL */

typedef struct {
    bool enabled;
    char public_txt[CURVE_KEY_TXT];
    char secret_txt[CURVE_KEY_TXT];
    char server_txt[CURVE_KEY_TXT]; /* the broker's public key ("" on the broker) */
} curve_t;

/*  Loads this process's keys. cert_path and server_cert_path may be NULL or "":
    both empty leaves self disabled; a client (server_cert_path needed) must give
    both. Returns 0, or -1 with the reason in why (a missing file, a file with no
    secret key, no CURVE in this libzmq). */
int curve_load(curve_t *self, const char *cert_path, const char *server_cert_path, bool server,
               char *why, size_t why_size);

/* Before connect: this socket authenticates to the broker. No-op when disabled. */
int curve_apply_client(const curve_t *self, void *zmq_socket);

/* Before bind (broker): this socket is a CURVE server; peers are checked by ZAP. */
int curve_apply_server(const curve_t *self, void *zmq_socket);

/*  The public certificates in folder that zauth would let in (every readable
    certificate file but *_secret): their number, or -1 with why when folder is not
    a readable folder. */
int curve_allow_check(const char *folder, char *why, size_t why_size);

/*  On SIGHUP: true when the files now named by cert_path and server_cert_path hold
    other keys than running (or cannot be read, or would turn CurveZMQ on or off),
    with what in what. A process's own keys are never swapped while it runs: its
    sockets would have to be made anew (docs/security.md), so a change needs a
    restart. */
bool curve_changed(const curve_t *running, const char *cert_path, const char *server_cert_path,
                   bool server, char *what, size_t what_size);

/* curve_changed, and when true one WARN line (prefixed with who) saying that the
   keys in use stay until a restart. */
void curve_reload_note(const curve_t *running, const char *cert_path, const char *server_cert_path,
                       bool server, const char *who);

/* The two settings of every client and worker program, for its option table. */
#define CURVE_CLIENT_OPTIONS                                                                       \
    {"curve_cert", CONFIG_STR, "",                                                                 \
     "CurveZMQ: this process's key pair (sluicectl keygen PATH); empty: plain TCP"},               \
    {                                                                                              \
        "curve_broker_cert", CONFIG_STR, "",                                                       \
            "CurveZMQ: the brokers' public certificate (needed with curve_cert)"                   \
    }

#endif
