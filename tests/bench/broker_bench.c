/*  broker_bench.c - what the broker costs: the same pipelined clients and echo
    workers, once talking DEALER <-> ROUTER directly, once through a real
    sluice-broker process, and once through the cheapest relay ZeroMQ allows (a
    separate process running zmq_proxy between a ROUTER and a DEALER: no parsing,
    no routing decisions, no bookkeeping), in one run. Reports throughput and
    round-trip latency (p50, p99) of each, the throughput ratios and the latency the
    broker adds; then the same with one request in flight at a time (pure latency,
    no queueing). The relay is the floor of any broker process on the machine: the
    gap between it and direct is what the two extra hops cost by themselves, and
    the gap between the broker and the relay is what Sluice's broker adds to them.

    The clients and workers speak SMP/1 frames in both modes and do the same work
    (an echo reply {"status": 200, "data": <request body>}), so the difference is
    the broker: two more hops, its parsing, routing and bookkeeping.

    Usage: broker_bench --broker PATH [--seconds 3] [--rounds 3] [--clients 2]
                        [--workers 2] [--window 32] [--credit 64] [--body 100]
                        [--warmup 0.3]
    Direct, relayed and brokered runs alternate in --rounds slices so that all see
    the same background load. tests/bench/broker-bench builds it and runs it.
    (broker_bench --relay-serve FRONTEND BACKEND is the relay process itself.)
*/
#include "smp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

#define S_RING 65536 /* send times by sequence number; far more than any window */
#define S_PARTS 10
#define S_SERVICE "echo"

typedef enum { S_DIRECT, S_RELAY, S_BROKER, S_MODES } s_mode_t;

static const char *const s_mode_name[S_MODES] = {"direct", "relay", "broker"};

typedef struct {
    s_mode_t mode;
    void *ctx;
    char frontend[64];      /* broker mode: clients connect here */
    char backend[64];       /* broker mode: workers connect here */
    char relay_front[64];   /* relay mode: clients connect here */
    char relay_back[64];    /* relay mode: workers connect here */
    char worker_ep[16][64]; /* direct mode: each worker's ROUTER */
    int workers, clients, window, credit;
    size_t body_size;
    int64_t t0, t1;   /* the measured window, monotonic us */
    pid_t broker_pid; /* broker mode: whose CPU time to measure */
    pid_t relay_pid;  /* relay mode: the same */
    atomic_int workers_ready;
    atomic_int stop_workers;
} s_run_t;

typedef struct {
    s_run_t *run;
    int index;
    pthread_t thread;
    uint64_t replies; /* replies to requests sent inside the window */
    uint64_t errors;  /* non-200 replies */
    uint64_t lost;    /* never answered */
    uint32_t *rtt;    /* microseconds, one per reply counted */
    size_t nrtt, cap;
} s_client_t;

typedef struct {
    s_run_t *run;
    int index;
    pthread_t thread;
    uint64_t served;
} s_worker_t;

typedef struct {
    double throughput; /* replies per second */
    double p50, p99;   /* microseconds */
    uint64_t errors, lost;
} s_result_t;

/* Round trips of one mode, summed over its slices. */
typedef struct {
    uint32_t *rtt;
    size_t n, cap;
    double seconds;
    uint64_t errors, lost;
    int64_t middle_cpu_ns; /* CPU the broker or relay used inside the measured windows */
} s_acc_t;

/* CPU time of every thread of pid so far, in ns (schedstat's first field). */
static int64_t s_cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    int64_t total = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        char file[400];
        snprintf(file, sizeof file, "%s/%s/schedstat", path, entry->d_name);
        FILE *f = fopen(file, "r");
        long long ns = 0;
        if (f && fscanf(f, "%lld", &ns) == 1)
            total += ns;
        if (f)
            fclose(f);
    }
    closedir(dir);
    return total;
}

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* {"status": 200, "data": ...}: the reply prefix every echo worker writes and every
   client checks, so broker-made errors are counted as errors */
static const uint8_t s_reply_prefix[] = {0x82, 0xa6, 's',  't', 'a', 't', 'u', 's',
                                         0xcc, 0xc8, 0xa4, 'd', 'a', 't', 'a'};

