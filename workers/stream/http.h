/*  http.h - libcurl's multi interface driven by the process's zloop: every
    transfer's sockets are zloop pollers (CURLMOPT_SOCKETFUNCTION) and curl's one
    timeout is a timers.h entry (CURLMOPT_TIMERFUNCTION), so thousands of provider
    streams share the loop that also serves the broker, with no thread.

    A transfer is a CURL easy handle set up by its owner (URL, headers, write
    callback); http_start adds it and http_abort takes it back. When curl finishes
    one (done, failed or timed out), the owner's done callback runs once, from the
    loop - never from inside another curl callback - with the handle already
    removed from the multi handle, so it may clean the handle up there.
*/
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include "timers.h"

#include <curl/curl.h>
#include <czmq.h>

typedef struct http_t http_t;
typedef void(http_done_fn)(void *arg, CURLcode result);

http_t *http_new(zloop_t *loop, timers_t *timers);
/* Aborts transfers still running without calling their done callbacks. */
void http_destroy(http_t **self_p);

/* Adds easy (which must not use CURLOPT_PRIVATE). Returns 0 or -1. */
int http_start(http_t *self, CURL *easy, http_done_fn *done, void *arg);

/*  Takes easy out of the multi handle without calling its done callback. Not from
    inside one of easy's own curl callbacks (make the write callback return 0 and
    wait for done instead). */
void http_abort(http_t *self, CURL *easy);

size_t http_active(const http_t *self);

#endif
