/*  gw_load - load generator for sluice-gateway (tests/bench/gateway-bench runs it).

    gw_load http --port P --conns N --seconds S --method M --path PATH [--token T]
                 [--body JSON] [--deadline-ms D]
        N keep-alive connections, one request in flight each, for S seconds.
        Prints requests/s, p50/p99/max latency, statuses, how many 503s carried
        Retry-After and how many answers came later than D ms.

    gw_load ws --port P --conns N --tokens FILE [--hold-seconds S] [--pid GWPID]
               [--fanout K --trigger-token T] [--sources M]
        Opens N WebSockets (tokens from FILE, one per line, used round-robin; source
        addresses 127.0.0.1..M so that more than one ephemeral port range is
        available), waits for every hello, then holds them S seconds. With --pid it
        prints the gateway's RSS before and after (KiB per socket). With --fanout it
        then creates K items with the trigger token and measures, for every socket,
        the time from the POST being sent to the clipboard.item arriving; and, per
        item, the times to the POST's answer, the first and the last delivery.

    gw_load floor --conns N [--rounds K] [--bytes B]
        The floor under any fan-out on this machine: one process writes B bytes to
        each of N loopback TCP sockets (one send each, as the gateway does), another
        reads them with epoll, K times. Prints the same figures as --fanout, without
        HTTP, WebSocket, ZeroMQ or a database: the kernel's cost alone.

    The first fan-out round warms up (token cache, first write of the user) and is
    reported on its own line, not in the percentiles.

    One thread, epoll, non-blocking sockets; the client is never the bottleneck for
    the figures it reports (it uses well under a core at these rates).
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_BUF 65536

typedef struct {
    int fd;
    char *out; /* request bytes */
    size_t out_len, out_off;
    char in[S_BUF];
    size_t in_len;
    int64_t sent_us;
    int state;         /* ws: 0 handshake, 1 waiting hello, 2 open */
    int64_t got_round; /* ws: last fan-out round seen */
} s_conn_t;

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static const char *s_opt(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return def;
}

static int s_connect(int port, int source)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (source > 1) {
        a.sin_addr.s_addr = htonl(0x7f000000 | (uint32_t)source);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            return -1;
        }
    }
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static long s_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* ---- HTTP ---------------------------------------------------------------------- */

/* A complete response at the start of c->in: its total length and status, or 0. */
static size_t s_response(s_conn_t *c, int *status, bool *retry_after)
{
    c->in[c->in_len < S_BUF ? c->in_len : S_BUF - 1] = 0;
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->in) + 4;
    size_t body = 0;
    for (char *p = c->in; p < end; p = strstr(p, "\r\n") + 2) {
        if (!strncasecmp(p, "content-length:", 15))
            body = (size_t)atol(p + 15);
        if (!strncasecmp(p, "retry-after:", 12))
            *retry_after = true;
    }
    if (c->in_len < head + body)
        return 0;
    *status = atoi(c->in + 9);
    return head + body;
}

