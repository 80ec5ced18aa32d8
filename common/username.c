/*  username.c - see username.h. */
#include "username.h"

bool username_ok(const char *s, size_t len)
{
    if (!s || len < USERNAME_MIN || len > USERNAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}
