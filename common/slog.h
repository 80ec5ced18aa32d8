/*  slog.h - logging: one line per event to stderr,
    `2026-11-23T19:50:01.123Z INFO broker[1234] rid=ab12: message`.

    The role and level are set at start (slog_init) and read everywhere; that is
    the one piece of process-wide state outside a process's context, kept so that
    every module can log without threading a logger through every call. The level
    may change at run time (slog_set_level, on SIGHUP): it is read and written
    atomically, so any thread may change it.
    Never pass a token or password to a log call.
*/
#ifndef SLUICE_SLOG_H
#define SLUICE_SLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { SLOG_ERROR = 0, SLOG_WARN, SLOG_INFO, SLOG_DEBUG } slog_level_t;

void slog_init(const char *role, slog_level_t level);
/* Changes the level at run time (a reload); lines already being written are unaffected. */
void slog_set_level(slog_level_t level);
slog_level_t slog_level(void);
bool slog_enabled(slog_level_t level);
/* "error", "warn", "info", "debug" → level; -1 when unknown. */
int slog_level_parse(const char *text, slog_level_t *level);

/* request_id may be NULL; it is printed as text when printable, hex otherwise. */
void slog_write(slog_level_t level, const uint8_t *request_id, size_t request_id_size,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define slog_error(...) slog_write(SLOG_ERROR, NULL, 0, __VA_ARGS__)
#define slog_warn(...) slog_write(SLOG_WARN, NULL, 0, __VA_ARGS__)
#define slog_info(...) slog_write(SLOG_INFO, NULL, 0, __VA_ARGS__)
#define slog_debug(...)                                                                       \
    do {                                                                                      \
        if (slog_enabled(SLOG_DEBUG))                                                         \
            slog_write(SLOG_DEBUG, NULL, 0, __VA_ARGS__);                                     \
    } while (0)

#endif
