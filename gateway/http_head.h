/*  http_head.h - a small parser for the head of the first request on a connection.

    The listener looks at that head (peeked, not consumed) before libwebsockets
    gets the socket, because a WebSocket upgrade must be authenticated before the
    101 is sent and libwebsockets cannot wait for an asynchronous answer at that
    point. Pure and bounded: everything is copied into the struct, nothing is
    allocated; fuzzed by tests/fuzz/fuzz_gateway_head.c.
*/
#ifndef SLUICE_GATEWAY_HTTP_HEAD_H
#define SLUICE_GATEWAY_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_HEAD_PATH_MAX 256
#define HTTP_HEAD_QUERY_MAX 2048
#define HTTP_HEAD_ARGS_MAX 16
#define HTTP_HEAD_VALUE_MAX 640

typedef struct {
    size_t head_len; /* bytes up to and including the blank line */
    char method[8];
    char path[HTTP_HEAD_PATH_MAX];        /* %-decoded, without the query */
    char query[HTTP_HEAD_QUERY_MAX];      /* decoded fragments, NUL-separated */
    const char *args[HTTP_HEAD_ARGS_MAX]; /* into query: "name=value" */
    size_t nargs;
    bool upgrade_websocket; /* Upgrade: websocket */
    char authorization[HTTP_HEAD_VALUE_MAX];
    char request_id[HTTP_HEAD_VALUE_MAX];
} http_head_t;

typedef enum {
    HTTP_HEAD_OK = 0,          /* a complete head was parsed */
    HTTP_HEAD_INCOMPLETE = 1,  /* no blank line yet: wait for more bytes */
    HTTP_HEAD_MALFORMED = -1,  /* not an HTTP/1.x request head */
    HTTP_HEAD_TOO_BIG = -2,    /* well-formed so far, but a part does not fit the struct */
    HTTP_HEAD_BAD_ESCAPE = -3, /* a %-escape in the path or query is malformed or a NUL */
} http_head_result_t;

/* Parses buf[0..len). Fields too long for the struct give TOO_BIG rather than being
   truncated; unknown headers are skipped whatever their size. A bad %-escape is
   BAD_ESCAPE even when a part is also too big: libwebsockets would close such a
   request without a word, so the listener answers it. */
http_head_result_t http_head_parse(const char *buf, size_t len, http_head_t *out);

/* Whether buf[0..len), the first bytes of a connection, can still become an
   HTTP/1.x request line: a method of capital letters, a space, a target starting
   with '/' or '*' (then visible characters), a space, "HTTP/1.". False as soon as
   a byte rules it out, so bytes that are not HTTP are refused at once instead of
   waiting for a head that will never end. */
bool http_head_plausible(const char *buf, size_t len);

#define HTTP_HEAD_DECODE_NOSPACE (-1) /* the decoded text does not fit dst */
#define HTTP_HEAD_DECODE_ESCAPE (-2)  /* a malformed escape, or one that decodes to NUL */

/* %-decodes src[0..len) into dst (size dst_size, NUL-terminated); '+' becomes a
   space when plus is true. Returns the decoded length, or HTTP_HEAD_DECODE_NOSPACE
   or HTTP_HEAD_DECODE_ESCAPE (an escape error wins: the whole input is checked). */
long http_head_decode(const char *src, size_t len, char *dst, size_t dst_size, bool plus);

#endif