static int s_http(int argc, char **argv)
{
    int port = atoi(s_opt(argc, argv, "--port", "8080"));
    int conns = atoi(s_opt(argc, argv, "--conns", "16"));
    double seconds = atof(s_opt(argc, argv, "--seconds", "5"));
    const char *method = s_opt(argc, argv, "--method", "GET");
    const char *path = s_opt(argc, argv, "--path", "/health");
    const char *token = s_opt(argc, argv, "--token", NULL);
    const char *body = s_opt(argc, argv, "--body", "");
    int64_t deadline_us = atol(s_opt(argc, argv, "--deadline-ms", "5000")) * 1000;
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: bench\r\n%s%s%sContent-Length: %zu\r\n\r\n%s", method,
                     path, token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", strlen(body), body);
    int ep = epoll_create1(0);
    s_conn_t *cs = calloc((size_t)conns, sizeof *cs);
    size_t lat_cap = 1 << 20, lat_n = 0;
    int64_t *lat = malloc(lat_cap * sizeof *lat);
    long st_2xx = 0, st_503 = 0, st_503_retry = 0, st_other = 0, late = 0, errors = 0;
    for (int i = 0; i < conns; i++) {
        cs[i].fd = s_connect(port, 1);
        cs[i].out = req;
        cs[i].out_len = (size_t)n;
        cs[i].sent_us = s_now_us();
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    int64_t start = s_now_us(), stop = start + (int64_t)(seconds * 1e6);
    struct epoll_event evs[256];
    while (s_now_us() < stop) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            s_conn_t *c = evs[i].data.ptr;
            if ((evs[i].events & EPOLLOUT) && c->out_off < c->out_len) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0)
                    c->out_off += (size_t)w;
                if (c->out_off == c->out_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, c->in + c->in_len, S_BUF - 1 - c->in_len, 0);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    errors++; /* closed: reconnect */
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = s_connect(port, 1);
                    c->in_len = c->out_off = 0;
                    c->sent_us = s_now_us();
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                    continue;
                }
                c->in_len += (size_t)r;
                int status = 0;
                bool retry = false;
                size_t used = s_response(c, &status, &retry);
                if (!used)
                    continue;
                int64_t now = s_now_us(), l = now - c->sent_us;
                if (lat_n < lat_cap)
                    lat[lat_n++] = l;
                if (l > deadline_us)
                    late++;
                if (status >= 200 && status < 300)
                    st_2xx++;
                else if (status == 503) {
                    st_503++;
                    st_503_retry += retry;
                } else
                    st_other++;
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
                c->out_off = 0;
                c->sent_us = now;
                ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
                if (w > 0)
                    c->out_off = (size_t)w;
                if (c->out_off < c->out_len) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
        }
    }
    double secs = (double)(s_now_us() - start) / 1e6;
    qsort(lat, lat_n, sizeof *lat, s_cmp);
    printf("http %s %s conns=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms; 2xx %ld, "
           "503 %ld (with Retry-After %ld), other %ld, later than deadline %ld, reconnects %ld\n",
           method, path, conns, (double)lat_n / secs, lat_n ? lat[lat_n / 2] / 1000.0 : 0,
           lat_n ? lat[lat_n * 99 / 100] / 1000.0 : 0, lat_n ? lat[lat_n - 1] / 1000.0 : 0, st_2xx,
           st_503, st_503_retry, st_other, late, errors);
    return st_other || late ? 1 : 0;
}

/* ---- WebSocket -------------------------------------------------------------------- */

