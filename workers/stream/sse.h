/*  sse.h - an incremental Server-Sent Events parser (WHATWG HTML, "event stream
    interpretation"), pure: bytes in, events out, no I/O.

    A provider's HTTP body arrives in chunks cut anywhere - inside a line, between a
    CR and its LF, inside a UTF-8 sequence. sse_parser_feed() takes each chunk as it
    comes and calls back once per complete event (a blank line after one or more
    "data:" lines). Lines end with CRLF, LF or CR; a leading UTF-8 BOM is skipped;
    ":" lines are comments; "event", "data", "id" and "retry" are the fields, others
    are ignored. An event still incomplete when the stream ends is dropped (the spec's
    rule), and sse_parser_pending() tells the caller that happened.

    The parser never trusts the peer: a line or an event's data above max_event bytes
    stops it with a reason, instead of growing without bound.
*/
#ifndef SLUICE_SSE_H
#define SLUICE_SSE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sse_parser_t sse_parser_t;

/* One dispatched event. Strings are NUL-terminated and valid only during the call. */
typedef struct {
    const char *type; /* "message" unless an "event:" line named it */
    size_t type_len;
    const char *data; /* the data lines joined with "\n" */
    size_t data_len;
    const char *id; /* last event id seen so far ("" when none) */
    size_t id_len;
} sse_event_t;

/* Returns 0 to go on; anything else stops the parser and is returned by feed. */
typedef int(sse_event_fn)(void *arg, const sse_event_t *event);

/* max_event: the largest line and the largest event data accepted, in bytes. */
sse_parser_t *sse_parser_new(size_t max_event, sse_event_fn *fn, void *arg);
void sse_parser_destroy(sse_parser_t **self_p);

/*  Parses size more bytes. Returns 0 when all were consumed; -1 when the input broke
    a limit (*reason set); or the callback's non-zero value. After a non-zero return
    the parser is stopped and every later feed returns the same value. */
int sse_parser_feed(sse_parser_t *self, const void *data, size_t size, const char **reason);

/* True when bytes of an event not yet dispatched are held (a truncated stream). */
bool sse_parser_pending(const sse_parser_t *self);

/* Events dispatched so far. */
size_t sse_parser_events(const sse_parser_t *self);

#endif
