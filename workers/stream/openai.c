/*  openai.c - the OpenAI-compatible streaming provider. See openai.h. */
#include "openai.h"
#include "clock.h"
#include "slog.h"
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_ERROR_BODY_MAX 4096 /* bytes of a non-2xx body kept for the message */

typedef struct {
    provider_t base; /* first: a provider_t* is an s_openai_t* */
    http_t *http;
    timers_t *timers;
    timers_entry_t idle; /* no byte for idle_timeout_ms */
    int64_t idle_timeout_ms;
    const provider_events_t *events;
    void *arg;
    CURL *easy;
    struct curl_slist *headers;
    char curl_error[CURL_ERROR_SIZE];
    sse_parser_t *sse;
    bool running;      /* in the multi handle */
    bool checked_head; /* status and content type looked at */
    bool head_ok;      /* 2xx and an event stream: the body is SSE */
    long status;
    char *error_body; /* a non-2xx body, up to S_ERROR_BODY_MAX */
    size_t error_len;
    bool seen_done;        /* [DONE] */
    bool seen_finish;      /* a chunk with finish_reason */
    bool stopped;          /* the actor stopped us from on_delta: no more events */
    const char *fail_code; /* an error found while reading, reported at the end */
    char fail_message[300];
} s_openai_t;

/* ---------------------------------------------------------------- pure parts */

char *openai_request_body(const char *model, const char *system_prompt,
                          const provider_message_t *messages, size_t count)
{
    json_t *list = json_array();
    json_t *root =
        json_pack("{s:s, s:b, s:o}", "model", model ? model : "", "stream", 1, "messages", list);
    if (!root)
        return NULL;
    bool ok = true;
    if (system_prompt && *system_prompt) {
        json_t *content = json_string(system_prompt);
        ok = content && json_array_append_new(list, json_pack("{s:s, s:o}", "role", "system",
                                                              "content", content)) == 0;
    }
    for (size_t i = 0; ok && i < count; i++) {
        json_t *content = json_stringn(messages[i].content, messages[i].content_len);
        if (!content) {
            ok = false; /* not UTF-8 */
            break;
        }
        ok = json_array_append_new(
                 list, json_pack("{s:s, s:o}", "role", messages[i].role, "content", content)) == 0;
    }
    char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return text;
}

static void s_event_error(openai_event_t *ev, const char *code, const char *fmt, const char *arg)
{
    ev->kind = OPENAI_EVENT_ERROR;
    ev->code = code;
    snprintf(ev->message, sizeof ev->message, fmt, arg);
}

void openai_event_decode(const char *data, size_t len, openai_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = OPENAI_EVENT_SKIP;
    size_t a = 0, b = len;
    while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\n' || data[a] == '\r'))
        a++;
    while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\n' ||
                     data[b - 1] == '\r'))
        b--;
    if (b - a == 6 && memcmp(data + a, "[DONE]", 6) == 0) {
        ev->kind = OPENAI_EVENT_DONE;
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    if (!root) {
        s_event_error(ev, "provider_bad_event", "malformed event from the provider: %s", jerr.text);
        return;
    }
    ev->json = root;
    if (!json_is_object(root)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: not a JSON object");
        return;
    }
    json_t *error = json_object_get(root, "error");
    if (error && !json_is_null(error)) {
        const char *msg = json_string_value(json_object_get(error, "message"));
        if (!msg)
            msg = json_string_value(error);
        s_event_error(ev, "provider_error", "the provider reported an error: %s",
                      msg ? msg : "(no message)");
        return;
    }
    json_t *choices = json_object_get(root, "choices");
    if (!json_is_array(choices)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: no \"choices\" array");
        return;
    }
    if (json_array_size(choices) == 0)
        return; /* e.g. the usage chunk at the end */
    json_t *choice = json_array_get(choices, 0);
    if (!json_is_object(choice)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: a choice is not an object");
        return;
    }
    json_t *finish = json_object_get(choice, "finish_reason");
    if (finish && !json_is_null(finish) && !json_is_string(finish)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: finish_reason is not a string");
        return;
    }
    ev->finished = json_is_string(finish);
    json_t *delta = json_object_get(choice, "delta");
    if (!delta || json_is_null(delta))
        return;
    if (!json_is_object(delta)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: delta is not an object");
        return;
    }
    json_t *content = json_object_get(delta, "content");
    if (!content || json_is_null(content))
        return;
    if (!json_is_string(content)) {
        s_event_error(ev, "provider_bad_event", "%s",
                      "malformed event from the provider: delta.content is not a string");
        return;
    }
    ev->text = json_string_value(content);
    ev->text_len = json_string_length(content);
    if (ev->text_len)
        ev->kind = OPENAI_EVENT_DELTA;
}