/* One server frame at the start of c->in: payload pointer/length, total size or 0. */
static size_t s_frame(s_conn_t *c, const char **payload, size_t *len)
{
    if (c->in_len < 2)
        return 0;
    const uint8_t *p = (const uint8_t *)c->in;
    size_t n = p[1] & 0x7f, head = 2;
    if (n == 126) {
        if (c->in_len < 4)
            return 0;
        n = ((size_t)p[2] << 8) | p[3];
        head = 4;
    } else if (n == 127) {
        if (c->in_len < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | p[2 + i];
        head = 10;
    }
    if (c->in_len < head + n)
        return 0;
    *payload = c->in + head;
    *len = n;
    return head + n;
}

static int s_post_item(int port, const char *token, int round)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    char body[64], req[1024];
    int bl = snprintf(body, sizeof body, "{\"content\":\"fanout %d\"}", round);
    int n = snprintf(req, sizeof req,
                     "POST /v1/clipboard HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     token, bl, body);
    if (send(fd, req, (size_t)n, 0) != n)
        return -1;
    return fd; /* the caller reads the answer away */
}

/* Prints the fan-out figures of rounds 1..rounds-1 (round 0 warmed up and is shown
   alone): percentiles over every delivery, then per round the first and last
   delivery (and the POST's answer when there was one), as p50 / max. Sorts its
   arguments in place. */
static void s_fanout_report(const char *what, int conns, int rounds, int64_t *lat, size_t lat_n,
                            int64_t *first, int64_t *last, int64_t *answer)
{
    qsort(lat, lat_n, sizeof *lat, s_cmp);
    printf("%s fan-out to %d sockets, %d items: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
           "(%zu deliveries)\n",
           what, conns, rounds - 1, lat[lat_n / 2] / 1000.0, lat[lat_n * 99 / 100] / 1000.0,
           lat[lat_n - 1] / 1000.0, lat_n);
    printf("%s fan-out warm-up item (not above): first delivery %.2f ms, last %.2f ms\n", what,
           first[0] / 1000.0, last[0] / 1000.0);
    int n = rounds - 1;
    qsort(first + 1, (size_t)n, sizeof *first, s_cmp);
    qsort(last + 1, (size_t)n, sizeof *last, s_cmp);
    printf("%s fan-out per item (p50 / max of %d): first delivery %.2f / %.2f ms, last "
           "delivery %.2f / %.2f ms",
           what, n, first[1 + n / 2] / 1000.0, first[n] / 1000.0, last[1 + n / 2] / 1000.0,
           last[n] / 1000.0);
    if (answer) {
        qsort(answer + 1, (size_t)n, sizeof *answer, s_cmp);
        printf(", POST answered %.2f / %.2f ms", answer[1 + n / 2] / 1000.0, answer[n] / 1000.0);
    }
    printf("\n");
}

static int s_ws(int argc, char **argv)
{
    int port = atoi(s_opt(argc, argv, "--port", "8080"));
    int conns = atoi(s_opt(argc, argv, "--conns", "100"));
    int hold = atoi(s_opt(argc, argv, "--hold-seconds", "0"));
    int pid = atoi(s_opt(argc, argv, "--pid", "0"));
    int fanout = atoi(s_opt(argc, argv, "--fanout", "0"));
    int sources = atoi(s_opt(argc, argv, "--sources", "1"));
    const char *trigger = s_opt(argc, argv, "--trigger-token", NULL);
    FILE *tf = fopen(s_opt(argc, argv, "--tokens", "tokens.txt"), "r");
    if (!tf) {
        perror("tokens");
        return 2;
    }
    char **tokens = NULL;
    size_t ntok = 0;
    char line[1024];
    while (fgets(line, sizeof line, tf)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line)
            continue;
        tokens = realloc(tokens, (ntok + 1) * sizeof *tokens);
        tokens[ntok++] = strdup(line);
    }
    fclose(tf);
    long rss0 = pid ? s_rss_kib(pid) : -1;
    int ep = epoll_create1(0);
    s_conn_t *cs = calloc((size_t)conns, sizeof *cs);
    int64_t t0 = s_now_us();
    int open = 0, failed = 0, started = 0, closed = 0;
    struct epoll_event evs[512];
    int round = -1;
    int64_t round_sent = 0;
    size_t lat_n = 0;
    int64_t *lat = fanout ? malloc((size_t)fanout * (size_t)conns * sizeof *lat) : NULL;
    int got_this_round = 0;
    /* per round, from the POST being sent: its answer, first and last delivery */
    int64_t *r_answer = calloc((size_t)fanout + 1, sizeof *r_answer);
    int64_t *r_first = calloc((size_t)fanout + 1, sizeof *r_first);
    int64_t *r_last = calloc((size_t)fanout + 1, sizeof *r_last);
    s_conn_t post_marker = {.fd = -1};
    int64_t hold_until = 0, deadline = s_now_us() + 900 * 1000000LL;
    int post_fd = -1;
    while (s_now_us() < deadline) {
        /* at most 256 handshakes in progress, so the listen backlog never overflows */
        while (started < conns && started - open - failed < 256) {
            s_conn_t *c = &cs[started];
            c->fd = s_connect(port, 1 + started % sources);
            started++;
            if (c->fd < 0) {
                failed++;
                continue;
            }
            c->out = malloc(1200);
            c->out_len = (size_t)snprintf(c->out, 1200,
                                          "GET /v1/sync/notify?token=%s HTTP/1.1\r\nHost: bench\r\n"
                                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                          "Sec-WebSocket-Version: 13\r\n\r\n",
                                          tokens[(size_t)(started - 1) % ntok]);
            c->got_round = -1;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        int k = epoll_wait(ep, evs, 512, 50);
        for (int i = 0; i < k; i++) {
            s_conn_t *c = evs[i].data.ptr;
            if (c == &post_marker) {
                if (!r_answer[round])
                    r_answer[round] = s_now_us() - round_sent;
                epoll_ctl(ep, EPOLL_CTL_DEL, post_fd, NULL);
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && c->out_off < c->out_len) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0)
                    c->out_off += (size_t)w;
                if (c->out_off == c->out_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            ssize_t r = recv(c->fd, c->in + c->in_len, S_BUF - 1 - c->in_len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                closed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                if (c->state < 2)
                    failed++;
                else
                    open--;
                c->state = 3;
                continue;
            }
            c->in_len += (size_t)r;
            if (c->state == 0) {
                c->in[c->in_len] = 0;
                char *end = strstr(c->in, "\r\n\r\n");
                if (!end)
                    continue;
                if (strncmp(c->in, "HTTP/1.1 101", 12)) {
                    failed++;
                    c->state = 3;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    continue;
                }
                size_t used = (size_t)(end - c->in) + 4;
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
                c->state = 1;
            }
            const char *payload;
            size_t len, used;
            while ((used = s_frame(c, &payload, &len)) > 0) {
                if ((c->in[0] & 0x0f) == 0x9 && len <= 125) { /* ping: pong, masked */
                    unsigned char pong[2 + 4 + 125] = {0x8a, (unsigned char)(0x80 | len)};
                    memcpy(pong + 6, payload, len); /* mask 0: payload unchanged */
                    if (send(c->fd, pong, 6 + len, MSG_NOSIGNAL) < 0)
                        fprintf(stderr, "ws: pong not sent\n");
                } else if (c->state == 1 && len > 14 &&
                           !memcmp(payload, "{\"type\":\"hello\"", 15)) {
                    c->state = 2;
                    open++;
                } else if (round >= 0 && c->got_round < round &&
                           strstr(payload, "clipboard.item") && len < S_BUF) {
                    c->got_round = round;
                    int64_t t = s_now_us() - round_sent;
                    if (round > 0) /* round 0 is the warm-up */
                        lat[lat_n++] = t;
                    if (got_this_round++ == 0)
                        r_first[round] = t;
                    r_last[round] = t;
                }
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
            }
        }
        if (open + failed + closed < conns)
            continue;
        if (!hold_until) {
            printf("ws: %d sockets open (%d failed) in %.1f s\n", open, failed,
                   (double)(s_now_us() - t0) / 1e6);
            fflush(stdout);
            hold_until = s_now_us() + (int64_t)hold * 1000000;
        }
        if (s_now_us() < hold_until)
            continue;
        if (hold_until > 0 && round == -1 && pid) {
            long rss1 = s_rss_kib(pid);
            printf("ws: gateway RSS %ld KiB before, %ld KiB with %d sockets: %.2f KiB per socket\n",
                   rss0, rss1, open, open ? (double)(rss1 - rss0) / open : 0);
            fflush(stdout);
            pid = 0;
        }
        if (!fanout || !trigger)
            break;
        if (round == -1 || got_this_round >= open) {
            if (round >= fanout) /* the warm-up round + K measured */
                break;
            if (post_fd >= 0) { /* the previous round's answer, read away */
                char sink[4096];
                while (recv(post_fd, sink, sizeof sink, 0) > 0)
                    ;
                close(post_fd);
            }
            round++;
            got_this_round = 0;
            usleep(20000);
            round_sent = s_now_us();
            post_fd = s_post_item(port, trigger, round);
            if (post_fd >= 0) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &post_marker};
                epoll_ctl(ep, EPOLL_CTL_ADD, post_fd, &ev);
            }
        } else if (s_now_us() - round_sent > 10000000) {
            fprintf(stderr, "ws: round %d: only %d of %d sockets got the item\n", round,
                    got_this_round, open);
            break;
        }
    }
    if (lat_n)
        s_fanout_report("ws", open, round + 1, lat, lat_n, r_first, r_last, r_answer);
    if (closed)
        printf("ws: %d sockets were closed by the server\n", closed);
    return failed ? 1 : 0;
}

