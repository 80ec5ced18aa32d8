/*  Unit tests of the stream worker's pure pieces: the timer heap, the echo
    provider's words and deltas, OpenAI event decoding and request bodies, and the
    journal (parsing, and adoption of a dead worker's file). */
#include "../unit/check.h"
#include "echo.h"
#include "journal.h"
#include "openai.h"
#include "timers.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- timers */

typedef struct {
    int order[64];
    int n;
    timers_t *timers;
    timers_entry_t *rearm; /* set again from inside its own callback */
} s_log_t;

typedef struct {
    s_log_t *log;
    int id;
    timers_entry_t entry;
} s_tmr_t;

static void s_fire(void *arg)
{
    s_tmr_t *t = arg;
    t->log->order[t->log->n++] = t->id;
    if (t->log->rearm == &t->entry) {
        t->log->rearm = NULL;
        timers_set(t->log->timers, &t->entry, 1000, s_fire, t);
    }
}

static void s_test_timers(void)
{
    timers_t *timers = timers_new(NULL);
    s_log_t log = {.timers = timers};
    s_tmr_t t[40];
    /* a scrambled order of deadlines comes out sorted */
    for (int i = 0; i < 40; i++) {
        t[i] = (s_tmr_t){.log = &log, .id = i};
        timers_set(timers, &t[i].entry, (i * 7919) % 40, s_fire, &t[i]);
    }
    CHECK(timers_count(timers) == 40);
    CHECK(timers_next(timers) == 0);
    /* clear some, move one earlier and one later */
    timers_clear(timers, &t[3].entry);
    timers_clear(timers, &t[3].entry); /* twice is harmless */
    CHECK(!timers_armed(&t[3].entry));
    timers_set(timers, &t[5].entry, -5, s_fire, &t[5]);
    timers_set(timers, &t[6].entry, 500, s_fire, &t[6]);
    CHECK(timers_next(timers) == -5);
    CHECK(timers_run(timers, 100) == 38);
    int64_t prev = -100;
    bool sorted = true;
    for (int i = 0; i < log.n; i++) {
        int64_t when = t[log.order[i]].entry.when;
        sorted = sorted && when >= prev;
        prev = when;
        CHECK(log.order[i] != 3 && log.order[i] != 6);
    }
    CHECK(sorted);
    CHECK(log.order[0] == 5);
    CHECK(timers_count(timers) == 1);
    /* a callback may set its own entry again */
    log.n = 0;
    log.rearm = &t[6].entry;
    CHECK(timers_run(timers, 600) == 1);
    CHECK(timers_armed(&t[6].entry) && t[6].entry.when == 1000);
    CHECK(timers_run(timers, 999) == 0);
    CHECK(timers_run(timers, 1000) == 1);
    CHECK(timers_next(timers) == -1);
    timers_destroy(&timers);
    CHECK(timers == NULL);
}

/* ---------------------------------------------------------------- echo */

static void s_test_echo_words(void)
{
    const char *text = "  hello \t world\nfoo  ";
    size_t pos = 0, start, len;
    const char *want[] = {"hello", "world", "foo"};
    for (int i = 0; i < 3; i++) {
        CHECK(echo_next_word(text, strlen(text), &pos, &start, &len));
        CHECK(len == strlen(want[i]) && memcmp(text + start, want[i], len) == 0);
    }
    CHECK(!echo_next_word(text, strlen(text), &pos, &start, &len));
    pos = 0;
    CHECK(!echo_next_word("   ", 3, &pos, &start, &len));
    pos = 0;
    CHECK(!echo_next_word("", 0, &pos, &start, &len));
    /* UTF-8 bytes are word bytes */
    pos = 0;
    CHECK(echo_next_word("\xe4\xbd\xa0\xe5\xa5\xbd x", 8, &pos, &start, &len) && len == 6);
}

typedef struct {
    char text[256];
    int deltas;
    int done;
    int errors;
    int stop_at; /* on_delta returns -1 at this delta (0: never) */
} s_echo_sink_t;

static int s_echo_delta(void *arg, const char *text, size_t len)
{
    s_echo_sink_t *s = arg;
    strncat(s->text, text, len);
    s->deltas++;
    return s->stop_at && s->deltas == s->stop_at ? -1 : 0;
}

static void s_echo_done(void *arg)
{
    ((s_echo_sink_t *)arg)->done++;
}

static void s_echo_error(void *arg, const char *code, const char *message)
{
    (void)code;
    (void)message;
    ((s_echo_sink_t *)arg)->errors++;
}

