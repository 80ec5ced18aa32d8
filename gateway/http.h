/*  http.h - one HTTP request as a small actor: head -> (body) -> token check ->
    one SMP request -> response, written as libwebsockets lets us.

    The request owns nothing of the database and nothing of another request: if
    the client goes away, its pending SMP call is forgotten (a late reply is
    dropped by upstream); a chat answer (chat.generate) is also cancelled (SMP
    CANCEL), so its worker stops and stores what it has. A chat answer with
    "stream": true is written as Server-Sent Events while it is made.
*/
#ifndef SLUICE_GATEWAY_HTTP_H
#define SLUICE_GATEWAY_HTTP_H

#include "gateway.h"

#include <stddef.h>

struct lws;
typedef struct http_req_t http_req_t;

/* libwebsockets events of an HTTP transaction (server.c calls these). Each
   returns what the libwebsockets callback returns: 0, or -1 to close. */
int http_on_request(gw_t *gw, struct lws *wsi, http_req_t **req_p, const char *path);
int http_on_body(http_req_t *req, const void *data, size_t len);
int http_on_body_done(http_req_t *req);
int http_on_writeable(http_req_t **req_p);
void http_on_closed(http_req_t **req_p);

/* Every janitor tick: 408 to request bodies past their deadline (body_timeout_ms,
   body_min_rate); keep-alive comments on chat streams that were silent for
   sse_keepalive_s. */
void http_janitor(gw_t *gw, int64_t now_ms);

/*  The drain is over: every open chat stream gets its last event, error
    `unavailable` (where to read the answer back), and is closed once that is
    written. The answers themselves are not cancelled: their workers finish and
    store them. */
void http_end_streams(gw_t *gw);

/* A fresh X-Request-Id (hex, unique within this process and unlikely across). */
void http_new_request_id(gw_t *gw, char out[40]);

/*  A complete HTTP/1.1 error response with a JSON error body and Connection:
    close, for answers written outside libwebsockets' HTTP flow (the listener's
    refusals, a refused upgrade). retry_after_s > 0 adds Retry-After. Returns the
    length written into buf (truncated to size). */
size_t http_format_error(char *buf, size_t size, int status, const char *code, const char *message,
                         const char *request_id, int retry_after_s);

#endif
