/*  echo.h - the built-in offline provider: streams the user's words back, one delta
    per word, token_delay_ms apart (the first one too, like a model's time to first
    token). The first delta is the first word; every later one is a space and the
    next word, so the deltas joined give the words separated by single spaces.
    Deterministic, so tests can assert on every delta. */
#ifndef SLUICE_ECHO_H
#define SLUICE_ECHO_H

#include "provider.h"
#include "timers.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Starts echoing content (copied). Returns NULL when out of memory. */
provider_t *echo_start(timers_t *timers, int64_t token_delay_ms, const char *content, size_t len,
                       const provider_events_t *events, void *arg);

/*  The next word of text from *pos on: sets *start and *len and moves *pos past it.
    Words are runs of bytes that are not ASCII whitespace. False when none is left. */
bool echo_next_word(const char *text, size_t size, size_t *pos, size_t *start, size_t *len);

#endif