static const provider_events_t s_echo_events = {s_echo_delta, s_echo_done, s_echo_error};

static void s_test_echo_provider(void)
{
    timers_t *timers = timers_new(NULL);
    s_echo_sink_t sink = {0};
    const char *content = "one  two\tthree";
    provider_t *p = echo_start(timers, 0, content, strlen(content), &s_echo_events, &sink);
    CHECK(p != NULL);
    CHECK(sink.deltas == 0); /* nothing inside echo_start */
    for (int i = 0; i < 10 && !sink.done; i++)
        timers_run(timers, INT64_MAX / 2);
    CHECK(strcmp(sink.text, "one two three") == 0);
    CHECK(sink.deltas == 3 && sink.done == 1 && sink.errors == 0);
    provider_destroy(&p);
    CHECK(p == NULL);

    /* stopped from on_delta: nothing more comes */
    memset(&sink, 0, sizeof sink);
    sink.stop_at = 2;
    p = echo_start(timers, 0, content, strlen(content), &s_echo_events, &sink);
    for (int i = 0; i < 10; i++)
        timers_run(timers, INT64_MAX / 2);
    CHECK(sink.deltas == 2 && sink.done == 0 && sink.errors == 0);
    provider_destroy(&p);

    /* destroyed while running: its timer goes with it, no callback afterwards */
    memset(&sink, 0, sizeof sink);
    p = echo_start(timers, 0, content, strlen(content), &s_echo_events, &sink);
    CHECK(timers_count(timers) == 1);
    provider_destroy(&p);
    CHECK(timers_count(timers) == 0);
    for (int i = 0; i < 10; i++)
        timers_run(timers, INT64_MAX / 2);
    CHECK(sink.deltas == 0 && sink.done == 0);

    /* only spaces: done without a delta */
    memset(&sink, 0, sizeof sink);
    p = echo_start(timers, 0, "   ", 3, &s_echo_events, &sink);
    timers_run(timers, INT64_MAX / 2);
    CHECK(sink.deltas == 0 && sink.done == 1);
    provider_destroy(&p);
    CHECK(timers_count(timers) == 0);
    timers_destroy(&timers);
}

/* ---------------------------------------------------------------- openai */

static void s_decode(const char *data, openai_event_t *ev)
{
    openai_event_decode(data, strlen(data), ev);
}

static void s_test_openai(void)
{
    openai_event_t ev;
    s_decode("[DONE]", &ev);
    CHECK(ev.kind == OPENAI_EVENT_DONE);
    openai_event_clear(&ev);
    s_decode(" [DONE] ", &ev);
    CHECK(ev.kind == OPENAI_EVENT_DONE);
    openai_event_clear(&ev);

    s_decode("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\u00e9\"},"
             "\"finish_reason\":null}]}",
             &ev);
    CHECK(ev.kind == OPENAI_EVENT_DELTA && ev.text_len == 5 &&
          memcmp(ev.text, "Hel\xc3\xa9", 5) == 0 && !ev.finished);
    openai_event_clear(&ev);

    s_decode("{\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}", &ev);
    CHECK(ev.kind == OPENAI_EVENT_SKIP);
    openai_event_clear(&ev);
    s_decode("{\"choices\":[{\"delta\":{\"content\":null}}]}", &ev);
    CHECK(ev.kind == OPENAI_EVENT_SKIP);
    openai_event_clear(&ev);
    s_decode("{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", &ev);
    CHECK(ev.kind == OPENAI_EVENT_SKIP && ev.finished);
    openai_event_clear(&ev);
    s_decode("{\"choices\":[],\"usage\":{\"total_tokens\":3}}", &ev);
    CHECK(ev.kind == OPENAI_EVENT_SKIP);
    openai_event_clear(&ev);

    const char *bad[] = {
        "{not json",
        "[1,2]",
        "{\"choices\":3}",
        "{}",
        "{\"choices\":[7]}",
        "{\"choices\":[{\"delta\":5}]}",
        "{\"choices\":[{\"delta\":{\"content\":5}}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":1}]}",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_decode(bad[i], &ev);
        CHECK(ev.kind == OPENAI_EVENT_ERROR && strcmp(ev.code, "provider_bad_event") == 0 &&
              ev.message[0]);
        openai_event_clear(&ev);
    }
    s_decode("{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}", &ev);
    CHECK(ev.kind == OPENAI_EVENT_ERROR && strcmp(ev.code, "provider_error") == 0 &&
          strstr(ev.message, "overloaded"));
    openai_event_clear(&ev);

    /* request body */
    provider_message_t msgs[] = {{"user", "hi", 2}, {"assistant", "hello", 5}, {"user", "q", 1}};
    char *body = openai_request_body("m1", "be brief", msgs, 3);
    CHECK(body && strcmp(body, "{\"model\":\"m1\",\"stream\":true,\"messages\":["
                               "{\"role\":\"system\",\"content\":\"be brief\"},"
                               "{\"role\":\"user\",\"content\":\"hi\"},"
                               "{\"role\":\"assistant\",\"content\":\"hello\"},"
                               "{\"role\":\"user\",\"content\":\"q\"}]}") == 0);
    free(body);
    provider_message_t invalid[] = {{"user", "\xff\xfe", 2}};
    CHECK(openai_request_body("m1", NULL, invalid, 1) == NULL);

    /* HTTP error messages */
    char msg[200];
    const char *json = "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate\"}}";
    openai_http_error_message(429, json, strlen(json), msg, sizeof msg);
    CHECK(strcmp(msg, "the provider answered HTTP 429: Rate limit reached") == 0);
    openai_http_error_message(500, "oops\x01\n", 6, msg, sizeof msg);
    CHECK(strcmp(msg, "the provider answered HTTP 500: oops? ") == 0);
    openai_http_error_message(502, NULL, 0, msg, sizeof msg);
    CHECK(strcmp(msg, "the provider answered HTTP 502") == 0);
}

