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
#include <stdint.h>

typedef enum { CONFIG_STR, CONFIG_INT, CONFIG_BOOL } config_type_t;

typedef struct {
    const char *name;          /* snake_case */
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

/* The getters assert that name is one of the program's options: asking for an
   undeclared name is our own bug, never input. */
const char *config_str(const config_t *self, const char *name);
int64_t config_int(const config_t *self, const char *name);
bool config_bool(const config_t *self, const char *name);

void config_destroy(config_t **self_p);

#endif
