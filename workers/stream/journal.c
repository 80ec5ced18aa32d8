/*  journal.c - the stream worker's crash journal. See journal.h. */
#include "journal.h"
#include "idtable.h"
#include "slog.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_COMPACT_BYTES (1024 * 1024) /* rewrite the file from memory past this size */
#define S_STALE_TMP_S 60              /* a leftover ".new" file older than this is junk */
#define S_SUFFIX ".journal"

struct journal_t {
    char *dir;
    char *path;
    const char *base; /* file name inside dir (points into path) */
    int fd;           /* open, appending, flock'ed for our whole life */
    size_t bytes;     /* written to the current file */
    zhashx_t *open;   /* message id -> journal_entry_t*, begun and not ended */
};

static void *s_key(int64_t id)
{
    return idtable_key((uint64_t)id);
}

static int s_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int s_format_begin(char *out, size_t size, const journal_entry_t *e)
{
    return snprintf(out, size, "B %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", e->message_id,
                    e->conversation_id, e->user_id, e->device_id);
}

/*  A new file at path holding what is open now, locked before it gets its name, so
    nobody ever sees our journal unlocked while we live. */
static int s_create(journal_t *self)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.new", self->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return -1;
    }
    size_t bytes = 0;
    char line[128];
    for (journal_entry_t *e = zhashx_first(self->open); e; e = zhashx_next(self->open)) {
        int n = s_format_begin(line, sizeof line, e);
        if (s_write_all(fd, line, (size_t)n) != 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        bytes += (size_t)n;
    }
    if (rename(tmp, self->path) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (self->fd >= 0)
        close(self->fd);
    self->fd = fd;
    self->bytes = bytes;
    return 0;
}

journal_t *journal_open(const char *dir, const char *name, char *why, size_t why_size)
{
    if (zsys_dir_create("%s", dir) != 0) {
        snprintf(why, why_size, "cannot create the journal folder %s: %s", dir, strerror(errno));
        return NULL;
    }
    journal_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->fd = -1;
    self->dir = strdup(dir);
    self->open = idtable_new(true);
    char clean[128];
    size_t i = 0;
    for (; name[i] && i < sizeof clean - 1; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        clean[i] = ok ? c : '_';
    }
    clean[i] = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%d%s", dir, clean, (int)getpid(), S_SUFFIX);
    self->path = strdup(path);
    self->base = strrchr(self->path, '/') + 1;
    if (s_create(self) != 0) {
        snprintf(why, why_size, "cannot create the journal %s: %s", path, strerror(errno));
        journal_close(&self);
        return NULL;
    }
    return self;
}

void journal_close(journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    journal_t *self = *self_p;
    if (self->fd >= 0) {
        if (self->open && zhashx_size(self->open) == 0)
            unlink(self->path);
        close(self->fd);
    }
    zhashx_destroy(&self->open);
    free(self->dir);
    free(self->path);
    free(self);
    *self_p = NULL;
}

static void s_maybe_compact(journal_t *self)
{
    if (self->bytes < S_COMPACT_BYTES)
        return;
    if (s_create(self) != 0)
        slog_warn("journal: cannot compact %s: %s", self->path, strerror(errno));
}

int journal_begin(journal_t *self, const journal_entry_t *entry)
{
    char line[128];
    int n = s_format_begin(line, sizeof line, entry);
    journal_entry_t *copy = malloc(sizeof *copy);
    if (!copy)
        return -1;
    *copy = *entry;
    zhashx_update(self->open, s_key(entry->message_id), copy);
    if (s_write_all(self->fd, line, (size_t)n) != 0) {
        slog_warn("journal: cannot write %s: %s", self->path, strerror(errno));
        return -1;
    }
    self->bytes += (size_t)n;
    s_maybe_compact(self);
    return 0;
}

int journal_end(journal_t *self, int64_t message_id)
{
    if (!zhashx_lookup(self->open, s_key(message_id)))
        return 0;
    zhashx_delete(self->open, s_key(message_id));
    char line[64];
    int n = snprintf(line, sizeof line, "E %" PRId64 "\n", message_id);
    if (s_write_all(self->fd, line, (size_t)n) != 0) {
        slog_warn("journal: cannot write %s: %s", self->path, strerror(errno));
        return -1;
    }
    self->bytes += (size_t)n;
    s_maybe_compact(self);
    return 0;
}

size_t journal_open_count(const journal_t *self)
{
    return zhashx_size(self->open);
}

const char *journal_path(const journal_t *self)
{
    return self->path;
}

static bool s_int(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    while (s < end && *s == ' ')
        s++;
    bool neg = s < end && *s == '-';
    if (neg)
        s++;
    if (s >= end || *s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s++ - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    *p = s;
    return true;
}

size_t journal_parse(const char *text, size_t len, journal_entry_t **out)
{
    *out = NULL;
    size_t count = 0, cap = 0;
    journal_entry_t *list = NULL;
    zhashx_t *index = idtable_new(false); /* id -> 1 + position in list */
    const char *p = text, *end = text + len;
    while (p < end && index) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break; /* a torn last line */
        const char *q = p + 1;
        journal_entry_t e = {0};
        if (*p == 'B' && s_int(&q, nl, &e.message_id) && s_int(&q, nl, &e.conversation_id) &&
            s_int(&q, nl, &e.user_id) && s_int(&q, nl, &e.device_id) &&
            !zhashx_lookup(index, s_key(e.message_id))) {
            if (count == cap) {
                cap = cap ? cap * 2 : 16;
                journal_entry_t *grown = realloc(list, cap * sizeof *grown);
                if (!grown)
                    break;
                list = grown;
            }
            list[count++] = e;
            zhashx_insert(index, s_key(e.message_id), (void *)(uintptr_t)count);
        } else if (*p == 'E' && s_int(&q, nl, &e.message_id)) {
            size_t at = (size_t)(uintptr_t)zhashx_lookup(index, s_key(e.message_id));
            if (at) {
                list[at - 1].message_id = 0; /* ended: dropped below */
                zhashx_delete(index, s_key(e.message_id));
            }
        }
        p = nl + 1;
    }
    zhashx_destroy(&index);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++)
        if (list[i].message_id)
            list[kept++] = list[i];
    if (!kept) {
        free(list);
        return 0;
    }
    *out = list;
    return kept;
}