static int s_recv_parts(void *sock, zmq_msg_t *parts, int flags)
{
    int n = 0;
    for (;;) {
        if (n == S_PARTS) { /* too many parts: drain and drop */
            zmq_msg_t junk;
            zmq_msg_init(&junk);
            while (zmq_msg_more(&parts[n - 1]) && zmq_msg_recv(&junk, sock, 0) >= 0 &&
                   zmq_msg_more(&junk))
                ;
            zmq_msg_close(&junk);
            return n;
        }
        zmq_msg_init(&parts[n]);
        if (zmq_msg_recv(&parts[n], sock, n == 0 ? flags : 0) < 0) {
            zmq_msg_close(&parts[n]);
            return n == 0 ? -1 : n;
        }
        n++;
        if (!zmq_msg_more(&parts[n - 1]))
            return n;
    }
}

static void s_close_parts(zmq_msg_t *parts, int n)
{
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

static void s_send_frame(void *sock, const void *data, size_t size, bool more)
{
    zmq_send(sock, data, size, more ? ZMQ_SNDMORE : 0);
}

static void s_send_msg(void *sock, zmq_msg_t *part, bool more)
{
    zmq_msg_send(part, sock, more ? ZMQ_SNDMORE : 0);
}

static void s_sleep_until(int64_t t_us)
{
    int64_t left = t_us - s_now_us();
    if (left > 0)
        usleep((useconds_t)left);
}

/* ---------------------------------------------------------------- workers */

static void *s_worker_main(void *arg)
{
    s_worker_t *self = arg;
    s_run_t *run = self->run;
    bool direct = run->mode == S_DIRECT;
    /* direct and relayed requests come with the client's routing id in front (the
       relay's ROUTER adds it); the broker sends its own SMP/1 worker frames */
    bool enveloped = run->mode != S_BROKER;
    void *sock = zmq_socket(run->ctx, direct ? ZMQ_ROUTER : ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &zero, sizeof zero);
    if (direct) {
        zmq_bind(sock, "tcp://127.0.0.1:*");
        size_t len = sizeof run->worker_ep[self->index];
        zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, run->worker_ep[self->index], &len);
    } else if (run->mode == S_RELAY) {
        zmq_connect(sock, run->relay_back);
    } else {
        zmq_connect(sock, run->backend);
        uint8_t credit[4], cmd = SMP_READY;
        smp_put_u32(credit, (uint32_t)run->credit);
        s_send_frame(sock, "", 0, true);
        s_send_frame(sock, SMP_PROTOCOL, 4, true);
        s_send_frame(sock, &cmd, 1, true);
        s_send_frame(sock, S_SERVICE, strlen(S_SERVICE), true);
        s_send_frame(sock, credit, 4, false);
    }
    atomic_fetch_add(&run->workers_ready, 1);

    uint8_t *reply = malloc(sizeof s_reply_prefix + SMP_BODY_MAX);
    memcpy(reply, s_reply_prefix, sizeof s_reply_prefix);
    const uint8_t reply_cmd = SMP_REPLY, heartbeat_cmd = SMP_HEARTBEAT;
    int64_t next_beat = s_now_us() + 500000;
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    zmq_msg_t parts[S_PARTS];
    while (!atomic_load(&run->stop_workers)) {
        if (!enveloped && s_now_us() >= next_beat) { /* stay alive for the broker */
            s_send_frame(sock, "", 0, true);
            s_send_frame(sock, SMP_PROTOCOL, 4, true);
            s_send_frame(sock, &heartbeat_cmd, 1, false);
            next_beat = s_now_us() + 500000;
        }
        if (zmq_poll(&item, 1, 10) <= 0)
            continue;
        int n;
        while ((n = s_recv_parts(sock, parts, ZMQ_DONTWAIT)) > 0) {
            /* direct, relay: [id, "", SMP1, 0x01, service, rid, deadline, body]
               broker:        ["", SMP1, 0x01, route, rid, deadline, body] */
            int base = enveloped ? 1 : 0;
            if (n == base + 7 && zmq_msg_size(&parts[base + 2]) == 1 &&
                *(uint8_t *)zmq_msg_data(&parts[base + 2]) == SMP_REQUEST) {
                zmq_msg_t *body = &parts[base + 6];
                size_t size = zmq_msg_size(body);
                memcpy(reply + sizeof s_reply_prefix, zmq_msg_data(body), size);
                if (enveloped)
                    s_send_msg(sock, &parts[0], true); /* the client's routing id */
                s_send_frame(sock, "", 0, true);
                s_send_frame(sock, SMP_PROTOCOL, 4, true);
                s_send_frame(sock, &reply_cmd, 1, true);
                if (!enveloped)
                    s_send_msg(sock, &parts[base + 3], true); /* route */
                s_send_msg(sock, &parts[base + 4], true);     /* request id */
                s_send_frame(sock, reply, sizeof s_reply_prefix + size, false);
                self->served++;
            }
            s_close_parts(parts, n);
        }
    }
    if (!enveloped) { /* leave cleanly, so the next run's workers get all the work */
        const uint8_t disconnect_cmd = SMP_DISCONNECT;
        int linger = 1000;
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        s_send_frame(sock, "", 0, true);
        s_send_frame(sock, SMP_PROTOCOL, 4, true);
        s_send_frame(sock, &disconnect_cmd, 1, false);
    }
    free(reply);
    zmq_close(sock);
    return NULL;
}

