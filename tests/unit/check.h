/*  check.h - the smallest test harness: CHECK records a failure with its line and
    goes on, so one run shows every broken expectation; main returns non-zero. */
#ifndef SLUICE_CHECK_H
#define SLUICE_CHECK_H

#include <stdio.h>

static int check_failures = 0;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            check_failures++;                                                                 \
        }                                                                                     \
    } while (0)

#define CHECK_DONE()                                                                          \
    do {                                                                                      \
        if (check_failures)                                                                   \
            fprintf(stderr, "%d check(s) failed\n", check_failures);                          \
        return check_failures ? 1 : 0;                                                        \
    } while (0)

#endif
