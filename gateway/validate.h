/*  validate.h - HTTP request inputs -> one SMP request body, or a 4xx with a reason.

    Pure: no I/O and nothing kept between calls, so the whole mapping from what a
    client sends (path parameter, query, JSON body, headers) to what a worker
    receives can be unit-tested and fuzzed (tests/fuzz/fuzz_gateway_request.c).
    Every refusal says what was wrong in words a client developer can act on.
*/
#ifndef SLUICE_GATEWAY_VALIDATE_H
#define SLUICE_GATEWAY_VALIDATE_H

#include "routes.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VALIDATE_MESSAGE_MAX 256
#define VALIDATE_TOKEN_MAX 512 /* bytes of a bearer token */
#define VALIDATE_REQUEST_ID_MAX 128

/* An answer that is not a worker's: status, api.md code, message. */
typedef struct {
    int status;
    const char *code;
    char message[VALIDATE_MESSAGE_MAX];
} gw_err_t;

void gw_err_set(gw_err_t *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct {
    const route_t *route;
    const char *param;       /* the {id} path segment (NUL-terminated) or "" */
    const char *const *args; /* query fragments "name=value", already %-decoded */
    size_t nargs;
    const uint8_t *body; /* raw request body (may be NULL when body_len is 0) */
    size_t body_len;
    const char *idem;  /* Idempotency-Key header or NULL */
    const char *trace; /* X-Request-Id, passed as "trace" */
    bool authed;       /* user_id/device_id come from a verified token */
    int64_t user_id;
    int64_t device_id;
    size_t max_item_bytes; /* clipboard content and chat message limit */
} validate_in_t;

/*  Checks everything a client sent for in->route and packs the SMP request body
    {"op","args","auth"?,"idem"?,"idempotent","trace"?} into out (appended).
    Returns 0, or -1 with err set (400 bad_request, 413 payload_too_large). */
int validate_request(const validate_in_t *in, msgpack_sbuffer *out, gw_err_t *err);

/*  Packs the start of a request body map: op, auth (when auth_user > 0), idem,
    idempotent, trace, and the key "args" — the caller packs the args map next.
    Used for the gateway's own requests (auth.verify, device.set_active, ...). */
void validate_pack_head(msgpack_packer *pk, const char *op, int64_t auth_user, int64_t auth_device,
                        const char *idem, bool idempotent, const char *trace);

/* An id or seq as api.md has them: 1-19 ASCII digits, at most 2^63-1. */
bool validate_id(const char *s, size_t len, int64_t *value);

/* Idempotency-Key: 1-128 printable ASCII characters (0x20-0x7e). */
bool validate_idem_key(const char *s, size_t len);

/* X-Request-Id from a client worth echoing: 1-128 of 0x21-0x7e. */
bool validate_request_id(const char *s, size_t len);

/* A token as issued: 1-512 of [A-Za-z0-9-._~+/=]. */
bool validate_token(const char *s, size_t len);

/*  The token of an "Authorization: Bearer <token>" header value. Returns false
    when the scheme is not Bearer or the token is malformed. */
bool validate_bearer(const char *header, const char **token, size_t *len);

/*  The WebSocket query: token (may be absent) and after (-1 when absent). Returns
    0, or -1 with err (400 for a bad after). The token points into args. */
int validate_notify_query(const char *const *args, size_t nargs, const char **token,
                          size_t *token_len, int64_t *after, gw_err_t *err);

#endif
