/*  Unit tests of workers/stream/sse.c: the SSE grammar, and that any way of cutting
    the same bytes into chunks gives the same events. */
#include "../unit/check.h"
#include "sse.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char log[4096]; /* "type|data|id\n" per event */
    size_t len;
    int stop_after; /* return 1 after this many events (0: never) */
    int count;
} s_sink_t;

static int s_on_event(void *arg, const sse_event_t *ev)
{
    s_sink_t *sink = arg;
    /* strings are NUL-terminated at their lengths */
    CHECK(ev->type[ev->type_len] == 0 && ev->data[ev->data_len] == 0 && ev->id[ev->id_len] == 0);
    size_t room = sizeof sink->log - sink->len;
    int n = snprintf(sink->log + sink->len, room, "%.*s|%.*s|%.*s\n", (int)ev->type_len, ev->type,
                     (int)ev->data_len, ev->data, (int)ev->id_len, ev->id);
    if (n > 0 && (size_t)n < room)
        sink->len += (size_t)n;
    sink->count++;
    return sink->stop_after && sink->count >= sink->stop_after ? 1 : 0;
}

/* Parses text in chunks of size chunk (0: one chunk); returns the event log. */
static const char *s_parse(const char *text, size_t chunk, s_sink_t *sink, int *rc, bool *pending)
{
    memset(sink, 0, sizeof *sink);
    sse_parser_t *p = sse_parser_new(1024, s_on_event, sink);
    size_t len = strlen(text);
    size_t step = chunk ? chunk : (len ? len : 1);
    *rc = 0;
    for (size_t i = 0; i < len && *rc == 0; i += step) {
        size_t n = len - i < step ? len - i : step;
        const char *why = NULL;
        *rc = sse_parser_feed(p, text + i, n, &why);
        if (*rc == -1)
            CHECK(why != NULL);
    }
    *pending = sse_parser_pending(p);
    sse_parser_destroy(&p);
    CHECK(p == NULL);
    return sink->log;
}

static void s_expect(const char *text, const char *events, bool pending_expected)
{
    /* every chunking of the input gives the same result */
    for (size_t chunk = 0; chunk <= 7; chunk++) {
        s_sink_t sink;
        int rc;
        bool pending;
        const char *got = s_parse(text, chunk, &sink, &rc, &pending);
        CHECK(rc == 0);
        if (strcmp(got, events) != 0) {
            fprintf(stderr, "chunk %zu: input %s\n got: %s\nwant: %s\n", chunk, text, got, events);
            check_failures++;
        }
        CHECK(pending == pending_expected);
    }
}

int main(void)
{
    /* the basics */
    s_expect("data: hello\n\n", "message|hello|\n", false);
    s_expect("data:hello\n\n", "message|hello|\n", false); /* no space after colon */
    s_expect("data:  two\n\n", "message| two|\n", false);  /* only one space removed */
    s_expect("data: a\ndata: b\n\n", "message|a\nb|\n", false);
    s_expect("event: delta\ndata: x\n\n", "delta|x|\n", false);
    s_expect("data: x\nid: 7\n\ndata: y\n\n", "message|x|7\nmessage|y|7\n", false);
    /* line endings: CRLF, CR, LF, mixed; CRLF may be cut between CR and LF */
    s_expect("data: a\r\n\r\ndata: b\r\rdata: c\n\n", "message|a|\nmessage|b|\nmessage|c|\n",
             false);
    /* comments and unknown fields are ignored; retry is ignored */
    s_expect(": keep-alive\n\nfoo: bar\nretry: 10\ndata: z\n\n", "message|z|\n", false);
    /* empty data line dispatches an empty event */
    s_expect("data\n\n", "message||\n", false);
    s_expect("data:\n\n", "message||\n", false);
    /* an event with no data is not dispatched, and its type does not leak */
    s_expect("event: x\n\ndata: y\n\n", "message|y|\n", false);
    /* a BOM at the very start is skipped */
    s_expect("\xEF\xBB\xBF"
             "data: b\n\n",
             "message|b|\n", false);
    /* a truncated stream: the last event is not dispatched, and pending says so */
    s_expect("data: a\n\ndata: b\n", "message|a|\n", true);
    s_expect("data: a\n\ndata: b", "message|a|\n", true);
    /* OpenAI's shape */
    s_expect("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
             "message|{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}|\nmessage|[DONE]|\n", false);

    /* the handler can stop the parser; later feeds return the same value */
    {
        s_sink_t sink = {.stop_after = 1};
        sse_parser_t *p = sse_parser_new(1024, s_on_event, &sink);
        const char *text = "data: a\n\ndata: b\n\n";
        CHECK(sse_parser_feed(p, text, strlen(text), NULL) == 1);
        CHECK(sink.count == 1);
        CHECK(sse_parser_feed(p, text, strlen(text), NULL) == 1);
        CHECK(sink.count == 1);
        sse_parser_destroy(&p);
    }
    /* limits: a long line, or long data over many lines, stops with a reason */
    {
        s_sink_t sink = {0};
        sse_parser_t *p = sse_parser_new(16, s_on_event, &sink);
        const char *why = NULL;
        const char *line = "data: 0123456789abcdefgh\n\n";
        CHECK(sse_parser_feed(p, line, strlen(line), &why) == -1);
        CHECK(why && strstr(why, "line"));
        CHECK(sink.count == 0);
        CHECK(sse_parser_feed(p, "\n", 1, &why) == -1);
        sse_parser_destroy(&p);

        memset(&sink, 0, sizeof sink);
        p = sse_parser_new(16, s_on_event, &sink);
        const char *many = "data: 01234\ndata: 56789\ndata: abcde\n\n";
        why = NULL;
        CHECK(sse_parser_feed(p, many, strlen(many), &why) == -1);
        CHECK(why && strstr(why, "data"));
        sse_parser_destroy(&p);
    }
    /* NUL bytes inside data are kept as bytes */
    {
        s_sink_t sink = {0};
        sse_parser_t *p = sse_parser_new(64, s_on_event, &sink);
        const char text[] = "data: a\0b\n\n";
        CHECK(sse_parser_feed(p, text, sizeof text - 1, NULL) == 0);
        CHECK(sink.count == 1);
        CHECK(sse_parser_events(p) == 1);
        sse_parser_destroy(&p);
    }
    CHECK(sse_parser_new(0, s_on_event, NULL) == NULL);
    CHECK(sse_parser_new(10, NULL, NULL) == NULL);
    sse_parser_destroy(NULL);
    CHECK_DONE();
}