/* Reads a whole (small) journal file. */
static char *s_read_all(int fd, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                break;
            buf = grown;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == 0) {
            *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    free(buf);
    return NULL;
}

static bool s_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* One dead worker's journal: adopt its open entries, then remove it. */
static size_t s_adopt_file(journal_t *self, const char *path,
                           void (*fn)(void *, const journal_entry_t *), void *arg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd); /* its owner lives */
        return 0;
    }
    /* the owner may have replaced the file (compaction) between our open and lock:
       only the file still at that name counts */
    struct stat held, named;
    if (fstat(fd, &held) != 0 || stat(path, &named) != 0 || held.st_ino != named.st_ino ||
        held.st_dev != named.st_dev) {
        close(fd);
        return 0;
    }
    size_t len = 0;
    char *text = s_read_all(fd, &len);
    if (!text) {
        close(fd);
        return 0;
    }
    journal_entry_t *entries = NULL;
    size_t count = journal_parse(text, len, &entries);
    free(text);
    size_t written = 0;
    for (size_t i = 0; i < count; i++)
        if (journal_begin(self, &entries[i]) == 0)
            written++;
    if (written == count) {
        unlink(path); /* ours now: a crash from here on leaves them in our file */
        slog_info("journal: adopted %zu open message(s) from %s, whose worker is gone", count,
                  path);
        for (size_t i = 0; i < count; i++)
            fn(arg, &entries[i]);
    } else {
        count = 0; /* try again later; the entries we did copy are harmless twins */
    }
    free(entries);
    close(fd);
    return count;
}

size_t journal_adopt(journal_t *self, void (*fn)(void *arg, const journal_entry_t *entry),
                     void *arg)
{
    DIR *dir = opendir(self->dir);
    if (!dir)
        return 0;
    size_t adopted = 0;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(dir))) {
        if (strcmp(de->d_name, self->base) == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", self->dir, de->d_name);
        if (s_ends_with(de->d_name, S_SUFFIX)) {
            adopted += s_adopt_file(self, path, fn, arg);
        } else if (s_ends_with(de->d_name, S_SUFFIX ".new")) {
            /* a compaction that died half-way: its old file still has everything */
            struct stat st;
            if (stat(path, &st) == 0 && time(NULL) - st.st_mtime > S_STALE_TMP_S)
                unlink(path);
        }
    }
    closedir(dir);
    return adopted;
}
