/*  migrate.c - schema migrations under GET_LOCK. See migrate.h. */
#include "migrate.h"
#include "clock.h"
#include "slog.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_LOCK_WAIT_S 120

typedef struct {
    long version;
    char name[256];
} s_file_t;

static int s_compare(const void *a, const void *b)
{
    long x = ((const s_file_t *)a)->version, y = ((const s_file_t *)b)->version;
    return x < y ? -1 : x > y;
}

/* The migration files of dir, sorted by their leading number. */
static s_file_t *s_list(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        slog_error("db: migrations folder %s: %s", dir, strerror(errno));
        return NULL;
    }
    s_file_t *files = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || len >= sizeof files[0].name || strcmp(e->d_name + len - 4, ".sql") != 0 ||
            !isdigit((unsigned char)e->d_name[0]))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            s_file_t *grown = realloc(files, cap * sizeof *files);
            if (!grown)
                break;
            files = grown;
        }
        files[n].version = strtol(e->d_name, NULL, 10);
        snprintf(files[n].name, sizeof files[n].name, "%s", e->d_name);
        n++;
    }
    closedir(d);
    qsort(files, n, sizeof *files, s_compare);
    for (size_t i = 1; i < n; i++) {
        if (files[i].version == files[i - 1].version) {
            slog_error("db: migrations %s and %s have the same number", files[i - 1].name,
                       files[i].name);
            free(files);
            return NULL;
        }
    }
    *count = n;
    return files ? files : calloc(1, sizeof *files);
}

static char *s_read(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (text && fread(text, 1, (size_t)size, f) != (size_t)size) {
        free(text);
        text = NULL;
    }
    fclose(f);
    if (text) {
        text[size] = 0;
        *len = (size_t)size;
    }
    return text;
}

/* Runs a query and drains every result it produces; 0 or -1 (logged). */
static int s_query(MYSQL *m, const char *sql, size_t len, const char *what)
{
    if (mysql_real_query(m, sql, (unsigned long)len) != 0) {
        slog_error("db: %s failed: %s (%u)", what, mysql_error(m), mysql_errno(m));
        return -1;
    }
    int rc;
    do {
        MYSQL_RES *res = mysql_store_result(m);
        if (res)
            mysql_free_result(res);
        rc = mysql_next_result(m);
    } while (rc == 0);
    if (rc > 0) {
        slog_error("db: %s failed: %s (%u)", what, mysql_error(m), mysql_errno(m));
        return -1;
    }
    return 0;
}

/* SELECT with one integer column: the first row's value, or fallback. */
static long s_scalar(MYSQL *m, const char *sql, long fallback)
{
    if (mysql_query(m, sql) != 0)
        return fallback;
    MYSQL_RES *res = mysql_store_result(m);
    long value = fallback;
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    if (row && row[0])
        value = strtol(row[0], NULL, 10);
    if (res)
        mysql_free_result(res);
    return value;
}

static bool s_applied(MYSQL *m, long version)
{
    MYSQL_STMT *stmt = mysql_stmt_init(m);
    static const char sql[] = "SELECT COUNT(*) FROM schema_migrations WHERE version = ?";
    long long v = version, count = 0;
    MYSQL_BIND p = {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &v};
    MYSQL_BIND r = {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &count};
    bool ok = stmt && !mysql_stmt_prepare(stmt, sql, sizeof sql - 1) &&
              !mysql_stmt_bind_param(stmt, &p) && !mysql_stmt_execute(stmt) &&
              !mysql_stmt_bind_result(stmt, &r) && mysql_stmt_fetch(stmt) == 0;
    if (stmt)
        mysql_stmt_close(stmt);
    return ok && count > 0;
}