/* ---- the fan-out floor ------------------------------------------------------------ */

static void s_floor_writer(int cmd, const int *fds, int conns, int bytes)
{
    char *frame = malloc((size_t)bytes);
    memset(frame, 'x', (size_t)bytes);
    char go;
    while (read(cmd, &go, 1) == 1)
        for (int i = 0; i < conns; i++)
            if (send(fds[i], frame, (size_t)bytes, MSG_NOSIGNAL) != bytes)
                fprintf(stderr, "floor: short send\n");
    free(frame);
    _exit(0);
}

static int s_floor(int argc, char **argv)
{
    int conns = atoi(s_opt(argc, argv, "--conns", "1000"));
    int rounds = atoi(s_opt(argc, argv, "--rounds", "50")) + 1; /* + the warm-up */
    int bytes = atoi(s_opt(argc, argv, "--bytes", "180"));
    if (conns < 1 || rounds < 2 || bytes < 1 || bytes > S_BUF) {
        fprintf(stderr, "floor: bad --conns, --rounds or --bytes\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0) {
        perror("floor: listen");
        return 2;
    }
    int *rd = calloc((size_t)conns, sizeof *rd), *wr = calloc((size_t)conns, sizeof *wr);
    int one = 1;
    for (int i = 0; i < conns; i++) {
        rd[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (rd[i] < 0 || connect(rd[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            (wr[i] = accept(lfd, NULL, NULL)) < 0) {
            perror("floor: connect (raise ulimit -n?)");
            return 2;
        }
        setsockopt(wr[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(lfd);
    int cmd[2];
    if (pipe(cmd) != 0)
        return 2;
    pid_t child = fork();
    if (child == 0) {
        close(cmd[1]);
        for (int i = 0; i < conns; i++)
            close(rd[i]);
        s_floor_writer(cmd[0], wr, conns, bytes);
    }
    close(cmd[0]);
    for (int i = 0; i < conns; i++)
        close(wr[i]);
    int ep = epoll_create1(0);
    int *got = calloc((size_t)conns, sizeof *got);
    for (int i = 0; i < conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, rd[i], &ev);
    }
    int64_t *lat = malloc((size_t)rounds * (size_t)conns * sizeof *lat);
    int64_t *first = calloc((size_t)rounds, sizeof *first),
            *last = calloc((size_t)rounds, sizeof *last);
    size_t lat_n = 0;
    char sink[S_BUF];
    struct epoll_event evs[512];
    for (int r = 0; r < rounds; r++) {
        usleep(20000);
        memset(got, 0, (size_t)conns * sizeof *got);
        int done = 0;
        int64_t t0 = s_now_us();
        if (write(cmd[1], "g", 1) != 1)
            return 2;
        while (done < conns) {
            int k = epoll_wait(ep, evs, 512, 1000);
            if (k <= 0) {
                fprintf(stderr, "floor: round %d: %d of %d sockets got the bytes\n", r, done,
                        conns);
                return 1;
            }
            for (int i = 0; i < k; i++) {
                uint32_t c = evs[i].data.u32;
                ssize_t n = recv(rd[c], sink, sizeof sink, 0);
                if (n <= 0)
                    return 1;
                got[c] += (int)n;
                if (got[c] >= bytes && got[c] - (int)n < bytes) {
                    int64_t t = s_now_us() - t0;
                    if (done++ == 0)
                        first[r] = t;
                    last[r] = t;
                    if (r > 0)
                        lat[lat_n++] = t;
                }
            }
        }
    }
    close(cmd[1]);
    waitpid(child, NULL, 0);
    s_fanout_report("floor", conns, rounds, lat, lat_n, first, last, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "http"))
        return s_http(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "ws"))
        return s_ws(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "floor"))
        return s_floor(argc, argv);
    fprintf(stderr, "usage: gw_load http|ws|floor [options] (see the comment in gw_load.c)\n");
    return 2;
}