void openai_event_clear(openai_event_t *ev)
{
    json_decref(ev->json);
    ev->json = NULL;
    ev->text = NULL;
}

/* Printable ASCII only: a provider's body goes into logs and the stored error. */
static void s_printable(const char *in, size_t len, char *out, size_t out_size)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < out_size; i++) {
        unsigned char c = (unsigned char)in[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : (c == '\n' || c == '\t') ? ' ' : '?';
    }
    out[j] = 0;
}

void openai_http_error_message(long status, const char *body, size_t len, char *out,
                               size_t out_size)
{
    char detail[200] = "";
    json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = NULL;
    if (root) {
        json_t *error = json_object_get(root, "error");
        msg = json_string_value(json_object_get(error, "message"));
        if (!msg)
            msg = json_string_value(error);
        if (!msg)
            msg = json_string_value(json_object_get(root, "message"));
    }
    if (msg)
        s_printable(msg, strlen(msg), detail, sizeof detail);
    else
        s_printable(body, len, detail, sizeof detail);
    json_decref(root);
    snprintf(out, out_size, "the provider answered HTTP %ld%s%s", status, *detail ? ": " : "",
             detail);
}

/* ---------------------------------------------------------------- the stream */

static void s_fail(s_openai_t *self, const char *code, const char *message)
{
    if (self->fail_code)
        return; /* the first reason is the real one */
    self->fail_code = code;
    snprintf(self->fail_message, sizeof self->fail_message, "%s", message);
}

static int s_on_event(void *arg, const sse_event_t *event)
{
    s_openai_t *self = arg;
    if (self->seen_done)
        return 0;
    openai_event_t ev;
    openai_event_decode(event->data, event->data_len, &ev);
    int rc = 0;
    switch (ev.kind) {
    case OPENAI_EVENT_DONE:
        self->seen_done = true;
        rc = 1; /* nothing after [DONE] matters: end the transfer now */
        break;
    case OPENAI_EVENT_ERROR:
        s_fail(self, ev.code, ev.message);
        rc = 1;
        break;
    case OPENAI_EVENT_DELTA:
        if (self->events->on_delta(self->arg, ev.text, ev.text_len) != 0) {
            self->stopped = true;
            rc = 1;
        }
        break;
    case OPENAI_EVENT_SKIP:
        break;
    }
    if (ev.finished)
        self->seen_finish = true;
    openai_event_clear(&ev);
    return rc;
}

static void s_check_head(s_openai_t *self)
{
    self->checked_head = true;
    curl_easy_getinfo(self->easy, CURLINFO_RESPONSE_CODE, &self->status);
    char *type = NULL;
    curl_easy_getinfo(self->easy, CURLINFO_CONTENT_TYPE, &type);
    if (self->status < 200 || self->status > 299)
        return;
    if (type && strncasecmp(type, "text/event-stream", 17) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the provider answered HTTP %ld with Content-Type %.80s, not a stream of "
                 "events (text/event-stream)",
                 self->status, type);
        s_fail(self, "provider_bad_event", msg);
        return;
    }
    self->head_ok = true;
}

/* curl's write callback: returning anything but n ends the transfer, and the done
   callback then reports what was decided here. */
static void s_on_idle(void *arg);

static size_t s_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    s_openai_t *self = arg;
    size_t n = size * nmemb;
    timers_set(self->timers, &self->idle, clock_now_ms() + self->idle_timeout_ms, s_on_idle, self);
    if (!self->checked_head)
        s_check_head(self);
    if (!self->head_ok) {
        if (self->fail_code)
            return 0;
        size_t room = S_ERROR_BODY_MAX - self->error_len;
        size_t take = n < room ? n : room;
        if (take) {
            char *grown = realloc(self->error_body, self->error_len + take);
            if (!grown)
                return 0;
            self->error_body = grown;
            memcpy(self->error_body + self->error_len, data, take);
            self->error_len += take;
        }
        return n;
    }
    const char *why = NULL;
    int rc = sse_parser_feed(self->sse, data, n, &why);
    if (rc == -1) {
        char msg[200];
        snprintf(msg, sizeof msg, "malformed event stream from the provider: %s", why);
        s_fail(self, "provider_bad_event", msg);
    }
    return rc ? 0 : n;
}