/* ---------------------------------------------------------------- journal */

static void s_collect(void *arg, const journal_entry_t *e)
{
    int64_t *ids = arg;
    for (int i = 0; i < 8; i++)
        if (!ids[i]) {
            ids[i] = e->message_id;
            break;
        }
}

static void s_test_journal(void)
{
    const char *text = "B 1 10 100 1000\nB 2 20 200 2000\nE 1\nB 3 30 300 3000\nE 9\nB 4 4";
    journal_entry_t *list = NULL;
    size_t n = journal_parse(text, strlen(text), &list);
    CHECK(n == 2);
    CHECK(list && list[0].message_id == 2 && list[0].conversation_id == 20 &&
          list[0].user_id == 200 && list[0].device_id == 2000 && list[1].message_id == 3);
    free(list);
    CHECK(journal_parse("garbage\nB x\nE\n", 15, &list) == 0 && list == NULL);

    char dir[] = "/tmp/sluice-journal-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char why[256];
    /* a "dead worker": a child process that writes its journal and exits */
    pid_t pid = fork();
    if (pid == 0) {
        journal_t *j = journal_open(dir, "dead/one", why, sizeof why);
        journal_entry_t a = {41, 1, 2, 3}, b = {42, 1, 2, 3};
        if (!j || journal_begin(j, &a) || journal_begin(j, &b) || journal_end(j, 41))
            _exit(1);
        _exit(0); /* no journal_close: like a crash, the lock just goes away */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    journal_t *live = journal_open(dir, "live", why, sizeof why);
    CHECK(live != NULL);
    /* a journal held by a live owner is never adopted: open a second one here
       (flock is per open file, so our own second journal counts as another owner) */
    journal_t *other = journal_open(dir, "other", why, sizeof why);
    journal_entry_t c = {77, 1, 2, 3};
    CHECK(journal_begin(other, &c) == 0);
    int64_t ids[8] = {0};
    CHECK(journal_adopt(live, s_collect, ids) == 1);
    CHECK(ids[0] == 42 && ids[1] == 0);
    CHECK(journal_open_count(live) == 1);
    CHECK(journal_adopt(live, s_collect, ids) == 0); /* the dead file is gone */
    CHECK(journal_end(live, 42) == 0);
    CHECK(journal_open_count(live) == 0);
    char path[512];
    snprintf(path, sizeof path, "%s", journal_path(live));
    journal_close(&live);
    struct stat st;
    CHECK(stat(path, &st) != 0); /* empty journals are removed at close */
    snprintf(path, sizeof path, "%s", journal_path(other));
    journal_close(&other);
    CHECK(stat(path, &st) == 0); /* one with open entries stays for adoption */
    journal_t *last = journal_open(dir, "last", why, sizeof why);
    memset(ids, 0, sizeof ids);
    CHECK(journal_adopt(last, s_collect, ids) == 1 && ids[0] == 77);
    journal_end(last, 77);
    journal_close(&last);
    CHECK(rmdir(dir) == 0); /* nothing left behind */
}

int main(void)
{
    s_test_timers();
    s_test_echo_words();
    s_test_echo_provider();
    s_test_openai();
    s_test_journal();
    CHECK_DONE();
}
