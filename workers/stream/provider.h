/*  provider.h - what a stream actor sees of a provider (echo, openai): a handle it
    can destroy, and three events it receives.

    Rules every provider keeps, so an actor can be written without knowing which
    one it drives:
      - on_delta comes zero or more times, then exactly one of on_done or on_error,
        then nothing more;
      - a provider touches nothing of its own after calling on_done or on_error, so
        the actor may destroy it from inside those two;
      - on_delta returning non-zero stops the provider at once: no further event of
        any kind (the actor decided the outcome itself);
      - provider_destroy stops a running provider and never calls back.
*/
#ifndef SLUICE_PROVIDER_H
#define SLUICE_PROVIDER_H

#include <stddef.h>

typedef struct {
    int (*on_delta)(void *arg, const char *text, size_t len);
    void (*on_done)(void *arg);
    /* code: a stable snake_case word kept with the message; message: for people */
    void (*on_error)(void *arg, const char *code, const char *message);
} provider_events_t;

typedef struct provider_t provider_t;

/* Every provider starts with this, so provider_destroy can dispatch. */
typedef struct {
    void (*destroy)(provider_t *self);
} provider_ops_t;

struct provider_t {
    const provider_ops_t *ops;
};

/* One earlier message of the conversation, as context for the provider. */
typedef struct {
    const char *role; /* "user", "assistant" or "system" */
    const char *content;
    size_t content_len;
} provider_message_t;

static inline void provider_destroy(provider_t **self_p)
{
    if (self_p && *self_p) {
        (*self_p)->ops->destroy(*self_p);
        *self_p = NULL;
    }
}

#endif
