/*  timers.h - many one-shot timers on one zloop timer: a binary min-heap of
    deadlines owned by the process's loop.

    Why not zloop_timer per stream: zloop keeps its timers in a list it walks on
    every iteration and removes cancelled ones by another walk, so thousands of
    streams each ticking every 20 ms would cost O(n) per tick. Here a stream embeds
    a timers_entry_t (no allocation), set and clear are O(log n), and zloop sees one
    timer, re-armed for the earliest deadline.

    A fired entry is cleared before its callback runs, so the callback may set it
    again or clear and free whatever owns it.
*/
#ifndef SLUICE_TIMERS_H
#define SLUICE_TIMERS_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct timers_t timers_t;
typedef void(timers_fn)(void *arg);

/* Embedded in its owner; zero-initialised means "not armed". */
typedef struct {
    int64_t when;  /* clock_now_ms() deadline */
    size_t slot;   /* 1 + index in the heap; 0 when not armed */
    timers_fn *fn; /* called once when when has passed */
    void *arg;     /* for fn */
} timers_entry_t;

/* loop may be NULL (unit tests): the caller then drives timers_run itself. */
timers_t *timers_new(zloop_t *loop);
/* Entries still armed are forgotten, never called. */
void timers_destroy(timers_t **self_p);

/* Arms (or moves) entry to fire at when. */
void timers_set(timers_t *self, timers_entry_t *entry, int64_t when, timers_fn *fn, void *arg);
/* Disarms entry; harmless when it is not armed. */
void timers_clear(timers_t *self, timers_entry_t *entry);
bool timers_armed(const timers_entry_t *entry);

/* Earliest deadline, or -1 when nothing is armed. */
int64_t timers_next(const timers_t *self);
/* Fires every entry due at now, earliest first; returns how many fired. */
size_t timers_run(timers_t *self, int64_t now);
size_t timers_count(const timers_t *self);

#endif
