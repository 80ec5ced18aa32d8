/*  openai.h - the `openai` provider: any OpenAI-compatible streaming endpoint,
    `POST {base_url}/chat/completions` with "stream": true, read as Server-Sent
    Events through http.h on the process's loop.

    Errors, each ending the stream with on_error(code, message) - the code is kept
    with the failed message:
      provider_http_error    a non-2xx answer (the status and the provider's own
                             error message, when it sent one, are in the message)
      provider_timeout       no connection within connect_timeout_ms, or no byte
                             for idle_timeout_ms
      provider_unreachable   name resolution or connection refused
      provider_broken_stream the connection broke, or the body ended before the
                             stream said it was done
      provider_bad_event     an event that is not the JSON a chat completion chunk
                             is, or larger than max_event_bytes
      provider_error         the stream itself carried an {"error": ...} event
    The pure pieces (request body, one event's decoding) are exposed for tests and
    the fuzzer.
*/
#ifndef SLUICE_OPENAI_H
#define SLUICE_OPENAI_H

#include "http.h"
#include "provider.h"
#include "timers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *base_url; /* e.g. https://api.openai.com/v1 (no trailing slash needed) */
    const char *model;
    const char *api_key;       /* the key itself (NULL or "": no Authorization header) */
    const char *system_prompt; /* sent first when not empty */
    int64_t connect_timeout_ms;
    int64_t idle_timeout_ms; /* longest silence, first byte included */
    size_t max_event_bytes;  /* largest SSE line or event accepted */
} openai_settings_t;

/*  Starts a streamed completion of messages (the conversation, oldest first, ending
    with the user's new message). Returns NULL with why filled in when the request
    cannot even be made (e.g. content that is not UTF-8); no event follows then. */
provider_t *openai_start(http_t *http, timers_t *timers, const openai_settings_t *settings,
                         const provider_message_t *messages, size_t count,
                         const provider_events_t *events, void *arg, char *why, size_t why_size);

/* The request body, or NULL when a string is not valid UTF-8. free() it. */
char *openai_request_body(const char *model, const char *system_prompt,
                          const provider_message_t *messages, size_t count);

typedef enum {
    OPENAI_EVENT_SKIP,  /* nothing to show (role-only chunk, empty choices, ...) */
    OPENAI_EVENT_DELTA, /* text to append */
    OPENAI_EVENT_DONE,  /* data: [DONE] */
    OPENAI_EVENT_ERROR, /* code + message */
} openai_event_kind_t;

typedef struct {
    openai_event_kind_t kind;
    const char *text; /* DELTA: valid until openai_event_clear */
    size_t text_len;
    bool finished;     /* the chunk carried a finish_reason */
    const char *code;  /* ERROR: static */
    char message[256]; /* ERROR */
    json_t *json;      /* owns text */
} openai_event_t;

/* Decodes one SSE event's data. Never fails: bad input gives OPENAI_EVENT_ERROR. */
void openai_event_decode(const char *data, size_t len, openai_event_t *event);
void openai_event_clear(openai_event_t *event);

/*  A short human message for a non-2xx answer: the provider's error.message when
    the body is OpenAI's error JSON, else the start of the body made printable. */
void openai_http_error_message(long status, const char *body, size_t len, char *out,
                               size_t out_size);

#endif
