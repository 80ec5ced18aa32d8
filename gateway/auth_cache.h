/*  auth_cache.h - bearer token -> (user, device), verified by the db op
    auth.verify and cached briefly.

    Keyed by the SHA-256 of the token (the token itself is never kept). Concurrent
    verifications of one token share one auth.verify. A refusal (401) is cached
    too, for a shorter time, so a client retrying a bad token costs the database
    nothing. A device.revoked event turns the device's entries into refusals at
    once. Each accepted entry holds an event subscription for its user, so that
    event reaches this gateway even when the user has no WebSocket here.

    A check that races a revocation (read before the revoke's commit, answered
    after its event) never makes a revoked token valid here: such an answer is
    refused, or asked again once the user's events are sure to reach this gateway
    (auth_cache.c says how).
*/
#ifndef SLUICE_GATEWAY_AUTH_CACHE_H
#define SLUICE_GATEWAY_AUTH_CACHE_H

#include "events.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct auth_cache_t auth_cache_t;
typedef struct auth_wait_t auth_wait_t;

typedef enum {
    AUTH_OK,     /* user_id, device_id set */
    AUTH_DENIED, /* unknown or revoked token: 401 */
    AUTH_ERROR,  /* could not ask (503/504/500): status, code, message say why */
    AUTH_MISS,   /* auth_cache_lookup only: not cached, call auth_cache_verify */
} auth_result_t;

typedef struct {
    auth_result_t result;
    int64_t user_id;
    int64_t device_id;
    int status;          /* AUTH_ERROR: HTTP status to answer */
    const char *code;    /* AUTH_ERROR: api.md code */
    const char *message; /* AUTH_ERROR: human text */
} auth_answer_t;

/* The final answer to one auth_cache_verify; after it the wait handle is gone. */
typedef void(auth_fn)(void *arg, const auth_answer_t *answer);

typedef struct {
    int64_t ttl_ms;          /* accepted tokens */
    int64_t negative_ttl_ms; /* refused tokens */
    size_t max_entries;
    uint32_t deadline_ms; /* of auth.verify */
} auth_cache_config_t;

auth_cache_t *auth_cache_new(uv_loop_t *loop, upstream_t *upstream, events_t *events,
                             const auth_cache_config_t *config);
void auth_cache_destroy(auth_cache_t **self_p);

/* A cached answer (AUTH_OK or AUTH_DENIED), or AUTH_MISS. Never asks anyone. */
auth_result_t auth_cache_lookup(auth_cache_t *self, const char *token, size_t len, int64_t *user_id,
                                int64_t *device_id);

/*  What an answer admits. A request is one act that started before the answer:
    when the first "valid" answer has to be confirmed (auth_cache.c), the request
    whose check it was takes it at once, as it would have had the revoke come a
    moment later. A socket lives on: it gets only the final answer. */
typedef enum { AUTH_FOR_REQUEST, AUTH_FOR_SOCKET } auth_for_t;

/*  Asks (or joins the question already asked) and calls fn once with the answer.
    Returns the wait, or NULL when auth.verify could not be sent: the caller
    answers 503 itself. Call only after auth_cache_lookup said AUTH_MISS. */
auth_wait_t *auth_cache_verify(auth_cache_t *self, const char *token, size_t len, auth_for_t for_,
                               auth_fn *fn, void *arg);

/* No callback will come for this wait. Sets *wait_p to NULL. */
void auth_cache_cancel(auth_cache_t *self, auth_wait_t **wait_p);

/* Every cached token of device_id becomes a refusal. */
void auth_cache_revoke_device(auth_cache_t *self, int64_t device_id);

/* Drops expired entries. */
void auth_cache_janitor(auth_cache_t *self, int64_t now_ms);

size_t auth_cache_size(const auth_cache_t *self);

#endif
