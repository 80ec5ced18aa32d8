/*  db_bench - the DB worker against its ceiling.

    Ceiling: raw libmariadb, N threads with one connection each, running exactly
    the statements the worker runs for clipboard.create (one autocommit INSERT ...
    RETURNING id, seq; the seq comes from the trigger of migration 003) and
    clipboard.list (one SELECT), prepared once
    per connection. Measured: the same ops sent through sluice-broker to a
    sluice-dbworker whose pool has N connections, with N requests in flight.
    Both phases run in one process, one after the other, on the same users, and
    the result is printed as throughput, p50/p99 and the ratio to the ceiling.

    Usage: db_bench --frontend tcp://127.0.0.1:5550 --db-port 3307 [--connections 8]
                    [--seconds 5] [--db-host 127.0.0.1] [--db-user sluice]
                    [--db-password P] [--db-name sluice]
    The password defaults to SLUICE_DB_PASSWORD (as the DB workers read it), else
    sluice. (tests/bench/db-bench starts MariaDB, a broker and a worker, then runs
    this.)
*/
#include "clock.h"
#include "mp.h"
#include "smp.h"

#include <czmq.h>
#include <mysql.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CONTENT "benchmark clipboard item: 64 bytes of text for every create op.."
#define S_LIST_LIMIT 20
#define S_MAX_CONN 256
#define S_SLICES 4 /* raw and broker phases alternate this many times */

typedef struct {
    const char *frontend, *host, *user, *password, *database;
    unsigned port;
    int connections;
    int inflight; /* requests kept in flight through the broker */
    double seconds;
    int64_t user_ids[S_MAX_CONN];
    int64_t device_ids[S_MAX_CONN];
} s_opts_t;

typedef struct {
    int64_t *us; /* latencies */
    size_t n, cap;
} s_lat_t;

static void s_lat_add(s_lat_t *l, int64_t us)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->us = realloc(l->us, l->cap * sizeof *l->us);
    }
    l->us[l->n++] = us;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double ops_per_s, p50_ms, p99_ms;
    size_t ops, errors;
} s_result_t;

static s_result_t s_summarise(s_lat_t *l, double seconds, size_t errors)
{
    s_result_t r = {0};
    r.ops = l->n;
    r.errors = errors;
    r.ops_per_s = (double)l->n / seconds;
    if (l->n) {
        qsort(l->us, l->n, sizeof *l->us, s_cmp);
        r.p50_ms = (double)l->us[l->n / 2] / 1000.0;
        r.p99_ms = (double)l->us[l->n * 99 / 100] / 1000.0;
    }
    return r;
}

static MYSQL *s_connect(const s_opts_t *o)
{
    MYSQL *m = mysql_init(NULL);
    mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(m, o->host, o->user, o->password, o->database, o->port, NULL,
                            CLIENT_FOUND_ROWS)) {
        fprintf(stderr, "db_bench: connect: %s\n", mysql_error(m));
        exit(1);
    }
    return m;
}

static MYSQL_STMT *s_prepare(MYSQL *m, const char *sql)
{
    MYSQL_STMT *st = mysql_stmt_init(m);
    if (mysql_stmt_prepare(st, sql, strlen(sql))) {
        fprintf(stderr, "db_bench: prepare %s: %s\n", sql, mysql_stmt_error(st));
        exit(1);
    }
    return st;
}

static void s_ms_to_time(int64_t ms, MYSQL_TIME *t)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    memset(t, 0, sizeof *t);
    t->year = (unsigned)tm.tm_year + 1900;
    t->month = (unsigned)tm.tm_mon + 1;
    t->day = (unsigned)tm.tm_mday;
    t->hour = (unsigned)tm.tm_hour;
    t->minute = (unsigned)tm.tm_min;
    t->second = (unsigned)tm.tm_sec;
    t->second_part = (unsigned long)(ms % 1000) * 1000;
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
}

