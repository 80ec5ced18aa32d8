/*  username.h - the rule for a username an account can have, shared by the
    gateway (which refuses an impossible login without a hash) and the DB worker
    (which enforces it on user.create), so the two cannot drift apart. */
#ifndef SLUICE_COMMON_USERNAME_H
#define SLUICE_COMMON_USERNAME_H

#include <stdbool.h>
#include <stddef.h>

#define USERNAME_MIN 3
#define USERNAME_MAX 64

/* 3-64 characters of [A-Za-z0-9_.-]; false for NULL. */
bool username_ok(const char *s, size_t len);

#endif