/* ---------------------------------------------------------------- clients */

static void s_record(s_client_t *self, uint32_t rtt)
{
    if (self->nrtt == self->cap) {
        self->cap = self->cap ? self->cap * 2 : 65536;
        self->rtt = realloc(self->rtt, self->cap * sizeof *self->rtt);
    }
    self->rtt[self->nrtt++] = rtt;
}

static void *s_client_main(void *arg)
{
    s_client_t *self = arg;
    s_run_t *run = self->run;
    void *sock = zmq_socket(run->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &zero, sizeof zero);
    if (run->mode == S_DIRECT)
        for (int i = 0; i < run->workers; i++)
            zmq_connect(sock, run->worker_ep[i]);
    else
        zmq_connect(sock, run->mode == S_RELAY ? run->relay_front : run->frontend);

    /* {"op": "echo", "args": {"pad": "xxx..."}} of about body_size bytes */
    size_t pad = run->body_size > 32 ? run->body_size - 32 : 1;
    size_t body_cap = pad + 64;
    uint8_t *body = malloc(body_cap);
    size_t bn = 0;
    const uint8_t head[] = {0x82, 0xa2, 'o', 'p', 0xa4, 'e',  'c', 'h', 'o', 0xa4,
                            'a',  'r',  'g', 's', 0x81, 0xa3, 'p', 'a', 'd', 0xda};
    memcpy(body, head, sizeof head);
    bn = sizeof head;
    body[bn++] = (uint8_t)(pad >> 8);
    body[bn++] = (uint8_t)pad;
    memset(body + bn, 'x', pad);
    bn += pad;

    int64_t *sent = calloc(S_RING, sizeof *sent);
    uint64_t seq = 0;
    int outstanding = 0;
    const uint8_t request_cmd = SMP_REQUEST;
    uint8_t deadline[4];
    smp_put_u32(deadline, 10000);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    zmq_msg_t parts[S_PARTS];
    int64_t give_up = run->t1 + 3000000;
    for (;;) {
        int64_t now = s_now_us();
        if (now < run->t1) {
            while (outstanding < run->window) {
                uint64_t id = seq++;
                sent[id % S_RING] = s_now_us();
                s_send_frame(sock, "", 0, true);
                s_send_frame(sock, SMP_PROTOCOL, 4, true);
                s_send_frame(sock, &request_cmd, 1, true);
                s_send_frame(sock, S_SERVICE, strlen(S_SERVICE), true);
                s_send_frame(sock, &id, sizeof id, true);
                s_send_frame(sock, deadline, 4, true);
                s_send_frame(sock, body, bn, false);
                outstanding++;
            }
        } else if (outstanding == 0 || now > give_up) {
            break;
        }
        if (zmq_poll(&item, 1, 10) <= 0)
            continue;
        int n;
        while ((n = s_recv_parts(sock, parts, ZMQ_DONTWAIT)) > 0) {
            /* ["", SMP1, 0x02, rid, body] */
            if (n == 5 && zmq_msg_size(&parts[3]) == sizeof(uint64_t)) {
                int64_t got = s_now_us();
                uint64_t id;
                memcpy(&id, zmq_msg_data(&parts[3]), sizeof id);
                int64_t at = sent[id % S_RING];
                outstanding--;
                bool ok =
                    zmq_msg_size(&parts[4]) > sizeof s_reply_prefix &&
                    memcmp(zmq_msg_data(&parts[4]), s_reply_prefix, sizeof s_reply_prefix) == 0;
                if (at >= run->t0 && at < run->t1) {
                    if (ok) {
                        self->replies++;
                        s_record(self, (uint32_t)(got - at));
                    } else {
                        self->errors++;
                    }
                }
            }
            s_close_parts(parts, n);
        }
    }
    self->lost = (uint64_t)outstanding;
    free(sent);
    free(body);
    zmq_close(sock);
    return NULL;
}

