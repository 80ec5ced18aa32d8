/*  login_throttle.h - failed logins per username and per client address.

    Every login (POST /v1/sessions) takes one attempt from its username's and its
    address's allowance before it is sent to a DB worker, and gives it back when
    the answer is not a failure: only a 401 (a wrong password, or no such user),
    or a client gone before its answer, stays counted. So the limit also holds
    for a burst of logins sent all at once, before any answer came back, and a
    user who types the right password is never counted. A success also forgets
    its username's failures (not its address's: one account of one's own must
    not reset the allowance for guessing everyone else's).

    Each allowance is a token bucket (ratelimit.h) of `max` failures that fills
    up again over `window_s`: past it, one more attempt every window_s / max
    seconds, and the 429's Retry-After says when. The tables are bounded
    (max_entries each, least recently used evicted). Usernames are compared as
    the database does for the usernames an account can have: ASCII letters
    ignoring case. A username no account can have is not sent to a worker at all
    (username_ok), since the database's comparison would make many
    spellings (trailing spaces, accents) one account and so many throttle keys.
    Pure: no I/O, time is passed in.
*/
#ifndef SLUICE_GATEWAY_LOGIN_THROTTLE_H
#define SLUICE_GATEWAY_LOGIN_THROTTLE_H

#include "ratelimit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOGIN_USERNAME_MAX 64 /* as user.create's */

typedef struct login_throttle_t login_throttle_t;

typedef struct {
    int username_max;   /* failed logins per username within window_s (0: no limit) */
    int address_max;    /* failed logins per client address within window_s (0: no limit) */
    int window_s;       /* a full allowance comes back over this, >= 1 */
    size_t max_entries; /* usernames, and addresses, tracked (each) */
} login_throttle_config_t;

/* One login on its way: what it took, to give back or keep at its answer. */
typedef struct {
    char username[RATELIMIT_KEY_MAX + 1]; /* canonical; "" : not counted */
    char address[RATELIMIT_KEY_MAX + 1];  /* "" : not counted */
    bool open;                            /* taken, and the answer has not come */
} login_attempt_t;

/* NULL on bad values or out of memory. With both limits 0 it counts nothing. */
login_throttle_t *login_throttle_new(const login_throttle_config_t *cfg);
void login_throttle_destroy(login_throttle_t **self_p);

/*  Before a login: takes one attempt for username (NULL: an impossible one, only
    the address counts) and address (NULL or "": none known). Returns 0, or the
    Retry-After in seconds of a 429 with *limit the setting that refused it; a
    refused login takes nothing. */
int login_throttle_begin(login_throttle_t *self, const char *username, size_t len,
                         const char *address, int64_t now_ms, login_attempt_t *a,
                         const char **limit);

/*  The login's answer: status 401, or 0 (no answer: the client went away), keeps
    the attempt counted as a failure; anything else gives it back, and a 2xx
    forgets the username's failures. Does nothing for an attempt not open. */
void login_throttle_end(login_throttle_t *self, login_attempt_t *a, int status, int64_t now_ms);

/* Forgets the usernames and addresses whose allowance is whole again. */
void login_throttle_expire(login_throttle_t *self, int64_t now_ms);

/* Usernames and addresses tracked now. */
size_t login_throttle_entries(const login_throttle_t *self);

#endif
