/*  timers.c - a min-heap of deadlines behind one zloop timer. See timers.h. */
#include "timers.h"
#include "clock.h"

#include <stdlib.h>

struct timers_t {
    timers_entry_t **heap; /* heap[0] is the earliest */
    size_t count;
    size_t cap;
    zloop_t *loop;      /* NULL when driven by hand */
    int zloop_id;       /* the armed zloop timer, -1 when none */
    int64_t zloop_when; /* when that zloop timer fires */
    bool running;       /* inside timers_run: re-arming waits until it ends */
};

static void s_place(timers_t *self, size_t i, timers_entry_t *e)
{
    self->heap[i] = e;
    e->slot = i + 1;
}

static void s_up(timers_t *self, size_t i)
{
    timers_entry_t *e = self->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (self->heap[parent]->when <= e->when)
            break;
        s_place(self, i, self->heap[parent]);
        i = parent;
    }
    s_place(self, i, e);
}

static void s_down(timers_t *self, size_t i)
{
    timers_entry_t *e = self->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= self->count)
            break;
        if (child + 1 < self->count && self->heap[child + 1]->when < self->heap[child]->when)
            child++;
        if (e->when <= self->heap[child]->when)
            break;
        s_place(self, i, self->heap[child]);
        i = child;
    }
    s_place(self, i, e);
}

static void s_remove_at(timers_t *self, size_t i)
{
    timers_entry_t *e = self->heap[i];
    e->slot = 0;
    self->count--;
    if (i == self->count)
        return;
    s_place(self, i, self->heap[self->count]);
    if (i > 0 && self->heap[(i - 1) / 2]->when > self->heap[i]->when)
        s_up(self, i);
    else
        s_down(self, i);
}

static int s_on_zloop_timer(zloop_t *loop, int timer_id, void *arg);

/* Keeps the one zloop timer at the earliest deadline. zloop re-reads its timers on
   every iteration, so a timer added from inside a handler is seen in time. */
static void s_rearm(timers_t *self)
{
    if (!self->loop || self->running)
        return;
    int64_t next = timers_next(self);
    if (self->zloop_id >= 0 && next >= 0 && self->zloop_when <= next)
        return; /* already fires early enough; a spare wake-up is harmless */
    if (self->zloop_id >= 0 && next < 0)
        return; /* nothing armed: let it fire once and find nothing */
    if (self->zloop_id >= 0)
        zloop_timer_end(self->loop, self->zloop_id);
    self->zloop_id = -1;
    if (next < 0)
        return;
    int64_t delay = next - clock_now_ms();
    if (delay < 0)
        delay = 0;
    self->zloop_id = zloop_timer(self->loop, (size_t)delay, 1, s_on_zloop_timer, self);
    self->zloop_when = next;
}

static int s_on_zloop_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    timers_t *self = arg;
    if (timer_id == self->zloop_id)
        self->zloop_id = -1; /* a one-shot zloop timer: gone after this call */
    timers_run(self, clock_now_ms());
    return 0;
}

timers_t *timers_new(zloop_t *loop)
{
    timers_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->loop = loop;
    self->zloop_id = -1;
    return self;
}

void timers_destroy(timers_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    timers_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        self->heap[i]->slot = 0;
    if (self->loop && self->zloop_id >= 0)
        zloop_timer_end(self->loop, self->zloop_id);
    free(self->heap);
    free(self);
    *self_p = NULL;
}

bool timers_armed(const timers_entry_t *entry)
{
    return entry->slot != 0;
}

void timers_set(timers_t *self, timers_entry_t *entry, int64_t when, timers_fn *fn, void *arg)
{
    entry->fn = fn;
    entry->arg = arg;
    if (entry->slot) {
        size_t i = entry->slot - 1;
        int64_t was = entry->when;
        entry->when = when;
        if (when < was)
            s_up(self, i);
        else
            s_down(self, i);
    } else {
        if (self->count == self->cap) {
            size_t cap = self->cap ? self->cap * 2 : 256;
            timers_entry_t **heap = realloc(self->heap, cap * sizeof *heap);
            if (!heap)
                abort(); /* out of memory for a few pointers: nothing sensible left */
            self->heap = heap;
            self->cap = cap;
        }
        entry->when = when;
        s_place(self, self->count++, entry);
        s_up(self, self->count - 1);
    }
    s_rearm(self);
}

void timers_clear(timers_t *self, timers_entry_t *entry)
{
    if (!entry->slot)
        return;
    s_remove_at(self, entry->slot - 1);
}

int64_t timers_next(const timers_t *self)
{
    return self->count ? self->heap[0]->when : -1;
}

size_t timers_count(const timers_t *self)
{
    return self->count;
}

size_t timers_run(timers_t *self, int64_t now)
{
    size_t fired = 0;
    self->running = true;
    while (self->count && self->heap[0]->when <= now) {
        timers_entry_t *e = self->heap[0];
        s_remove_at(self, 0);
        fired++;
        e->fn(e->arg);
    }
    self->running = false;
    s_rearm(self);
    return fired;
}