/* ---------------------------------------------------------------- one run */

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* One slice: workers and clients of run->mode for warmup + seconds; round trips of
   requests sent after the warmup are added to acc. */
static void s_run(s_run_t *run, double warmup_s, double seconds, s_acc_t *acc)
{
    atomic_store(&run->workers_ready, 0);
    atomic_store(&run->stop_workers, 0);
    s_worker_t workers[16];
    for (int i = 0; i < run->workers; i++) {
        workers[i] = (s_worker_t){.run = run, .index = i};
        pthread_create(&workers[i].thread, NULL, s_worker_main, &workers[i]);
    }
    while (atomic_load(&run->workers_ready) < run->workers)
        usleep(1000);
    run->t0 = s_now_us() + (int64_t)(warmup_s * 1e6);
    run->t1 = run->t0 + (int64_t)(seconds * 1e6);
    s_client_t *clients = calloc((size_t)run->clients, sizeof *clients);
    for (int i = 0; i < run->clients; i++) {
        clients[i].run = run;
        clients[i].index = i;
        pthread_create(&clients[i].thread, NULL, s_client_main, &clients[i]);
    }
    pid_t middle = run->mode == S_BROKER  ? run->broker_pid
                   : run->mode == S_RELAY ? run->relay_pid
                                          : 0;
    if (middle > 0) {
        s_sleep_until(run->t0);
        int64_t cpu0 = s_cpu_ns(middle);
        s_sleep_until(run->t1);
        acc->middle_cpu_ns += s_cpu_ns(middle) - cpu0;
    }
    size_t total = 0;
    for (int i = 0; i < run->clients; i++) {
        pthread_join(clients[i].thread, NULL);
        total += clients[i].nrtt;
    }
    atomic_store(&run->stop_workers, 1);
    for (int i = 0; i < run->workers; i++)
        pthread_join(workers[i].thread, NULL);

    if (acc->n + total > acc->cap) {
        acc->cap = (acc->n + total) * 2;
        acc->rtt = realloc(acc->rtt, acc->cap * sizeof *acc->rtt);
    }
    for (int i = 0; i < run->clients; i++) {
        memcpy(acc->rtt + acc->n, clients[i].rtt, clients[i].nrtt * sizeof *acc->rtt);
        acc->n += clients[i].nrtt;
        acc->errors += clients[i].errors;
        acc->lost += clients[i].lost;
        free(clients[i].rtt);
    }
    acc->seconds += seconds;
    free(clients);
}

static s_result_t s_result(s_acc_t *acc)
{
    s_result_t result = {.errors = acc->errors, .lost = acc->lost};
    qsort(acc->rtt, acc->n, sizeof *acc->rtt, s_cmp_u32);
    result.throughput = acc->seconds > 0 ? (double)acc->n / acc->seconds : 0;
    result.p50 = acc->n ? acc->rtt[acc->n / 2] : 0;
    result.p99 = acc->n ? acc->rtt[(size_t)((double)acc->n * 0.99)] : 0;
    free(acc->rtt);
    return result;
}

/* ---------------------------------------------------------------- the broker */

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

