/*  hash_worker.c - Argon2id on a thread. See hash_worker.h.

    Job frames, loop -> thread: [kind "H"|"V", job id (8 bytes), password, hash].
    Result frames, thread -> loop: [job id, "1"|"0", hash]. The job id indexes a
    table on the loop side that holds the callback; nothing but bytes crosses.
*/
#include "hash_worker.h"
#include "slog.h"

#include <sodium.h>
#include <string.h>

typedef struct {
    hash_done_fn *done;
    void *arg;
} s_job_t;

struct hash_worker_t {
    zactor_t *actor;
    zhashx_t *jobs; /* job id (as key text) -> s_job_t */
    uint64_t next_id;
    char dummy_hash[HASH_STR_MAX]; /* for verifies of users that do not exist */
};

typedef struct {
    uint64_t opslimit;
    size_t memlimit;
} s_params_t;

static void s_thread(zsock_t *pipe, void *args)
{
    s_params_t params = *(s_params_t *)args;
    free(args);
    zsock_signal(pipe, 0);
    for (;;) {
        zmsg_t *msg = zmsg_recv(pipe);
        if (!msg)
            break;
        zframe_t *kind = zmsg_first(msg);
        if (zframe_streq(kind, "$TERM")) {
            zmsg_destroy(&msg);
            break;
        }
        zframe_t *id = zmsg_next(msg);
        zframe_t *pw = zmsg_next(msg);
        zframe_t *hash = zmsg_next(msg);
        char out[crypto_pwhash_STRBYTES] = "";
        bool ok = false;
        if (id && pw && hash) {
            if (zframe_streq(kind, "H")) {
                ok = crypto_pwhash_str(out, (const char *)zframe_data(pw), zframe_size(pw),
                                       params.opslimit, params.memlimit) == 0;
            } else {
                char stored[crypto_pwhash_STRBYTES] = "";
                size_t n = zframe_size(hash);
                if (n < sizeof stored) {
                    memcpy(stored, zframe_data(hash), n);
                    ok = crypto_pwhash_str_verify(stored, (const char *)zframe_data(pw),
                                                  zframe_size(pw)) == 0;
                    if (zframe_streq(kind, "D"))
                        ok = false; /* the dummy: same cost, never a match */
                }
            }
            sodium_memzero(zframe_data(pw), zframe_size(pw));
        }
        zmsg_t *reply = zmsg_new();
        zmsg_addmem(reply, id ? zframe_data(id) : (const void *)"", id ? zframe_size(id) : 0);
        zmsg_addstr(reply, ok ? "1" : "0");
        zmsg_addstr(reply, out);
        zmsg_destroy(&msg);
        zmsg_send(&reply, pipe);
    }
}

hash_worker_t *hash_worker_new(uint64_t opslimit, size_t memlimit)
{
    if (opslimit < crypto_pwhash_OPSLIMIT_MIN || memlimit < crypto_pwhash_MEMLIMIT_MIN)
        return NULL;
    hash_worker_t *self = calloc(1, sizeof *self);
    s_params_t *params = malloc(sizeof *params);
    if (!self || !params) {
        free(self);
        free(params);
        return NULL;
    }
    params->opslimit = opslimit;
    params->memlimit = memlimit;
    self->jobs = zhashx_new();
    /* a dummy hash with the same parameters, so a login for a user that does not
       exist costs what a wrong password costs */
    if (crypto_pwhash_str(self->dummy_hash, "sluice-dummy", 12, opslimit, memlimit) != 0) {
        free(params);
        zhashx_destroy(&self->jobs);
        free(self);
        return NULL;
    }
    self->actor = zactor_new(s_thread, params);
    if (!self->actor) {
        zhashx_destroy(&self->jobs);
        free(self);
        return NULL;
    }
    return self;
}

void hash_worker_destroy(hash_worker_t **self_p)
{
    hash_worker_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy(&self->actor);
    for (s_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs))
        free(job);
    zhashx_destroy(&self->jobs);
    free(self);
    *self_p = NULL;
}

static int s_submit(hash_worker_t *self, const char *kind, const char *hash, const char *password,
                    size_t len, hash_done_fn *done, void *arg)
{
    s_job_t *job = malloc(sizeof *job);
    if (!job)
        return -1;
    job->done = done;
    job->arg = arg;
    uint64_t id = ++self->next_id;
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, id);
    zhashx_insert(self->jobs, key, job);
    zmsg_t *msg = zmsg_new();
    zmsg_addstr(msg, kind);
    zmsg_addstr(msg, key);
    zmsg_addmem(msg, password, len);
    zmsg_addstr(msg, hash ? hash : "");
    if (zmsg_send(&msg, zactor_sock(self->actor)) != 0) {
        zmsg_destroy(&msg);
        zhashx_delete(self->jobs, key);
        free(job);
        return -1;
    }
    return 0;
}

int hash_worker_hash(hash_worker_t *self, const char *password, size_t len, hash_done_fn *done,
                     void *arg)
{
    return s_submit(self, "H", NULL, password, len, done, arg);
}

int hash_worker_verify(hash_worker_t *self, const char *hash, const char *password, size_t len,
                       hash_done_fn *done, void *arg)
{
    bool real = hash && *hash;
    return s_submit(self, real ? "V" : "D", real ? hash : self->dummy_hash, password, len, done,
                    arg);
}

zsock_t *hash_worker_socket(hash_worker_t *self)
{
    return zactor_sock(self->actor);
}

size_t hash_worker_pending(const hash_worker_t *self)
{
    return zhashx_size(self->jobs);
}

void hash_worker_handle(hash_worker_t *self)
{
    zsock_t *sock = zactor_sock(self->actor);
    while (zsock_events(sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv_nowait(sock);
        if (!msg)
            return;
        char *key = zmsg_popstr(msg);
        char *ok = zmsg_popstr(msg);
        char *hash = zmsg_popstr(msg);
        s_job_t *job = key ? zhashx_lookup(self->jobs, key) : NULL;
        if (job) {
            zhashx_delete(self->jobs, key);
            job->done(job->arg, ok && strcmp(ok, "1") == 0, hash ? hash : "");
            free(job);
        }
        free(key);
        free(ok);
        free(hash);
        zmsg_destroy(&msg);
    }
}
