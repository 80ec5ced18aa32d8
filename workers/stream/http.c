/*  http.c - libcurl multi socket interface on a zloop. See http.h. */
#include "http.h"
#include "clock.h"
#include "slog.h"

#include <stdlib.h>

/* One running transfer, found through CURLOPT_PRIVATE. */
typedef struct s_transfer_t {
    CURL *easy;
    http_done_fn *done;
    void *arg;
    struct s_transfer_t *prev, *next; /* every running transfer, for http_destroy */
} s_transfer_t;

/* What we told zloop about one of curl's sockets (curl_multi_assign). */
typedef struct {
    short events; /* ZMQ_POLLIN / ZMQ_POLLOUT currently polled */
} s_socket_t;

struct http_t {
    CURLM *multi;
    zloop_t *loop;
    timers_t *timers;
    timers_entry_t timeout;  /* curl's one timeout */
    s_transfer_t *transfers; /* running, newest first */
    size_t active;
};

static void s_unlink(http_t *self, s_transfer_t *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        self->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    self->active--;
}

/* Hands every finished transfer to its owner. Runs after curl returned to us, so
   an owner may clean its handle up or start another transfer from done. */
static void s_check_done(http_t *self)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        s_transfer_t *t = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(self->multi, easy);
        if (!t)
            continue;
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        s_unlink(self, t);
        http_done_fn *done = t->done;
        void *arg = t->arg;
        free(t);
        done(arg, result);
    }
}

static int s_on_socket(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    http_t *self = arg;
    int flags = 0;
    if (item->revents & ZMQ_POLLIN)
        flags |= CURL_CSELECT_IN;
    if (item->revents & ZMQ_POLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (item->revents & ZMQ_POLLERR)
        flags |= CURL_CSELECT_ERR;
    int running;
    /* zloop may call us for a socket curl has just dropped (its poll set is rebuilt
       lazily): curl ignores a socket it does not know */
    curl_multi_socket_action(self->multi, item->fd, flags, &running);
    s_check_done(self);
    return 0;
}

static int s_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    http_t *self = userp;
    s_socket_t *sk = socketp;
    zmq_pollitem_t item = {NULL, fd, 0, 0};
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            zloop_poller_end(self->loop, &item);
            free(sk);
        }
        return 0;
    }
    short events = (short)(((what & CURL_POLL_IN) ? ZMQ_POLLIN : 0) |
                           ((what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
    if (!sk) {
        sk = calloc(1, sizeof *sk);
        if (!sk)
            return -1;
        curl_multi_assign(self->multi, fd, sk);
    } else if (sk->events == events) {
        return 0;
    } else {
        zloop_poller_end(self->loop, &item);
    }
    item.events = events;
    if (zloop_poller(self->loop, &item, s_on_socket, self) != 0) {
        slog_error("http: cannot poll socket %d", (int)fd);
        return -1;
    }
    /* errors go to curl (CURL_CSELECT_ERR), which fails that one transfer; an
       intolerant poller would be dropped silently and the transfer would hang */
    zloop_poller_set_tolerant(self->loop, &item);
    sk->events = events;
    return 0;
}

static void s_on_timeout(void *arg)
{
    http_t *self = arg;
    int running;
    curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(self);
}

/* curl asks for one timeout at a time; we never call curl from inside it. */
static int s_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    http_t *self = userp;
    if (timeout_ms < 0)
        timers_clear(self->timers, &self->timeout);
    else
        timers_set(self->timers, &self->timeout, clock_now_ms() + timeout_ms, s_on_timeout, self);
    return 0;
}

http_t *http_new(zloop_t *loop, timers_t *timers)
{
    http_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->loop = loop;
    self->timers = timers;
    self->multi = curl_multi_init();
    if (!self->multi) {
        free(self);
        return NULL;
    }
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    return self;
}

void http_destroy(http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    http_t *self = *self_p;
    while (self->transfers)
        http_abort(self, self->transfers->easy);
    timers_clear(self->timers, &self->timeout);
    curl_multi_cleanup(self->multi);
    free(self);
    *self_p = NULL;
}

int http_start(http_t *self, CURL *easy, http_done_fn *done, void *arg)
{
    s_transfer_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->easy = easy;
    t->done = done;
    t->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(self->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(t);
        return -1;
    }
    t->next = self->transfers;
    if (t->next)
        t->next->prev = t;
    self->transfers = t;
    self->active++;
    return 0;
}

void http_abort(http_t *self, CURL *easy)
{
    s_transfer_t *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    if (!t)
        return;
    curl_multi_remove_handle(self->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    s_unlink(self, t);
    free(t);
}

size_t http_active(const http_t *self)
{
    return self->active;
}