static pid_t s_start_broker(const char *path, s_run_t *run)
{
    char ep[4][64];
    for (int i = 0; i < 4; i++)
        snprintf(ep[i], sizeof ep[i], "tcp://127.0.0.1:%d", s_free_port());
    snprintf(run->frontend, sizeof run->frontend, "%s", ep[0]);
    snprintf(run->backend, sizeof run->backend, "%s", ep[1]);
    char *argv[] = {(char *)path, "--frontend",   ep[0], "--backend",   ep[1],  "--events-in",
                    ep[2],        "--events-out", ep[3], "--log-level", "warn", NULL};
    pid_t pid;
    if (posix_spawn(&pid, path, NULL, NULL, argv, environ) != 0) {
        fprintf(stderr, "cannot start %s: %s\n", path, strerror(errno));
        exit(1);
    }
    /* ready when it answers `sys services` */
    void *sock = zmq_socket(run->ctx, ZMQ_DEALER);
    int zero = 0, timeout = 200;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_connect(sock, run->frontend);
    const uint8_t body[] = {0x81, 0xa2, 'o', 'p', 0xa8, 's', 'e', 'r', 'v', 'i', 'c', 'e', 's'};
    const uint8_t cmd = SMP_REQUEST;
    uint8_t deadline[4];
    smp_put_u32(deadline, 1000);
    for (int attempt = 0; attempt < 50; attempt++) {
        s_send_frame(sock, "", 0, true);
        s_send_frame(sock, SMP_PROTOCOL, 4, true);
        s_send_frame(sock, &cmd, 1, true);
        s_send_frame(sock, "sys", 3, true);
        s_send_frame(sock, "ready?", 6, true);
        s_send_frame(sock, deadline, 4, true);
        s_send_frame(sock, body, sizeof body, false);
        zmq_msg_t parts[S_PARTS];
        int n = s_recv_parts(sock, parts, 0);
        if (n > 0) {
            s_close_parts(parts, n);
            zmq_close(sock);
            return pid;
        }
    }
    fprintf(stderr, "broker did not answer\n");
    kill(pid, SIGKILL);
    exit(1);
}

