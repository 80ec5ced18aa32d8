/*  echo.c - the built-in echo provider. See echo.h. */
#include "echo.h"
#include "clock.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    provider_t base;     /* first: a provider_t* is an s_echo_t* */
    timers_t *timers;    /* the loop's timers */
    timers_entry_t tick; /* next word due */
    int64_t delay_ms;    /* between words */
    const provider_events_t *events;
    void *arg;  /* for events */
    char *text; /* the user's content (owned copy) */
    size_t size;
    size_t pos;    /* where the next word search starts */
    size_t sent;   /* words sent so far */
    char *scratch; /* " " + word, reused */
    size_t scratch_cap;
} s_echo_t;

static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool echo_next_word(const char *text, size_t size, size_t *pos, size_t *start, size_t *len)
{
    size_t i = *pos;
    while (i < size && s_space(text[i]))
        i++;
    if (i >= size) {
        *pos = size;
        return false;
    }
    size_t j = i;
    while (j < size && !s_space(text[j]))
        j++;
    *start = i;
    *len = j - i;
    *pos = j;
    return true;
}

static void s_destroy(provider_t *base)
{
    s_echo_t *self = (s_echo_t *)base;
    timers_clear(self->timers, &self->tick);
    free(self->text);
    free(self->scratch);
    free(self);
}

static const provider_ops_t s_ops = {s_destroy};

static void s_on_tick(void *arg)
{
    s_echo_t *self = arg;
    size_t start, len;
    if (!echo_next_word(self->text, self->size, &self->pos, &start, &len)) {
        self->events->on_done(self->arg); /* last: the actor may destroy us here */
        return;
    }
    size_t lead = self->sent ? 1 : 0;
    if (len + lead > self->scratch_cap) {
        char *scratch = realloc(self->scratch, len + lead);
        if (!scratch) {
            self->events->on_error(self->arg, "internal", "out of memory in the echo provider");
            return;
        }
        self->scratch = scratch;
        self->scratch_cap = len + lead;
    }
    self->scratch[0] = ' ';
    memcpy(self->scratch + lead, self->text + start, len);
    self->sent++;
    if (self->events->on_delta(self->arg, self->scratch, len + lead) != 0)
        return; /* the actor stopped us; it destroys us later */
    /* The last word ends the stream at once rather than one more delay later. */
    size_t probe = self->pos, s, l;
    if (!echo_next_word(self->text, self->size, &probe, &s, &l)) {
        self->pos = self->size;
        self->events->on_done(self->arg);
        return;
    }
    timers_set(self->timers, &self->tick, clock_now_ms() + self->delay_ms, s_on_tick, self);
}

provider_t *echo_start(timers_t *timers, int64_t token_delay_ms, const char *content, size_t len,
                       const provider_events_t *events, void *arg)
{
    s_echo_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->base.ops = &s_ops;
    self->timers = timers;
    self->delay_ms = token_delay_ms < 0 ? 0 : token_delay_ms;
    self->events = events;
    self->arg = arg;
    self->text = malloc(len ? len : 1);
    if (!self->text) {
        free(self);
        return NULL;
    }
    if (len)
        memcpy(self->text, content, len);
    self->size = len;
    /* Even an empty answer ends through the timer, never inside echo_start: the
       caller is not ready for events before it has the handle. */
    timers_set(timers, &self->tick, clock_now_ms() + self->delay_ms, s_on_tick, self);
    return &self->base;
}