static int s_record(MYSQL *m, long version, const char *name)
{
    MYSQL_STMT *stmt = mysql_stmt_init(m);
    static const char sql[] =
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(3))";
    long long v = version;
    unsigned long len = strlen(name);
    MYSQL_BIND p[2] = {
        {.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &v},
        {.buffer_type = MYSQL_TYPE_STRING,
         .buffer = (void *)name,
         .buffer_length = len,
         .length = &len},
    };
    bool ok = stmt && !mysql_stmt_prepare(stmt, sql, sizeof sql - 1) &&
              !mysql_stmt_bind_param(stmt, p) && !mysql_stmt_execute(stmt);
    if (!ok)
        slog_error("db: recording migration %s failed: %s", name,
                   stmt ? mysql_stmt_error(stmt) : mysql_error(m));
    if (stmt)
        mysql_stmt_close(stmt);
    return ok ? 0 : -1;
}

static MYSQL *s_connect(const conn_config_t *c, int wait_s, migrate_stop_fn *stop, void *arg)
{
    int64_t until = clock_now_ms() + (int64_t)wait_s * 1000;
    bool logged = false;
    for (;;) {
        MYSQL *m = mysql_init(NULL);
        if (!m)
            return NULL;
        my_bool no = 0;
        mysql_optionsv(m, MYSQL_OPT_RECONNECT, &no);
        mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &c->connect_timeout_s);
        mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &c->read_timeout_s);
        mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        bool unix_socket = c->socket && *c->socket;
        unsigned proto = unix_socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
        mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &proto);
        if (mysql_real_connect(m, unix_socket ? "localhost" : c->host, c->user, c->password,
                               c->database, c->port, unix_socket ? c->socket : NULL,
                               CLIENT_MULTI_STATEMENTS))
            return m;
        if (!logged || clock_now_ms() >= until)
            slog_warn("db: migrations: cannot connect to the database: %s (%u)%s", mysql_error(m),
                      mysql_errno(m), clock_now_ms() >= until ? "; giving up" : "; retrying");
        logged = true;
        mysql_close(m);
        if (clock_now_ms() >= until)
            return NULL;
        for (int i = 0; i < 10; i++) {
            if (stop && stop(arg))
                return NULL;
            usleep(100 * 1000);
        }
    }
}

int migrate_run(const conn_config_t *config, const char *dir, int wait_s, migrate_stop_fn *stop,
                void *arg, long *wait_timeout_s)
{
    size_t count = 0;
    s_file_t *files = dir ? s_list(dir, &count) : calloc(1, sizeof(s_file_t));
    if (!files)
        return -1;
    MYSQL *m = s_connect(config, wait_s, stop, arg);
    if (!m) {
        free(files);
        return -1;
    }
    *wait_timeout_s = s_scalar(m, "SELECT @@SESSION.wait_timeout", 0);
    int rc = -1;
    if (!dir) {
        rc = 0;
        goto done;
    }
    long got = s_scalar(m, "SELECT GET_LOCK('sluice.schema_migrations', 120)", -1);
    if (got != 1) {
        slog_error("db: migrations: could not take the migration lock within %d s", S_LOCK_WAIT_S);
        goto done;
    }
    static const char create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version INT NOT NULL PRIMARY KEY,"
                                 " name VARCHAR(255) NOT NULL,"
                                 " applied_at DATETIME(3) NOT NULL"
                                 ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    if (s_query(m, create, sizeof create - 1, "creating schema_migrations") != 0)
        goto unlock;
    int applied = 0;
    for (size_t i = 0; i < count; i++) {
        if (s_applied(m, files[i].version))
            continue;
        size_t len = 0;
        char *sql = s_read(dir, files[i].name, &len);
        if (!sql) {
            slog_error("db: cannot read migration %s/%s", dir, files[i].name);
            goto unlock;
        }
        char what[300];
        snprintf(what, sizeof what, "migration %s", files[i].name);
        int q = s_query(m, sql, len, what);
        free(sql);
        if (q != 0 || s_record(m, files[i].version, files[i].name) != 0)
            goto unlock;
        slog_info("db: applied migration %s", files[i].name);
        applied++;
    }
    slog_info("db: schema up to date (%zu migrations, %d applied now)", count, applied);
    rc = 0;
unlock:
    s_scalar(m, "SELECT RELEASE_LOCK('sluice.schema_migrations')", 0);
done:
    mysql_close(m);
    free(files);
    return rc;
}