/* Users (and a device each) for the bench, made directly in the database. */
static void s_setup(s_opts_t *o)
{
    MYSQL *m = s_connect(o);
    char sql[512];
    for (int i = 0; i < o->connections; i++) {
        /* set-up only, not measured: plain text statements with our own numbers */
        snprintf(sql, sizeof sql,
                 "INSERT INTO users (username, password_hash, created_at)"
                 " VALUES (CONCAT('bench-', UUID_SHORT()), 'x', UTC_TIMESTAMP(3))");
        if (mysql_query(m, sql)) {
            fprintf(stderr, "db_bench: setup: %s\n", mysql_error(m));
            exit(1);
        }
        o->user_ids[i] = (int64_t)mysql_insert_id(m);
        snprintf(sql, sizeof sql,
                 "INSERT INTO devices (user_id, name, token_hash, created_at)"
                 " VALUES (%lld, 'bench', UNHEX(SHA2(UUID(), 256)), UTC_TIMESTAMP(3))",
                 (long long)o->user_ids[i]);
        if (mysql_query(m, sql)) {
            fprintf(stderr, "db_bench: setup: %s\n", mysql_error(m));
            exit(1);
        }
        o->device_ids[i] = (int64_t)mysql_insert_id(m);
    }
    mysql_close(m);
}

/* ---- raw libmariadb ---- */

typedef struct {
    const s_opts_t *o;
    int index;
    int list; /* 0: create, 1: list */
    int64_t until_us;
    s_lat_t lat;
    size_t errors;
} s_raw_t;

static void *s_raw_thread(void *arg)
{
    s_raw_t *t = arg;
    MYSQL *m = s_connect(t->o);
    MYSQL_STMT *insert =
        s_prepare(m, "INSERT INTO clipboard_items"
                     " (user_id, seq, content, content_type, source_device_id, created_at)"
                     " VALUES (?, 0, ?, ?, ?, ?) RETURNING id, seq");
    MYSQL_STMT *list =
        s_prepare(m, "SELECT id, seq, content, content_type, source_device_id, created_at"
                     " FROM clipboard_items WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?");
    long long user = t->o->user_ids[t->index], device = t->o->device_ids[t->index], after = 0,
              limit = S_LIST_LIMIT;
    unsigned long content_len = strlen(S_CONTENT), type_len = 10;
    MYSQL_TIME now;
    MYSQL_BIND ins_p[5] = {
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &user},
        {.buffer_type = MYSQL_TYPE_STRING, .buffer = S_CONTENT, .length = &content_len},
        {.buffer_type = MYSQL_TYPE_STRING, .buffer = "text/plain", .length = &type_len},
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &device},
        {.buffer_type = MYSQL_TYPE_DATETIME, .buffer = &now},
    };
    MYSQL_BIND list_p[3] = {
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &user},
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &after},
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &limit},
    };
    mysql_stmt_bind_param(insert, ins_p);
    mysql_stmt_bind_param(list, list_p);
    /* results are read the way the worker reads them: stored, then fetched into
       buffers sized from max_length */
    long long r_id, r_seq, r_dev;
    char r_content[256], r_type[256];
    MYSQL_TIME r_time;
    unsigned long lens[6];
    my_bool nulls[6];
    MYSQL_BIND list_r[6] = {
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &r_id},
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &r_seq},
        {.buffer_type = MYSQL_TYPE_STRING, .buffer = r_content, .buffer_length = 256},
        {.buffer_type = MYSQL_TYPE_STRING, .buffer = r_type, .buffer_length = 256},
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &r_dev},
        {.buffer_type = MYSQL_TYPE_DATETIME, .buffer = &r_time},
    };
    for (int i = 0; i < 6; i++) {
        list_r[i].length = &lens[i];
        list_r[i].is_null = &nulls[i];
    }
    MYSQL_BIND ins_r[2] = {list_r[0], list_r[1]}; /* RETURNING id, seq */
    my_bool yes = 1;
    mysql_stmt_attr_set(list, STMT_ATTR_UPDATE_MAX_LENGTH, &yes);
    while (clock_now_us() < t->until_us) {
        int64_t start = clock_now_us();
        bool ok;
        if (!t->list) {
            s_ms_to_time(clock_wall_ms(), &now);
            ok = !mysql_stmt_execute(insert) && !mysql_stmt_store_result(insert) &&
                 !mysql_stmt_bind_result(insert, ins_r) && mysql_stmt_fetch(insert) == 0;
            mysql_stmt_free_result(insert);
        } else {
            ok = !mysql_stmt_execute(list) && !mysql_stmt_store_result(list) &&
                 !mysql_stmt_bind_result(list, list_r);
            while (ok && mysql_stmt_fetch(list) == 0)
                ;
            mysql_stmt_free_result(list);
        }
        if (ok) {
            s_lat_add(&t->lat, clock_now_us() - start);
        } else {
            t->errors++;
            mysql_rollback(m);
        }
    }
    mysql_stmt_close(insert);
    mysql_stmt_close(list);
    mysql_close(m);
    return NULL;
}

