/*  login_throttle.c - failed logins per username and per address. See
    login_throttle.h. */
#include "login_throttle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct login_throttle_t {
    ratelimit_t *by_username; /* NULL: no username limit */
    ratelimit_t *by_address;  /* NULL: no address limit */
};

/* A table of max failures coming back over window_s; NULL when max is 0. */
static int s_table(int max, int window_s, size_t entries, ratelimit_t **out)
{
    *out = NULL;
    if (max == 0)
        return 0;
    *out = ratelimit_new((double)max / (double)window_s, (double)max, entries);
    return *out ? 0 : -1;
}

login_throttle_t *login_throttle_new(const login_throttle_config_t *cfg)
{
    if (cfg->username_max < 0 || cfg->address_max < 0 || cfg->window_s < 1 || cfg->max_entries < 1)
        return NULL;
    login_throttle_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (s_table(cfg->username_max, cfg->window_s, cfg->max_entries, &self->by_username) != 0 ||
        s_table(cfg->address_max, cfg->window_s, cfg->max_entries, &self->by_address) != 0)
        login_throttle_destroy(&self);
    return self;
}

void login_throttle_destroy(login_throttle_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ratelimit_destroy(&(*self_p)->by_username);
    ratelimit_destroy(&(*self_p)->by_address);
    free(*self_p);
    *self_p = NULL;
}

int login_throttle_begin(login_throttle_t *self, const char *username, size_t len,
                         const char *address, int64_t now_ms, login_attempt_t *a,
                         const char **limit)
{
    memset(a, 0, sizeof *a);
    *limit = NULL;
    if (username && self->by_username && len <= LOGIN_USERNAME_MAX) {
        for (size_t i = 0; i < len; i++) {
            char c = username[i];
            a->username[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        a->username[len] = 0;
    }
    if (address && self->by_address)
        snprintf(a->address, sizeof a->address, "%s", address);
    /* the address first: a client already over its own limit must not use up a
       username's allowance (someone else's account) on the way */
    if (a->address[0]) {
        int wait = ratelimit_take(self->by_address, a->address, now_ms);
        if (wait) {
            *limit = "login_fail_address_max";
            memset(a, 0, sizeof *a);
            return wait;
        }
    }
    if (a->username[0]) {
        int wait = ratelimit_take(self->by_username, a->username, now_ms);
        if (wait) {
            if (a->address[0])
                ratelimit_give(self->by_address, a->address, now_ms);
            *limit = "login_fail_username_max";
            memset(a, 0, sizeof *a);
            return wait;
        }
    }
    a->open = true;
    return 0;
}

void login_throttle_end(login_throttle_t *self, login_attempt_t *a, int status, int64_t now_ms)
{
    if (!a->open)
        return;
    a->open = false;
    if (status == 401 || status == 0)
        return; /* a failure: it stays counted */
    if (a->address[0] && self->by_address)
        ratelimit_give(self->by_address, a->address, now_ms);
    if (a->username[0] && self->by_username) {
        if (status >= 200 && status < 300)
            ratelimit_forget(self->by_username, a->username);
        else
            ratelimit_give(self->by_username, a->username, now_ms);
    }
}

void login_throttle_expire(login_throttle_t *self, int64_t now_ms)
{
    if (self->by_username)
        ratelimit_expire(self->by_username, now_ms);
    if (self->by_address)
        ratelimit_expire(self->by_address, now_ms);
}

size_t login_throttle_entries(const login_throttle_t *self)
{
    return (self->by_username ? ratelimit_size(self->by_username) : 0) +
           (self->by_address ? ratelimit_size(self->by_address) : 0);
}
