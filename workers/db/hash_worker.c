/*  hash_worker.c - Argon2id on a thread, fed from a bounded queue. See
    hash_worker.h.

    Job frames, loop -> thread: [kind "H"|"V"|"D", password, hash]. Result frames,
    thread -> loop: ["1"|"0", hash]. The thread holds at most one job, so the
    result is always that of self->running; the queue stays on the loop's side,
    where a job can still be dropped before a CPU second is spent on it.
*/
#include "hash_worker.h"
#include "clock.h"
#include "mp.h"
#include "slog.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct hash_job_t {
    char kind[2];   /* "H" hash, "V" verify, "D" dummy verify */
    char *password; /* a copy, wiped when the job goes */
    size_t len;
    char stored[HASH_STR_MAX]; /* the hash to verify against */
    int64_t deadline_ms;       /* clock_now_ms */
    hash_done_fn *done;        /* NULL once cancelled */
    void *arg;
    void *handle; /* in the waiting queue; NULL while computing */
};

struct hash_worker_t {
    zactor_t *actor;
    zlistx_t *waiting;   /* hash_job_t*, oldest first */
    hash_job_t *running; /* the job the thread has, or NULL */
    int64_t running_since_us;
    size_t queue_max;              /* waiting + running */
    double est_ms;                 /* what a job takes (moving average) */
    uint64_t computed;             /* jobs the thread finished */
    uint64_t expired;              /* dropped, or refused, for their deadline */
    uint64_t rejected;             /* refused: the queue was full */
    char dummy_hash[HASH_STR_MAX]; /* for verifies of users that do not exist */
};

typedef struct {
    uint64_t opslimit;
    size_t memlimit;
    int nice;
} s_params_t;

static void s_thread(zsock_t *pipe, void *args)
{
    s_params_t params = *(s_params_t *)args;
    free(args);
    /* Below the loops of this process and of the others on the machine: a login
       flood may keep this thread busy, and every other request must still get
       the CPU first (docs/db-worker.md, "Password hashing"). */
    if (params.nice > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), params.nice) != 0)
        slog_warn("db: cannot lower the hash thread's priority: %s", strerror(errno));
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
        zframe_t *pw = zmsg_next(msg);
        zframe_t *hash = zmsg_next(msg);
        char out[crypto_pwhash_STRBYTES] = "";
        bool ok = false;
        if (pw && hash) {
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
        zmsg_addstr(reply, ok ? "1" : "0");
        zmsg_addstr(reply, out);
        zmsg_destroy(&msg);
        zmsg_send(&reply, pipe);
    }
}

hash_worker_t *hash_worker_new(uint64_t opslimit, size_t memlimit, size_t queue_max, int nice)
{
    if (opslimit < crypto_pwhash_OPSLIMIT_MIN || memlimit < crypto_pwhash_MEMLIMIT_MIN ||
        queue_max < 1 || nice < 0 || nice > 19)
        return NULL;
    hash_worker_t *self = calloc(1, sizeof *self);
    s_params_t *params = malloc(sizeof *params);
    if (!self || !params) {
        free(self);
        free(params);
        return NULL;
    }
    *params = (s_params_t){.opslimit = opslimit, .memlimit = memlimit, .nice = nice};
    self->queue_max = queue_max;
    self->waiting = zlistx_new();
    /* a dummy hash with the same parameters, so a login for a user that does not
       exist costs what a wrong password costs; timed, as the first estimate of
       what a job takes */
    int64_t t0 = clock_now_us();
    if (!self->waiting ||
        crypto_pwhash_str(self->dummy_hash, "sluice-dummy", 12, opslimit, memlimit) != 0) {
        free(params);
        zlistx_destroy(&self->waiting);
        free(self);
        return NULL;
    }
    self->est_ms = (double)(clock_now_us() - t0) / 1000.0;
    self->actor = zactor_new(s_thread, params);
    if (!self->actor) {
        zlistx_destroy(&self->waiting);
        free(self);
        return NULL;
    }
    return self;
}

