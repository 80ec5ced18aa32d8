/*  hash_worker.h - Argon2id (libsodium crypto_pwhash) off the event loop, in a
    bounded queue with deadlines.

    Hashing a password costs tens of milliseconds and tens of MiB on purpose; run
    on the loop it would stall every other request of the worker. A thread does it;
    jobs and results travel over an inproc pipe (a zactor) whose socket the loop
    polls, so the loop keeps serving while a hash is computed.

    The thread is handed one job at a time; the others wait in a queue on the
    loop's side, where they can still be dropped: a job whose deadline would pass
    before it could finish is never computed (HASH_EXPIRED), and a cancelled one is
    simply removed. The queue (waiting jobs plus the one computing) is bounded by
    queue_max: one more is refused, so a login flood costs a bounded amount of
    memory and CPU per worker and is answered at once instead of at its deadline.
*/
#ifndef SLUICE_DB_HASH_WORKER_H
#define SLUICE_DB_HASH_WORKER_H

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_STR_MAX 128 /* crypto_pwhash_STRBYTES */

typedef struct hash_worker_t hash_worker_t;
typedef struct hash_job_t hash_job_t;

typedef enum {
    HASH_OK,      /* hashed; for a verify: the password matched */
    HASH_NO,      /* a verify that did not match, or a hash that failed */
    HASH_EXPIRED, /* dropped before it started: its deadline came first. Not computed. */
} hash_result_t;

/* Why a job was not queued. */
typedef enum {
    HASH_REFUSED_FULL = 1, /* queue_max jobs are queued already (counted: rejected) */
    HASH_REFUSED_LATE,     /* it could not finish before its deadline (counted: expired) */
    HASH_REFUSED_NOMEM,
} hash_refusal_t;

/* The result of a job, on the loop: hash is the encoded hash of a HASH_OK hash. */
typedef void(hash_done_fn)(void *arg, hash_result_t result, const char *hash);

/*  opslimit/memlimit: Argon2id's cost; queue_max >= 1: jobs held at once; nice:
    the hash thread's nice value (0-19), so the loop and the rest of the machine
    get the CPU first. NULL on bad values or failure. */
hash_worker_t *hash_worker_new(uint64_t opslimit, size_t memlimit, size_t queue_max, int nice);
void hash_worker_destroy(hash_worker_t **self_p);

/*  Queues a hash of password (it is copied), to be started before deadline_ms
    (clock_now_ms) leaves too little time to finish it. done runs later from
    hash_worker_handle or hash_worker_tick, never from here. Returns the job (a
    handle for hash_worker_cancel, valid until done runs), or NULL and *why. */
hash_job_t *hash_worker_hash(hash_worker_t *self, const char *password, size_t len,
                             int64_t deadline_ms, hash_done_fn *done, void *arg,
                             hash_refusal_t *why);
/*  Verifies password against hash; hash NULL or empty: runs a dummy verify of the
    same cost and answers HASH_NO, so a missing user takes as long as a wrong
    password. */
hash_job_t *hash_worker_verify(hash_worker_t *self, const char *hash, const char *password,
                               size_t len, int64_t deadline_ms, hash_done_fn *done, void *arg,
                               hash_refusal_t *why);

/*  Forgets a job whose done has not run: a waiting one is dropped (never
    computed), the one computing has its result ignored. done never runs. */
void hash_worker_cancel(hash_worker_t *self, hash_job_t **job_p);

zsock_t *hash_worker_socket(hash_worker_t *self);
/* Handles the result waiting on the socket (never blocks) and starts the next job. */
void hash_worker_handle(hash_worker_t *self);
/* Drops the waiting jobs whose deadline has come (done: HASH_EXPIRED). */
void hash_worker_tick(hash_worker_t *self, int64_t now_ms);

/* Counts a job refused by the caller because the queue was full (hash_rejected). */
void hash_worker_refuse(hash_worker_t *self);

/* Jobs held: waiting plus computing. */
size_t hash_worker_pending(const hash_worker_t *self);
size_t hash_worker_queue_max(const hash_worker_t *self);

/* Counters (inside a map the caller opened: HASH_STATUS_PAIRS pairs). */
#define HASH_STATUS_PAIRS 5
void hash_worker_status(const hash_worker_t *self, msgpack_packer *pk);

#endif
