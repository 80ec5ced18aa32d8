/*  libFuzzer target: a provider's response body through the SSE parser and the
    OpenAI chunk decoder, as workers/stream/openai.c feeds them. The first byte picks
    the chunk size (1-256), so the fuzzer also varies where the body is cut (inside a
    line, between CR and LF, inside UTF-8). Checks: the same bytes cut differently
    give the same events; every refusal carries a reason; a decoded delta has the
    length it claims. */
#include "openai.h"
#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hash; /* of every event's type and data, in order */
    size_t events;
} s_digest_t;

static uint64_t s_mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return (h ^ n) * 0x100000001b3ULL;
}

static int s_on_event(void *arg, const sse_event_t *ev)
{
    s_digest_t *d = arg;
    if (ev->data[ev->data_len] != 0 || ev->type[ev->type_len] != 0)
        abort(); /* the parser promises C strings */
    d->hash = s_mix(d->hash, ev->type, ev->type_len);
    d->hash = s_mix(d->hash, ev->data, ev->data_len);
    d->events++;
    openai_event_t oe;
    openai_event_decode(ev->data, ev->data_len, &oe);
    if (oe.kind == OPENAI_EVENT_DELTA && (oe.text_len == 0 || !oe.text))
        abort();
    if (oe.kind == OPENAI_EVENT_ERROR && (!oe.code || !oe.message[0]))
        abort();
    openai_event_clear(&oe);
    return 0;
}

static int s_run(const uint8_t *data, size_t size, size_t chunk, s_digest_t *d)
{
    memset(d, 0, sizeof *d);
    d->hash = 0xcbf29ce484222325ULL;
    sse_parser_t *p = sse_parser_new(4096, s_on_event, d);
    int rc = 0;
    for (size_t i = 0; i < size && rc == 0; i += chunk) {
        const char *why = NULL;
        size_t n = size - i < chunk ? size - i : chunk;
        rc = sse_parser_feed(p, data + i, n, &why);
        if (rc == -1 && !why)
            abort();
    }
    sse_parser_destroy(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    s_digest_t cut, whole;
    int rc_cut = s_run(data + 1, size - 1, chunk, &cut);
    int rc_whole = s_run(data + 1, size - 1, size, &whole);
    if (rc_cut == 0 && rc_whole == 0 && (cut.hash != whole.hash || cut.events != whole.events))
        abort(); /* chunking changed the events */
    char msg[300];
    openai_http_error_message(429, (const char *)data + 1, size - 1, msg, sizeof msg);
    return 0;
}