static void s_report(s_openai_t *self, CURLcode result)
{
    const provider_events_t *events = self->events;
    void *arg = self->arg;
    char msg[400];
    if (self->stopped)
        return;
    if (self->seen_done) {
        events->on_done(arg);
        return;
    }
    if (self->fail_code) {
        events->on_error(arg, self->fail_code, self->fail_message);
        return;
    }
    if (result == CURLE_OK && self->checked_head && !self->head_ok) {
        openai_http_error_message(self->status, self->error_body, self->error_len, msg, sizeof msg);
        events->on_error(arg, "provider_http_error", msg);
        return;
    }
    if (result == CURLE_OK && !self->checked_head) {
        long status = 0;
        curl_easy_getinfo(self->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status < 200 || status > 299) {
            openai_http_error_message(status, NULL, 0, msg, sizeof msg);
            events->on_error(arg, "provider_http_error", msg);
        } else {
            events->on_error(arg, "provider_broken_stream",
                             "the provider answered with an empty body");
        }
        return;
    }
    if (result == CURLE_OK) {
        if (self->seen_finish) {
            events->on_done(arg); /* finish_reason without [DONE]: some servers do that */
            return;
        }
        snprintf(msg, sizeof msg, "the provider's stream ended before [DONE]%s",
                 sse_parser_pending(self->sse) ? ", in the middle of an event" : "");
        events->on_error(arg, "provider_broken_stream", msg);
        return;
    }
    const char *detail = self->curl_error[0] ? self->curl_error : curl_easy_strerror(result);
    const char *code = "provider_broken_stream";
    const char *what = "the provider's stream broke";
    if (result == CURLE_OPERATION_TIMEDOUT) {
        code = "provider_timeout";
        what = "the provider did not answer in time";
    } else if (result == CURLE_COULDNT_RESOLVE_HOST || result == CURLE_COULDNT_CONNECT ||
               result == CURLE_COULDNT_RESOLVE_PROXY) {
        code = "provider_unreachable";
        what = "cannot reach the provider";
    }
    snprintf(msg, sizeof msg, "%s: %s", what, detail);
    events->on_error(arg, code, msg);
}

static void s_on_done(void *arg, CURLcode result)
{
    s_openai_t *self = arg;
    self->running = false;
    timers_clear(self->timers, &self->idle);
    s_report(self, result); /* last: the actor may destroy us in there */
}

static void s_on_idle(void *arg)
{
    s_openai_t *self = arg;
    if (!self->running)
        return;
    http_abort(self->http, self->easy);
    self->running = false;
    char msg[120];
    snprintf(msg, sizeof msg, "the provider sent nothing for %lld ms",
             (long long)self->idle_timeout_ms);
    if (!self->stopped)
        self->events->on_error(self->arg, "provider_timeout", msg);
}

static void s_destroy(provider_t *base)
{
    s_openai_t *self = (s_openai_t *)base;
    timers_clear(self->timers, &self->idle);
    if (self->running)
        http_abort(self->http, self->easy);
    if (self->easy)
        curl_easy_cleanup(self->easy);
    curl_slist_free_all(self->headers);
    sse_parser_destroy(&self->sse);
    free(self->error_body);
    free(self);
}

static const provider_ops_t s_ops = {s_destroy};

provider_t *openai_start(http_t *http, timers_t *timers, const openai_settings_t *settings,
                         const provider_message_t *messages, size_t count,
                         const provider_events_t *events, void *arg, char *why, size_t why_size)
{
    char *body = openai_request_body(settings->model, settings->system_prompt, messages, count);
    if (!body) {
        snprintf(why, why_size, "the conversation is not valid UTF-8 text");
        return NULL;
    }
    s_openai_t *self = calloc(1, sizeof *self);
    if (!self) {
        free(body);
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    self->base.ops = &s_ops;
    self->http = http;
    self->timers = timers;
    self->idle_timeout_ms = settings->idle_timeout_ms;
    self->events = events;
    self->arg = arg;
    self->sse = sse_parser_new(settings->max_event_bytes, s_on_event, self);
    self->easy = curl_easy_init();
    if (!self->sse || !self->easy) {
        free(body);
        s_destroy(&self->base);
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    char url[2048];
    const char *base_url = settings->base_url;
    size_t n = strlen(base_url);
    while (n && base_url[n - 1] == '/')
        n--;
    snprintf(url, sizeof url, "%.*s/chat/completions", (int)n, base_url);
    self->headers = curl_slist_append(self->headers, "Content-Type: application/json");
    self->headers = curl_slist_append(self->headers, "Accept: text/event-stream");
    if (settings->api_key && *settings->api_key) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", settings->api_key);
        self->headers = curl_slist_append(self->headers, auth);
        memset(auth, 0, sizeof auth);
    }
    CURL *e = self->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, self->headers);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, self);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, self->curl_error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)settings->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice-streamworker/" SLUICE_VERSION);
    free(body);
    /* the first byte may take connect time plus a model's thinking time */
    timers_set(timers, &self->idle,
               clock_now_ms() + settings->connect_timeout_ms + settings->idle_timeout_ms, s_on_idle,
               self);
    if (http_start(http, e, s_on_done, self) != 0) {
        s_destroy(&self->base);
        snprintf(why, why_size, "cannot start the HTTP transfer");
        return NULL;
    }
    self->running = true;
    return &self->base;
}
