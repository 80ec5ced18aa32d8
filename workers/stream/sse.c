/*  sse.c - incremental Server-Sent Events parser. See sse.h. */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

/* A growable byte buffer that keeps a NUL after its bytes, so the callback gets
   C strings without another copy. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} s_buf_t;

struct sse_parser_t {
    size_t max_event; /* limit for one line and for one event's data */
    sse_event_fn *fn; /* called once per dispatched event */
    void *arg;        /* for fn */
    s_buf_t line;     /* the line being read (no terminator) */
    s_buf_t data;     /* data buffer: each data line + "\n" */
    s_buf_t type;     /* event type buffer */
    s_buf_t id;       /* last event id buffer */
    bool skip_lf;     /* the previous chunk ended with CR: a leading LF is its pair */
    bool first_line;  /* a BOM may still come */
    int stopped;      /* non-zero once stopped: what every later feed returns */
    const char *why;  /* the reason when stopped == -1 */
    size_t events;    /* dispatched so far */
};

static int s_buf_append(s_buf_t *b, const char *p, size_t n, size_t max)
{
    if (n > max || b->len > max - n)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static int s_buf_set(s_buf_t *b, const char *p, size_t n, size_t max)
{
    b->len = 0;
    return s_buf_append(b, p, n, max);
}

sse_parser_t *sse_parser_new(size_t max_event, sse_event_fn *fn, void *arg)
{
    if (!fn || max_event == 0)
        return NULL;
    sse_parser_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->max_event = max_event;
    self->fn = fn;
    self->arg = arg;
    self->first_line = true;
    /* so every buffer is a valid empty C string from the start */
    if (s_buf_set(&self->id, "", 0, 1) != 0 || s_buf_set(&self->type, "", 0, 1) != 0) {
        sse_parser_destroy(&self);
        return NULL;
    }
    return self;
}

void sse_parser_destroy(sse_parser_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sse_parser_t *self = *self_p;
    free(self->line.data);
    free(self->data.data);
    free(self->type.data);
    free(self->id.data);
    free(self);
    *self_p = NULL;
}

static int s_stop(sse_parser_t *self, int rc, const char *why)
{
    self->stopped = rc;
    self->why = why;
    return rc;
}

/* Blank line: hand the event over, then start a new one. */
static int s_dispatch(sse_parser_t *self)
{
    if (self->data.len == 0) {
        self->type.len = 0;
        self->type.data[0] = 0;
        return 0;
    }
    self->data.data[--self->data.len] = 0; /* the last data line's "\n" */
    sse_event_t ev = {
        .type = self->type.len ? self->type.data : "message",
        .type_len = self->type.len ? self->type.len : 7,
        .data = self->data.data,
        .data_len = self->data.len,
        .id = self->id.data,
        .id_len = self->id.len,
    };
    self->events++;
    int rc = self->fn(self->arg, &ev);
    self->data.len = 0;
    self->data.data[0] = 0;
    self->type.len = 0;
    self->type.data[0] = 0;
    return rc ? s_stop(self, rc, "stopped by the event handler") : 0;
}

static bool s_field_is(const char *field, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(field, name, len) == 0;
}

static int s_line(sse_parser_t *self, const char *line, size_t len)
{
    if (self->first_line) {
        self->first_line = false;
        if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
            line += 3;
            len -= 3;
        }
    }
    if (len == 0)
        return s_dispatch(self);
    if (line[0] == ':')
        return 0; /* comment: keep-alives look like this */
    const char *colon = memchr(line, ':', len);
    size_t field_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = len - field_len - (colon ? 1 : 0);
    if (value_len && value[0] == ' ') {
        value++;
        value_len--;
    }
    if (s_field_is(line, field_len, "data")) {
        if (s_buf_append(&self->data, value, value_len, self->max_event) != 0 ||
            s_buf_append(&self->data, "\n", 1, self->max_event) != 0)
            return s_stop(self, -1, "event data larger than the limit");
    } else if (s_field_is(line, field_len, "event")) {
        if (s_buf_set(&self->type, value, value_len, self->max_event) != 0)
            return s_stop(self, -1, "event type larger than the limit");
    } else if (s_field_is(line, field_len, "id")) {
        if (!memchr(value, 0, value_len) &&
            s_buf_set(&self->id, value, value_len, self->max_event) != 0)
            return s_stop(self, -1, "event id larger than the limit");
    }
    /* "retry" and unknown fields: ignored (we never reconnect a provider stream) */
    return 0;
}

int sse_parser_feed(sse_parser_t *self, const void *data, size_t size, const char **reason)
{
    const char *p = data;
    const char *end = p + size;
    while (!self->stopped && p < end) {
        if (self->skip_lf) {
            self->skip_lf = false;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        /* the run up to the next CR or LF is copied in one go */
        const char *q = p;
        while (q < end && *q != '\r' && *q != '\n')
            q++;
        if (s_buf_append(&self->line, p, (size_t)(q - p), self->max_event) != 0) {
            s_stop(self, -1, "line longer than the limit");
            break;
        }
        if (q == end)
            break;
        self->skip_lf = *q == '\r';
        p = q + 1;
        int rc = s_line(self, self->line.data, self->line.len);
        self->line.len = 0;
        if (rc)
            break;
    }
    if (self->stopped == -1 && reason)
        *reason = self->why;
    return self->stopped;
}

bool sse_parser_pending(const sse_parser_t *self)
{
    return self->line.len > 0 || self->data.len > 0;
}

size_t sse_parser_events(const sse_parser_t *self)
{
    return self->events;
}