static int s_stop_broker(pid_t pid)
{
    int status = 0;
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---------------------------------------------------------------- the relay */

/*  The relay process: a ROUTER for clients, a DEALER for workers, zmq_proxy between
    them, the same socket options the broker uses for its queues. It tells its parent
    it is bound by writing a byte on descriptor 3, and ends on SIGTERM. */
static int s_relay_serve(const char *front_ep, const char *back_ep)
{
    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER), *back = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 100000;
    zmq_setsockopt(front, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(front, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(back, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(back, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(front, front_ep) != 0 || zmq_bind(back, back_ep) != 0) {
        fprintf(stderr, "relay: cannot bind %s / %s: %s\n", front_ep, back_ep, zmq_strerror(errno));
        return 1;
    }
    if (write(3, "r", 1) != 1)
        return 1;
    close(3);
    zmq_proxy(front, back, NULL); /* until a signal ends the process */
    return 0;
}

static pid_t s_start_relay(s_run_t *run)
{
    snprintf(run->relay_front, sizeof run->relay_front, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(run->relay_back, sizeof run->relay_back, "tcp://127.0.0.1:%d", s_free_port());
    int ready[2];
    posix_spawn_file_actions_t actions;
    if (pipe(ready) != 0 || posix_spawn_file_actions_init(&actions) != 0 ||
        posix_spawn_file_actions_adddup2(&actions, ready[1], 3) != 0) {
        perror("relay");
        exit(1);
    }
    char *argv[] = {"/proc/self/exe", "--relay-serve", run->relay_front, run->relay_back, NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/proc/self/exe", &actions, NULL, argv, environ) != 0) {
        fprintf(stderr, "cannot start the relay: %s\n", strerror(errno));
        exit(1);
    }
    posix_spawn_file_actions_destroy(&actions);
    close(ready[1]);
    char byte;
    if (read(ready[0], &byte, 1) != 1) {
        fprintf(stderr, "the relay did not start\n");
        exit(1);
    }
    close(ready[0]);
    return pid;
}

static void s_stop_relay(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* ---------------------------------------------------------------- main */

static void s_print(const char *name, const s_result_t *r)
{
    printf("  %-8s %12.0f req/s   p50 %8.1f us   p99 %8.1f us   errors %llu  lost %llu\n", name,
           r->throughput, r->p50, r->p99, (unsigned long long)r->errors,
           (unsigned long long)r->lost);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--relay-serve"))
        return s_relay_serve(argv[2], argv[3]);
    const char *broker = NULL;
    double seconds = 3, warmup = 0.3;
    int rounds = 3;
    s_run_t run = {.workers = 2, .clients = 2, .window = 32, .credit = 64, .body_size = 100};
    /* --name value pairs */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "%s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--broker"))
            broker = v;
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--clients"))
            run.clients = atoi(v);
        else if (!strcmp(a, "--workers"))
            run.workers = atoi(v);
        else if (!strcmp(a, "--window"))
            run.window = atoi(v);
        else if (!strcmp(a, "--credit"))
            run.credit = atoi(v);
        else if (!strcmp(a, "--body"))
            run.body_size = (size_t)atol(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (!broker || run.workers < 1 || run.workers > 16 || run.clients < 1 || run.window < 1 ||
        run.window > S_RING / 2 || seconds <= 0 || run.body_size > 60000 || rounds < 1) {
        fprintf(stderr,
                "usage: %s --broker PATH [--seconds S] [--rounds N] [--warmup S] [--clients N] "
                "[--workers N (1-16)] [--window N] [--credit N] [--body BYTES]\n",
                argv[0]);
        return 2;
    }
    run.ctx = zmq_ctx_new();
    printf("broker_bench: %d client(s) x window %d, %d echo worker(s) (credit %d), body %zu "
           "bytes; %d rounds, each %.2f s direct, relayed, then through the broker; %ld "
           "cpu(s)\n",
           run.clients, run.window, run.workers, run.credit, run.body_size, rounds,
           seconds / rounds, sysconf(_SC_NPROCESSORS_ONLN));

    /* The modes alternate in slices, so all see the same background load; the
       figures are over all slices of a mode. Then the same with one client and one
       request at a time: latency alone. */
    run.broker_pid = s_start_broker(broker, &run);
    run.relay_pid = s_start_relay(&run);
    s_acc_t acc[2][S_MODES] = {{{0}}};
    s_run_t lat = run;
    lat.clients = 1;
    lat.window = 1;
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < S_MODES; m++) {
            run.mode = (s_mode_t)m;
            s_run(&run, warmup, seconds / rounds, &acc[0][m]);
        }
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < S_MODES; m++) {
            lat.mode = (s_mode_t)m;
            s_run(&lat, warmup / 2, seconds / rounds / 2, &acc[1][m]);
        }
    int broker_rc = s_stop_broker(run.broker_pid);
    s_stop_relay(run.relay_pid);

    bool clean = broker_rc == 0;
    for (int part = 0; part < 2; part++) {
        if (part == 0)
            printf("pipelined (%d x %d in flight):\n", run.clients, run.window);
        else
            printf("one at a time (1 x 1 in flight):\n");
        s_result_t res[S_MODES];
        for (int m = 0; m < S_MODES; m++) {
            res[m] = s_result(&acc[part][m]);
            s_print(s_mode_name[m], &res[m]);
            clean = clean && !res[m].errors && !res[m].lost;
        }
        const s_result_t *direct = &res[S_DIRECT], *relay = &res[S_RELAY],
                         *brokered = &res[S_BROKER];
        for (int m = S_RELAY; m < S_MODES; m++)
            printf("  %-6s %5.1f %% of direct throughput; added p50 %.1f us, p99 %.1f us\n",
                   s_mode_name[m],
                   direct->throughput ? 100.0 * res[m].throughput / direct->throughput : 0,
                   res[m].p50 - direct->p50, res[m].p99 - direct->p99);
        printf("  broker %5.1f %% of the relay's throughput; p50 %.1f us over the relay's\n",
               relay->throughput ? 100.0 * brokered->throughput / relay->throughput : 0,
               brokered->p50 - relay->p50);
        for (int m = S_RELAY; m < S_MODES; m++) {
            const s_acc_t *a = &acc[part][m];
            double n = (double)res[m].throughput * a->seconds;
            printf("  %-6s CPU (all its threads): %.1f us per request, %.0f %% of one core\n",
                   s_mode_name[m], n > 0 ? a->middle_cpu_ns / 1000.0 / n : 0,
                   a->seconds > 0 ? a->middle_cpu_ns / 1e7 / a->seconds : 0);
        }
    }
    printf("broker exit status after SIGTERM: %d\n", broker_rc);
    zmq_ctx_term(run.ctx);
    return clean ? 0 : 1;
}