static size_t s_run_raw(const s_opts_t *o, int list, s_lat_t *all)
{
    pthread_t threads[S_MAX_CONN];
    s_raw_t *ts = calloc((size_t)o->connections, sizeof *ts);
    int64_t until = clock_now_us() + (int64_t)(o->seconds * 1e6);
    for (int i = 0; i < o->connections; i++) {
        ts[i] = (s_raw_t){.o = o, .index = i, .list = list, .until_us = until};
        pthread_create(&threads[i], NULL, s_raw_thread, &ts[i]);
    }
    size_t errors = 0;
    for (int i = 0; i < o->connections; i++) {
        pthread_join(threads[i], NULL);
        for (size_t k = 0; k < ts[i].lat.n; k++)
            s_lat_add(all, ts[i].lat.us[k]);
        errors += ts[i].errors;
        free(ts[i].lat.us);
    }
    free(ts);
    return errors;
}

/* ---- through the broker and the worker ---- */

static void s_send(zsock_t *sock, const s_opts_t *o, int slot, int list)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_kv_str(&pk, "op", list ? "clipboard.list" : "clipboard.create");
    mp_pack_cstr(&pk, "args");
    if (list) {
        msgpack_pack_map(&pk, 2);
        mp_pack_kv_int(&pk, "after", 0);
        mp_pack_kv_int(&pk, "limit", S_LIST_LIMIT);
    } else {
        msgpack_pack_map(&pk, 1);
        mp_pack_kv_str(&pk, "content", S_CONTENT);
    }
    mp_pack_cstr(&pk, "auth");
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "user_id", o->user_ids[slot % o->connections]);
    mp_pack_kv_int(&pk, "device_id", o->device_ids[slot % o->connections]);
    uint8_t rid[4];
    smp_put_u32(rid, (uint32_t)slot);
    smp_msg_t m = {.command = SMP_REQUEST,
                   .service = smp_bytes_str("db"),
                   .request_id = {rid, 4},
                   .deadline_ms = 10000,
                   .body = {(const uint8_t *)buf.data, buf.size}};
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    zmsg_send(&msg, sock);
    msgpack_sbuffer_destroy(&buf);
}

static size_t s_run_broker(const s_opts_t *o, int list, s_lat_t *lat_out)
{
    zsock_t *sock = zsock_new_dealer(o->frontend);
    zsock_set_rcvtimeo(sock, 12000);
    int64_t *sent = calloc((size_t)o->inflight, sizeof *sent);
    int64_t until = clock_now_us() + (int64_t)(o->seconds * 1e6);
    for (int i = 0; i < o->inflight; i++) {
        sent[i] = clock_now_us();
        s_send(sock, o, i, list);
    }
    s_lat_t *lat = lat_out;
    size_t errors = 0;
    int outstanding = o->inflight;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    while (outstanding > 0) {
        zmsg_t *msg = zmsg_recv(sock);
        if (!msg) {
            fprintf(stderr, "db_bench: no reply from the broker\n");
            exit(1);
        }
        smp_msg_t m;
        const char *why;
        msgpack_zone_clear(&zone);
        if (smp_parse(msg, SMP_BROKER_TO_CLIENT, &zone, &m, &why) != 0 || m.command != SMP_REPLY ||
            m.request_id.size != 4) {
            zmsg_destroy(&msg);
            continue;
        }
        int slot = (int)smp_get_u32(m.request_id.data);
        int64_t now = clock_now_us();
        if (m.status == 200 || m.status == 201)
            s_lat_add(lat, now - sent[slot]);
        else
            errors++;
        zmsg_destroy(&msg);
        if (now < until) {
            sent[slot] = now;
            s_send(sock, o, slot, list);
        } else {
            outstanding--;
        }
    }
    msgpack_zone_destroy(&zone);
    free(sent);
    zsock_destroy(&sock);
    return errors;
}