static void s_job_free(hash_job_t **job_p)
{
    hash_job_t *job = *job_p;
    if (!job)
        return;
    if (job->password) {
        sodium_memzero(job->password, job->len);
        free(job->password);
    }
    free(job);
    *job_p = NULL;
}

void hash_worker_destroy(hash_worker_t **self_p)
{
    hash_worker_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy(&self->actor);
    for (hash_job_t *job = zlistx_first(self->waiting); job; job = zlistx_next(self->waiting))
        s_job_free(&job);
    zlistx_destroy(&self->waiting);
    s_job_free(&self->running);
    free(self);
    *self_p = NULL;
}

/* A job that, started now, would end after its deadline: its answer could reach
   nobody (the broker has answered 504 by then), so it is not started. */
static bool s_late(const hash_worker_t *self, const hash_job_t *job, int64_t now_ms)
{
    return (double)now_ms + self->est_ms >= (double)job->deadline_ms;
}

/* Ends a job that never ran, for its deadline: counted, then done(HASH_EXPIRED). */
static void s_expire(hash_worker_t *self, hash_job_t *job)
{
    self->expired++;
    hash_done_fn *done = job->done;
    void *arg = job->arg;
    s_job_free(&job);
    if (done)
        done(arg, HASH_EXPIRED, "");
}

/* Gives job to the idle thread; -1 when the pipe refused it (our bug, or memory:
   it is inproc and holds one job). */
static int s_start(hash_worker_t *self, hash_job_t *job)
{
    zmsg_t *msg = zmsg_new();
    zmsg_addstr(msg, job->kind);
    zmsg_addmem(msg, job->password, job->len);
    zmsg_addstr(msg, job->stored);
    if (zmsg_send(&msg, zactor_sock(self->actor)) != 0) {
        slog_error("db: cannot hand a job to the hash thread");
        zmsg_destroy(&msg);
        return -1;
    }
    self->running = job;
    self->running_since_us = clock_now_us();
    return 0;
}

/* Hands the oldest waiting job that can still finish in time to the idle thread;
   the late ones before it are expired on the way. Keeps the invariant that an
   idle thread means an empty queue. */
static void s_pump(hash_worker_t *self)
{
    while (!self->running && zlistx_size(self->waiting)) {
        hash_job_t *job = zlistx_first(self->waiting);
        zlistx_delete(self->waiting, job->handle);
        job->handle = NULL;
        if (s_late(self, job, clock_now_ms())) {
            s_expire(self, job);
        } else if (s_start(self, job) != 0) {
            hash_done_fn *done = job->done;
            void *arg = job->arg;
            s_job_free(&job);
            if (done)
                done(arg, HASH_NO, "");
        }
    }
}

static hash_job_t *s_submit(hash_worker_t *self, const char *kind, const char *stored,
                            const char *password, size_t len, int64_t deadline_ms,
                            hash_done_fn *done, void *arg, hash_refusal_t *why)
{
    if (hash_worker_pending(self) >= self->queue_max) {
        self->rejected++;
        *why = HASH_REFUSED_FULL;
        return NULL;
    }
    hash_job_t *job = calloc(1, sizeof *job);
    if (job)
        job->password = malloc(len ? len : 1);
    if (!job || !job->password) {
        free(job);
        *why = HASH_REFUSED_NOMEM;
        return NULL;
    }
    memcpy(job->password, password, len);
    job->len = len;
    snprintf(job->kind, sizeof job->kind, "%s", kind);
    snprintf(job->stored, sizeof job->stored, "%s", stored ? stored : "");
    job->deadline_ms = deadline_ms;
    if (s_late(self, job, clock_now_ms())) {
        s_job_free(&job);
        self->expired++;
        *why = HASH_REFUSED_LATE;
        return NULL;
    }
    job->done = done;
    job->arg = arg;
    /* An idle thread means an empty queue (s_pump): the job starts now. Never
       through s_pump, which could expire it and run the caller's done from
       inside this call. */
    if (!self->running) {
        if (s_start(self, job) != 0) {
            s_job_free(&job);
            *why = HASH_REFUSED_NOMEM;
            return NULL;
        }
        return job;
    }
    job->handle = zlistx_add_end(self->waiting, job);
    return job;
}

