/*  stream-load: the load client of tests/bench/stream-bench. Sends N chat.generate
    requests at once over one DEALER to a broker frontend and reads every PARTIAL and
    REPLY, timing each delta. Prints one JSON object: completed and failed streams
    (by status), deltas received, the gap between consecutive deltas of a stream
    (p50/p90/p99/max, ms), the time to the first delta, and the run's duration.

    stream-load --frontend EP --streams N --words W --user-id U --device-id D
                --conversations ID[,ID...] [--deadline-ms MS] [--timeout-s S]

    Written in C so that thousands of streams at 50 deltas a second each measure the
    server, not the client. */
#include "clock.h"
#include "mp.h"
#include "smp.h"

#include <czmq.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t sent_us;
    int64_t last_us;  /* last delta */
    int64_t first_us; /* first delta (0: none yet) */
    size_t deltas;
    size_t text_len; /* bytes of delta text */
    int status;      /* REPLY status, 0 while running */
    bool content_ok; /* the stored answer equals what was asked */
} s_stream_t;

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    const char *frontend = NULL, *convs = NULL;
    long streams = 100, words = 200, deadline_ms = 600000, timeout_s = 300;
    int64_t user_id = 0, device_id = 0;
    static struct option opts[] = {{"frontend", required_argument, 0, 'f'},
                                   {"streams", required_argument, 0, 'n'},
                                   {"words", required_argument, 0, 'w'},
                                   {"user-id", required_argument, 0, 'u'},
                                   {"device-id", required_argument, 0, 'd'},
                                   {"conversations", required_argument, 0, 'c'},
                                   {"deadline-ms", required_argument, 0, 'D'},
                                   {"timeout-s", required_argument, 0, 't'},
                                   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            frontend = optarg;
            break;
        case 'n':
            streams = atol(optarg);
            break;
        case 'w':
            words = atol(optarg);
            break;
        case 'u':
            user_id = atoll(optarg);
            break;
        case 'd':
            device_id = atoll(optarg);
            break;
        case 'c':
            convs = optarg;
            break;
        case 'D':
            deadline_ms = atol(optarg);
            break;
        case 't':
            timeout_s = atol(optarg);
            break;
        default:
            return 2;
        }
    }
    if (!frontend || !convs || streams <= 0 || words <= 0 || user_id <= 0 || device_id <= 0) {
        fprintf(stderr, "usage: stream-load --frontend EP --streams N --words W --user-id U "
                        "--device-id D --conversations ID[,ID...]\n");
        return 2;
    }
    int64_t conv[4096];
    size_t nconv = 0;
    char *list = strdup(convs);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && nconv < 4096;
         t = strtok_r(NULL, ",", &save))
        conv[nconv++] = atoll(t);
    free(list);

    /* every stream asks the same words, so every answer must be this text */
    size_t content_len = (size_t)words * 4 - 1;
    char *content = malloc(content_len + 1);
    for (long i = 0; i < words; i++)
        memcpy(content + i * 4, i + 1 < words ? "tok " : "tok", i + 1 < words ? 4 : 3);
    content[content_len] = 0;

    zsys_handler_set(NULL);
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    zsock_set_sndhwm(sock, 0);
    zsock_set_rcvhwm(sock, 0);
    zsock_set_linger(sock, 0);
    if (zsock_connect(sock, "%s", frontend) != 0) {
        fprintf(stderr, "stream-load: cannot connect to %s\n", frontend);
        return 1;
    }
    s_stream_t *s = calloc((size_t)streams, sizeof *s);
    size_t gap_cap = (size_t)streams * (size_t)words;
    double *gaps = malloc(gap_cap * sizeof *gaps);
    double *firsts = malloc((size_t)streams * sizeof *firsts);
    size_t ngaps = 0, nfirst = 0, deltas = 0, done = 0;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int64_t t0 = clock_now_us();
    for (long i = 0; i < streams; i++) {
        msgpack_sbuffer_clear(&buf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        mp_pack_kv_str(&pk, "op", "chat.generate");
        mp_pack_cstr(&pk, "auth");
        msgpack_pack_map(&pk, 2);
        mp_pack_kv_int(&pk, "user_id", user_id);
        mp_pack_kv_int(&pk, "device_id", device_id);
        mp_pack_cstr(&pk, "args");
        msgpack_pack_map(&pk, 2);
        mp_pack_kv_int(&pk, "conversation_id", conv[(size_t)i % nconv]);
        mp_pack_cstr(&pk, "content");
        mp_pack_strn(&pk, content, content_len);
        char rid[24];
        snprintf(rid, sizeof rid, "b%ld", i);
        smp_msg_t m = {.command = SMP_REQUEST,
                       .service = smp_bytes_str("chat"),
                       .request_id = smp_bytes_str(rid),
                       .deadline_ms = (uint32_t)deadline_ms,
                       .body = {(const uint8_t *)buf.data, buf.size}};
        zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
        s[i].sent_us = clock_now_us();
        zmsg_send(&msg, sock);
    }
    msgpack_zone *zone = msgpack_zone_new(8192);
    zpoller_t *poller = zpoller_new(sock, NULL);
    int64_t end_us = t0 + (int64_t)timeout_s * 1000000;
    while (done < (size_t)streams && clock_now_us() < end_us) {
        if (!zpoller_wait(poller, 1000))
            continue;
        zmsg_t *msg;
        while ((msg = zmsg_recv_nowait(sock))) {
            int64_t now = clock_now_us();
            smp_msg_t m;
            const char *why;
            msgpack_zone_clear(zone);
            if (smp_parse(msg, SMP_BROKER_TO_CLIENT, zone, &m, &why) == 0 &&
                m.request_id.size > 1 && m.request_id.data[0] == 'b') {
                char num[24];
                size_t n = m.request_id.size - 1 < 23 ? m.request_id.size - 1 : 23;
                memcpy(num, m.request_id.data + 1, n);
                num[n] = 0;
                long i = atol(num);
                if (i >= 0 && i < streams && !s[i].status) {
                    s_stream_t *st = &s[i];
                    const msgpack_object *data = mp_get(&m.body_obj, "data");
                    if (m.command == SMP_PARTIAL && mp_str_eq(mp_get(data, "event"), "delta")) {
                        const char *text;
                        size_t len;
                        if (mp_get_str(data, "text", &text, &len))
                            st->text_len += len;
                        if (st->deltas && ngaps < gap_cap)
                            gaps[ngaps++] = (double)(now - st->last_us) / 1000.0;
                        else if (!st->deltas)
                            firsts[nfirst++] = (double)(now - st->sent_us) / 1000.0;
                        st->last_us = now;
                        st->deltas++;
                        deltas++;
                    } else if (m.command == SMP_REPLY) {
                        st->status = m.status;
                        const char *text;
                        size_t len;
                        const msgpack_object *am = mp_get(data, "assistant_message");
                        st->content_ok = mp_get_str(am, "content", &text, &len) &&
                                         len == content_len && memcmp(text, content, len) == 0;
                        done++;
                    }
                }
            }
            zmsg_destroy(&msg);
        }
    }
    double duration = (double)(clock_now_us() - t0) / 1e6;
    size_t completed = 0, failed = 0, wrong = 0;
    size_t by_status[600] = {0};
    for (long i = 0; i < streams; i++) {
        if (s[i].status == 200 && s[i].content_ok && s[i].deltas == (size_t)words)
            completed++;
        else
            failed++;
        if (s[i].status == 200 && (!s[i].content_ok || s[i].deltas != (size_t)words))
            wrong++;
        if (s[i].status >= 0 && s[i].status < 600)
            by_status[s[i].status]++;
    }
    qsort(gaps, ngaps, sizeof *gaps, s_cmp);
    qsort(firsts, nfirst, sizeof *firsts, s_cmp);
    printf("{\"streams\": %ld, \"words\": %ld, \"completed\": %zu, \"failed\": %zu, "
           "\"wrong_content\": %zu, \"statuses\": {",
           streams, words, completed, failed, wrong);
    bool first = true;
    for (int st = 0; st < 600; st++)
        if (by_status[st]) {
            printf("%s\"%d\": %zu", first ? "" : ", ", st, by_status[st]);
            first = false;
        }
    printf("}, \"deltas\": %zu, \"gap_ms\": {\"p50\": %.2f, \"p90\": %.2f, \"p99\": %.2f, "
           "\"max\": %.2f}, \"first_delta_ms\": {\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}, "
           "\"duration_s\": %.2f}\n",
           deltas, s_pct(gaps, ngaps, 0.5), s_pct(gaps, ngaps, 0.9), s_pct(gaps, ngaps, 0.99),
           ngaps ? gaps[ngaps - 1] : 0.0, s_pct(firsts, nfirst, 0.5), s_pct(firsts, nfirst, 0.99),
           nfirst ? firsts[nfirst - 1] : 0.0, duration);
    zpoller_destroy(&poller);
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&buf);
    zsock_destroy(&sock);
    free(s);
    free(gaps);
    free(firsts);
    free(content);
    return failed ? 1 : 0;
}
