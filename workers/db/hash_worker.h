/*  hash_worker.h - Argon2id (libsodium crypto_pwhash) off the event loop.

    Hashing a password costs tens of milliseconds and tens of MiB on purpose; run
    on the loop it would stall every other request of the worker. A thread does it;
    jobs and results travel over an inproc pipe (a zactor) whose socket the loop
    polls, so the loop keeps serving while a hash is computed.
*/
#ifndef SLUICE_DB_HASH_WORKER_H
#define SLUICE_DB_HASH_WORKER_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_STR_MAX 128 /* crypto_pwhash_STRBYTES */

typedef struct hash_worker_t hash_worker_t;

/* Result of a job: for a hash, ok and the encoded hash; for a verify, ok = match. */
typedef void(hash_done_fn)(void *arg, bool ok, const char *hash);

hash_worker_t *hash_worker_new(uint64_t opslimit, size_t memlimit);
void hash_worker_destroy(hash_worker_t **self_p);

/* Queues a job; done runs from hash_worker_handle() on the loop. */
int hash_worker_hash(hash_worker_t *self, const char *password, size_t len, hash_done_fn *done,
                     void *arg);
/* Verifies password against hash; hash NULL or empty: runs a dummy verify of the same
   cost and answers false, so a missing user takes as long as a wrong password. */
int hash_worker_verify(hash_worker_t *self, const char *hash, const char *password, size_t len,
                       hash_done_fn *done, void *arg);

zsock_t *hash_worker_socket(hash_worker_t *self);
/* Handles the results waiting on the socket (never blocks). */
void hash_worker_handle(hash_worker_t *self);
size_t hash_worker_pending(const hash_worker_t *self);

#endif