hash_job_t *hash_worker_hash(hash_worker_t *self, const char *password, size_t len,
                             int64_t deadline_ms, hash_done_fn *done, void *arg,
                             hash_refusal_t *why)
{
    return s_submit(self, "H", NULL, password, len, deadline_ms, done, arg, why);
}

hash_job_t *hash_worker_verify(hash_worker_t *self, const char *hash, const char *password,
                               size_t len, int64_t deadline_ms, hash_done_fn *done, void *arg,
                               hash_refusal_t *why)
{
    bool real = hash && *hash;
    return s_submit(self, real ? "V" : "D", real ? hash : self->dummy_hash, password, len,
                    deadline_ms, done, arg, why);
}

void hash_worker_cancel(hash_worker_t *self, hash_job_t **job_p)
{
    hash_job_t *job = *job_p;
    if (!job)
        return;
    *job_p = NULL;
    if (job == self->running) {
        job->done = NULL; /* the thread cannot be stopped mid-hash: its result is dropped */
        return;
    }
    zlistx_delete(self->waiting, job->handle);
    s_job_free(&job);
}

zsock_t *hash_worker_socket(hash_worker_t *self)
{
    return zactor_sock(self->actor);
}

size_t hash_worker_pending(const hash_worker_t *self)
{
    return zlistx_size(self->waiting) + (self->running ? 1 : 0);
}

void hash_worker_refuse(hash_worker_t *self)
{
    self->rejected++;
}

size_t hash_worker_queue_max(const hash_worker_t *self)
{
    return self->queue_max;
}

void hash_worker_handle(hash_worker_t *self)
{
    zsock_t *sock = zactor_sock(self->actor);
    while (zsock_events(sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv_nowait(sock);
        if (!msg)
            return;
        char *ok = zmsg_popstr(msg);
        char *hash = zmsg_popstr(msg);
        zmsg_destroy(&msg);
        hash_job_t *job = self->running;
        self->running = NULL;
        if (job) {
            self->computed++;
            double took_ms = (double)(clock_now_us() - self->running_since_us) / 1000.0;
            self->est_ms = self->est_ms * 0.75 + took_ms * 0.25;
            hash_done_fn *done = job->done;
            void *arg = job->arg;
            s_job_free(&job);
            if (done)
                done(arg, ok && strcmp(ok, "1") == 0 ? HASH_OK : HASH_NO, hash ? hash : "");
        }
        free(ok);
        free(hash);
    }
    s_pump(self);
}

void hash_worker_tick(hash_worker_t *self, int64_t now_ms)
{
    /* collected first: a done callback ends its op, which may touch the queue */
    hash_job_t *late[64];
    size_t n = 0;
    for (hash_job_t *job = zlistx_first(self->waiting); job && n < 64;
         job = zlistx_next(self->waiting))
        if (s_late(self, job, now_ms))
            late[n++] = job;
    for (size_t i = 0; i < n; i++) {
        zlistx_delete(self->waiting, late[i]->handle);
        late[i]->handle = NULL;
    }
    for (size_t i = 0; i < n; i++)
        s_expire(self, late[i]);
    s_pump(self);
}

void hash_worker_status(const hash_worker_t *self, msgpack_packer *pk)
{
    mp_pack_kv_int(pk, "hashing", (int64_t)hash_worker_pending(self));
    mp_pack_kv_int(pk, "hash_queue_max", (int64_t)self->queue_max);
    mp_pack_kv_int(pk, "hash_computed", (int64_t)self->computed);
    mp_pack_kv_int(pk, "hash_expired", (int64_t)self->expired);
    mp_pack_kv_int(pk, "hash_rejected", (int64_t)self->rejected);
}
