/*  slog.c - logging. See slog.h for why this module keeps process-wide state. */
#include "slog.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static struct {
    char role[32];
    int level; /* slog_level_t; atomic: a reload may change it from another thread */
} s_log = {"sluice", SLOG_INFO};

static const char *s_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void slog_init(const char *role, slog_level_t level)
{
    snprintf(s_log.role, sizeof s_log.role, "%s", role);
    __atomic_store_n(&s_log.level, (int)level, __ATOMIC_RELAXED);
}

void slog_set_level(slog_level_t level)
{
    __atomic_store_n(&s_log.level, (int)level, __ATOMIC_RELAXED);
}

slog_level_t slog_level(void)
{
    return (slog_level_t)__atomic_load_n(&s_log.level, __ATOMIC_RELAXED);
}

bool slog_enabled(slog_level_t level)
{
    return (int)level <= __atomic_load_n(&s_log.level, __ATOMIC_RELAXED);
}

int slog_level_parse(const char *text, slog_level_t *level)
{
    for (int i = 0; i <= SLOG_DEBUG; i++) {
        if (strcasecmp(text, s_names[i]) == 0) {
            *level = (slog_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *level = SLOG_WARN;
        return 0;
    }
    return -1;
}

static void s_format_id(char *out, size_t out_size, const uint8_t *id, size_t size)
{
    bool printable = true;
    for (size_t i = 0; i < size; i++)
        if (id[i] < 0x21 || id[i] > 0x7e)
            printable = false;
    size_t n = 0;
    for (size_t i = 0; i < size && n + 3 < out_size; i++)
        n += (size_t)snprintf(out + n, out_size - n, printable ? "%c" : "%02x", id[i]);
    out[n] = 0;
}

void slog_write(slog_level_t level, const uint8_t *request_id, size_t request_id_size,
                const char *fmt, ...)
{
    if (!slog_enabled(level))
        return;
    char when[CLOCK_RFC3339_SIZE];
    clock_format_rfc3339(clock_wall_ms(), when);
    char rid[80] = "";
    if (request_id && request_id_size) {
        char id[70];
        s_format_id(id, sizeof id, request_id, request_id_size);
        snprintf(rid, sizeof rid, " rid=%s", id);
    }
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /* One fprintf per line so concurrent processes sharing a log file do not
       interleave within a line. */
    fprintf(stderr, "%s %s %s[%d]%s: %s\n", when, s_names[level], s_log.role, (int)getpid(), rid,
            text);
}