static void s_print(const char *op, s_result_t raw, s_result_t via)
{
    printf("%-17s %-7s %9.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %zu\n", op, "raw",
           raw.ops_per_s, raw.p50_ms, raw.p99_ms, raw.errors);
    printf("%-17s %-7s %9.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %zu\n", op, "broker",
           via.ops_per_s, via.p50_ms, via.p99_ms, via.errors);
    printf("%-17s ratio   %8.1f%% of the raw throughput\n", op,
           raw.ops_per_s > 0 ? 100.0 * via.ops_per_s / raw.ops_per_s : 0.0);
}

int main(int argc, char **argv)
{
    /* the password deploy/local/mariadb generated, as the DB workers get it */
    const char *password = getenv("SLUICE_DB_PASSWORD");
    s_opts_t o = {.frontend = "tcp://127.0.0.1:5550",
                  .host = "127.0.0.1",
                  .user = "sluice",
                  .password = password ? password : "sluice",
                  .database = "sluice",
                  .port = 3307,
                  .connections = 8,
                  .seconds = 5};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--frontend"))
            o.frontend = v;
        else if (!strcmp(k, "--db-host"))
            o.host = v;
        else if (!strcmp(k, "--db-port"))
            o.port = (unsigned)atoi(v);
        else if (!strcmp(k, "--db-user"))
            o.user = v;
        else if (!strcmp(k, "--db-password"))
            o.password = v;
        else if (!strcmp(k, "--db-name"))
            o.database = v;
        else if (!strcmp(k, "--connections"))
            o.connections = atoi(v);
        else if (!strcmp(k, "--inflight"))
            o.inflight = atoi(v);
        else if (!strcmp(k, "--seconds"))
            o.seconds = atof(v);
        else {
            fprintf(stderr, "db_bench: unknown option %s\n", k);
            return 2;
        }
    }
    if (o.connections < 1 || o.connections > S_MAX_CONN) {
        fprintf(stderr, "db_bench: --connections must be 1-%d\n", S_MAX_CONN);
        return 2;
    }
    if (o.inflight < 1)
        o.inflight = o.connections;
    mysql_library_init(0, NULL, NULL);
    s_setup(&o);
    printf("db_bench: %d connections (raw: %d threads; broker: pool of %d, %d requests in "
           "flight), %.1f s per phase, clipboard.list limit %d\n",
           o.connections, o.connections, o.connections, o.inflight, o.seconds, S_LIST_LIMIT);
    /* Raw and broker phases alternate in short slices, so that whatever else the
       machine does hits both alike; create first (it fills the lists). */
    s_result_t raw_c = {0}, via_c = {0}, raw_l = {0}, via_l = {0};
    double total = o.seconds;
    o.seconds = total / S_SLICES;
    for (int op = 0; op < 2; op++) {
        s_result_t *raw = op ? &raw_l : &raw_c, *via = op ? &via_l : &via_c;
        s_lat_t raw_lat = {0}, via_lat = {0};
        size_t raw_err = 0, via_err = 0;
        for (int i = 0; i < S_SLICES; i++) {
            raw_err += s_run_raw(&o, op, &raw_lat);
            via_err += s_run_broker(&o, op, &via_lat);
        }
        *raw = s_summarise(&raw_lat, total, raw_err);
        *via = s_summarise(&via_lat, total, via_err);
        free(raw_lat.us);
        free(via_lat.us);
    }
    s_print("clipboard.create", raw_c, via_c);
    s_print("clipboard.list", raw_l, via_l);
    mysql_library_end();
    return (raw_c.errors + via_c.errors + raw_l.errors + via_l.errors) ? 1 : 0;
}
