/*  config.h - one configuration per process: defaults, then one config file, then
    SLUICE_* environment variables, then command-line flags (last one wins).

    File: `name = value` lines, `#` comments. Environment: SLUICE_<NAME> with the
    name upper-cased and '-' or '.' as '_'. Flags: --name=value or --name value
    ('-' and '_' are the same). Every program gets --help, --version, --config PATH
    (also SLUICE_CONFIG) and log_level.
*/
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CONFIG_STR, CONFIG_INT, CONFIG_BOOL } config_type_t;

typedef struct {
    const char *name; /* snake_case */
    config_type_t type;
    const char *default_value; /* as text; NULL means empty string */
    const char *help;          /* one line for --help */
} config_option_t;

typedef struct config_t config_t;

/*  Loads the configuration of program from options (terminated by a {NULL} entry).
    Returns 0 with *self_p set; 1 when --help or --version was printed (exit 0);
    -1 after printing the reason to stderr (exit 2). */
int config_load(config_t **self_p, const char *program, const char *summary,
                const config_option_t *options, int argc, char **argv);

/*  Reads the same sources again: the config file named at start (--config or
    SLUICE_CONFIG; it may have been edited since), the environment, and the original
    flags. Returns 0 with *fresh_p set: the caller compares it with config_diff,
    applies what it can and keeps or destroys it. Returns -1 with the reason in why
    (e.g. "/etc/sluice/x.conf line 3: pool_size must be an integer, got 'ten'"):
    nothing is printed and nothing changed. The log level is not touched either:
    the caller applies the one it accepts (slog_set_level). */
int config_reload(const config_t *self, config_t **fresh_p, char *why, size_t why_size);

/* Names of the settings whose values differ between a and b (configurations of the
   same program), at most max of them in names (static strings); returns how many. */
size_t config_diff(const config_t *a, const config_t *b, const char **names, size_t max);

/*  A SIGHUP for a process that applies only log_level: reloads (see config_reload),
    applies the new log level, and logs one line, prefixed with who (may be ""):
    what changed and which other settings need a restart, or why the reload was
    rejected. Returns 0 with *fresh_p set (the caller keeps it as the settings now
    applied), -1 when rejected (nothing changed). current: the settings applied now. */
int config_reload_log_level(const config_t *started, const config_t *current, const char *who,
                            config_t **fresh_p);

/*  Checks and applies the settings of fresh that the process can change while it
    runs, all or nothing: returns 0 once applied, or -1 with the reason in why
    (nothing applied). */
typedef int(config_apply_fn)(void *arg, const config_t *fresh, char *why, size_t why_size);

/*  The same SIGHUP for a process that also applies the settings named in
    reloadable (NULL-terminated) through apply: a reload that apply refuses is
    rejected whole (log level included), with one line saying why. The line of an
    accepted one names each change as "name old -> new". */
int config_reload_apply(const config_t *started, const config_t *current, const char *who,
                        const char *const *reloadable, config_apply_fn *apply, void *arg,
                        config_t **fresh_p);

/* The getters assert that name is one of the program's options: asking for an
   undeclared name is our own bug, never input. */
const char *config_str(const config_t *self, const char *name);
int64_t config_int(const config_t *self, const char *name);
bool config_bool(const config_t *self, const char *name);

void config_destroy(config_t **self_p);

/*  Checks that a program makes before it makes any socket or connection, so that a
    bad setting is reported as such (exit 2), never as what it later breaks. Each
    returns 0, or -1 with a reason naming the setting in why. */

/* The integer setting name is within [min, max]. */
int config_check_int(const config_t *self, const char *name, int64_t min, int64_t max, char *why,
                     size_t why_size);

typedef struct {
    const char *name;
    int64_t min, max;
} config_range_t;

/* config_check_int for each of ranges (terminated by a {NULL} entry), the first bad one. */
int config_check_ints(const config_t *self, const config_range_t *ranges, char *why,
                      size_t why_size);

/* The string setting name is a comma-separated list of one or more ZeroMQ
   endpoints (transport://address; a tcp one ends in :port). */
int config_check_endpoints(const config_t *self, const char *name, char *why, size_t why_size);

#endif
