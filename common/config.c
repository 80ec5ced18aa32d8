/*  config.c - defaults < config file < SLUICE_* environment < flags. See config.h. */
#include "config.h"
#include "slog.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_NAME_MAX 64

/* Options every program has, after its own. */
static const config_option_t s_builtin[] = {
    {"log_level", CONFIG_STR, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, NULL},
};

struct config_t {
    const config_option_t **options; /* the program's, then the built-ins */
    char **values;                   /* text of each option's value, owned */
    size_t count;
    const char *program;
    const char *summary;          /* for --help */
    const config_option_t *table; /* the program's options, as given to config_load */
    int argc;                     /* the original flags (main's argv lives as long as */
    char **argv;                  /* the process), read again by config_reload */
    char error[1024];             /* why the last load failed */
};

/* "Log-Level", "log.level" and "log_level" all name log_level. */
static void s_normalize(char *out, const char *name, size_t len)
{
    size_t i = 0;
    for (; i < len && i < S_NAME_MAX - 1; i++) {
        char ch = name[i];
        out[i] = (ch == '-' || ch == '.') ? '_' : (char)tolower((unsigned char)ch);
    }
    out[i] = 0;
}

static ssize_t s_index(const config_t *self, const char *name, size_t len)
{
    char norm[S_NAME_MAX];
    if (len >= S_NAME_MAX)
        return -1;
    s_normalize(norm, name, len);
    for (size_t i = 0; i < self->count; i++)
        if (strcmp(self->options[i]->name, norm) == 0)
            return (ssize_t)i;
    return -1;
}

static int s_parse_bool(const char *text, bool *value)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *value = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *value = false;
            return 0;
        }
    }
    return -1;
}

static int s_parse_int(const char *text, int64_t *value)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return -1;
    *value = v;
    return 0;
}

/* Checks the value's type before storing it, so getters never fail later. */
/* Keeps the first reason a load failed; config_load prints it, config_reload returns it. */
static void s_fail(config_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_fail(config_t *self, const char *fmt, ...)
{
    if (self->error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->error, sizeof self->error, fmt, ap);
    va_end(ap);
}

static int s_set(config_t *self, size_t i, const char *value, const char *where)
{
    const config_option_t *opt = self->options[i];
    int64_t n;
    bool b;
    if (opt->type == CONFIG_INT && s_parse_int(value, &n) != 0) {
        s_fail(self, "%s: %s must be an integer, got '%s'", where, opt->name, value);
        return -1;
    }
    if (opt->type == CONFIG_BOOL && s_parse_bool(value, &b) != 0) {
        s_fail(self, "%s: %s must be true or false, got '%s'", where, opt->name, value);
        return -1;
    }
    free(self->values[i]);
    self->values[i] = strdup(value);
    return 0;
}

static char *s_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = 0;
    return s;
}

static int s_load_file(config_t *self, const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        s_fail(self, "cannot open config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int number = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, file)) {
        number++;
        char where[512];
        snprintf(where, sizeof where, "%s line %d", path, number);
        char *text = s_trim(line);
        if (*text == 0 || *text == '#')
            continue;
        char *eq = strchr(text, '=');
        if (!eq) {
            s_fail(self, "%s: expected 'name = value'", where);
            rc = -1;
            break;
        }
        *eq = 0;
        char *name = s_trim(text);
        ssize_t i = s_index(self, name, strlen(name));
        if (i < 0) {
            s_fail(self, "%s: unknown setting '%s'", where, name);
            rc = -1;
            break;
        }
        rc = s_set(self, (size_t)i, s_trim(eq + 1), where);
    }
    fclose(file);
    return rc;
}

static int s_load_env(config_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        char var[S_NAME_MAX + 8] = "SLUICE_";
        size_t n = 7;
        for (const char *p = self->options[i]->name; *p && n < sizeof var - 1; p++)
            var[n++] = (char)toupper((unsigned char)*p);
        var[n] = 0;
        const char *value = getenv(var);
        if (value && s_set(self, i, value, var) != 0)
            return -1;
    }
    return 0;
}

static void s_usage(const config_t *self, const char *summary)
{
    printf("Usage: %s [--config PATH] [--NAME VALUE ...]\n%s\n\nSettings (flag, or "
           "SLUICE_NAME in the environment, or 'name = value' in the config file):\n",
           self->program, summary);
    for (size_t i = 0; i < self->count; i++) {
        const config_option_t *opt = self->options[i];
        char flag[S_NAME_MAX + 2];
        size_t k = 0;
        for (const char *p = opt->name; *p && k < sizeof flag - 1; p++)
            flag[k++] = *p == '_' ? '-' : *p;
        flag[k] = 0;
        printf("  --%-22s %s (default: %s)\n", flag, opt->help,
               opt->default_value && *opt->default_value ? opt->default_value : "none");
    }
    printf("  --%-22s %s\n  --%-22s %s\n  --%-22s %s\n", "config PATH",
           "read settings from PATH (also SLUICE_CONFIG)", "help", "show this help and exit",
           "version", "show the version and exit");
}

/* Finds --config in argv before anything else, so flags still win over the file. */
static const char *s_config_path(int argc, char **argv)
{
    const char *path = getenv("SLUICE_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    return path && *path ? path : NULL;
}

static int s_load_flags(config_t *self, const char *summary, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            s_usage(self, summary);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", self->program, SLUICE_VERSION);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            s_fail(self, "unexpected argument '%s' (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            i += eq ? 0 : 1;
            continue;
        }
        ssize_t k = s_index(self, name, len);
        if (k < 0) {
            s_fail(self, "unknown option '%s' (see --help)", arg);
            return -1;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (self->options[k]->type == CONFIG_BOOL)
            value = "true"; /* a bare boolean flag turns it on */
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            s_fail(self, "option '%s' needs a value", arg);
            return -1;
        }
        if (s_set(self, (size_t)k, value, "command line") != 0)
            return -1;
    }
    return 0;
}

/*  Defaults, file, environment, flags: the one way a configuration is made, at start
    and on reload. Returns 0, 1 (--help or --version printed) or -1 with the reason
    in the config's error; *self_p is set in every case (destroyed by the caller). */
static int s_build(config_t **self_p, const char *program, const char *summary,
                   const config_option_t *options, int argc, char **argv)
{
    config_t *self = calloc(1, sizeof *self);
    size_t own = 0, builtin = 0;
    while (options[own].name)
        own++;
    while (s_builtin[builtin].name)
        builtin++;
    self->count = own + builtin;
    self->program = program;
    self->summary = summary;
    self->table = options;
    self->argc = argc;
    self->argv = argv;
    self->options = calloc(self->count, sizeof *self->options);
    self->values = calloc(self->count, sizeof *self->values);
    for (size_t i = 0; i < self->count; i++) {
        self->options[i] = i < own ? &options[i] : &s_builtin[i - own];
        const char *def = self->options[i]->default_value;
        self->values[i] = strdup(def ? def : "");
    }
    *self_p = self;
    const char *path = s_config_path(argc, argv);
    int rc = 0;
    if (path)
        rc = s_load_file(self, path);
    if (rc == 0)
        rc = s_load_env(self);
    if (rc == 0)
        rc = s_load_flags(self, summary, argc, argv);
    slog_level_t level;
    if (rc == 0 && slog_level_parse(config_str(self, "log_level"), &level) != 0) {
        s_fail(self, "log_level must be error, warn, info or debug, got '%s'",
               config_str(self, "log_level"));
        rc = -1;
    }
    return rc;
}

int config_load(config_t **self_p, const char *program, const char *summary,
                const config_option_t *options, int argc, char **argv)
{
    *self_p = NULL;
    config_t *self = NULL;
    int rc = s_build(&self, program, summary, options, argc, argv);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "%s: %s\n", program, self->error);
        config_destroy(&self);
        return rc;
    }
    slog_level_t level = SLOG_INFO;
    slog_level_parse(config_str(self, "log_level"), &level);
    const char *role = strncmp(program, "sluice-", 7) == 0 ? program + 7 : program;
    slog_init(role, level);
    *self_p = self;
    return 0;
}

int config_reload(const config_t *self, config_t **fresh_p, char *why, size_t why_size)
{
    *fresh_p = NULL;
    config_t *fresh = NULL;
    int rc = s_build(&fresh, self->program, self->summary, self->table, self->argc, self->argv);
    if (rc != 0) {
        snprintf(why, why_size, "%s", rc < 0 ? fresh->error : "--help or --version in the flags");
        config_destroy(&fresh);
        return -1;
    }
    *fresh_p = fresh;
    return 0;
}

size_t config_diff(const config_t *a, const config_t *b, const char **names, size_t max)
{
    assert(a->table == b->table && "config_diff: configurations of two programs");
    size_t n = 0;
    for (size_t i = 0; i < a->count; i++)
        if (strcmp(a->values[i], b->values[i]) != 0 && n < max)
            names[n++] = a->options[i]->name;
    return n;
}

static size_t s_must_find(const config_t *self, const char *name)
{
    ssize_t i = s_index(self, name, strlen(name));
    assert(i >= 0 && "config: asked for an undeclared option");
    return (size_t)i;
}

const char *config_str(const config_t *self, const char *name)
{
    return self->values[s_must_find(self, name)];
}

int64_t config_int(const config_t *self, const char *name)
{
    int64_t v = 0;
    s_parse_int(self->values[s_must_find(self, name)], &v);
    return v;
}

bool config_bool(const config_t *self, const char *name)
{
    bool v = false;
    s_parse_bool(self->values[s_must_find(self, name)], &v);
    return v;
}

void config_destroy(config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    config_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->values[i]);
    free(self->values);
    free(self->options);
    free(self);
    *self_p = NULL;
}

int config_reload_log_level(const config_t *started, const config_t *current, const char *who,
                            config_t **fresh_p)
{
    return config_reload_apply(started, current, who, NULL, NULL, NULL, fresh_p);
}

static bool s_listed(const char *const *names, const char *name)
{
    if (strcmp(name, "log_level") == 0)
        return true;
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

int config_reload_apply(const config_t *started, const config_t *current, const char *who,
                        const char *const *reloadable, config_apply_fn *apply, void *arg,
                        config_t **fresh_p)
{
    config_t *fresh = NULL;
    char why[1024];
    if (config_reload(started, &fresh, why, sizeof why) != 0 ||
        (apply && apply(arg, fresh, why, sizeof why) != 0)) {
        slog_error("%sreload (SIGHUP) rejected, settings unchanged: %s", who, why);
        config_destroy(&fresh);
        return -1;
    }
    slog_level_t level = SLOG_INFO;
    slog_level_parse(config_str(fresh, "log_level"), &level);
    slog_set_level(level);
    /* reloadable settings against what was last applied, the others against what
       runs since the start */
    char changed[1024] = "", ignored[512] = "";
    const char *names[64];
    size_t n = config_diff(current, fresh, names, 64), used = 0, used_ignored = 0;
    for (size_t i = 0; i < n; i++)
        if (s_listed(reloadable, names[i]) && used < sizeof changed)
            used += (size_t)snprintf(changed + used, sizeof changed - used, "%s%s %s -> %s",
                                     used ? ", " : "changed ", names[i],
                                     config_str(current, names[i]), config_str(fresh, names[i]));
    n = config_diff(started, fresh, names, 64);
    for (size_t i = 0; i < n; i++)
        if (!s_listed(reloadable, names[i]) && used_ignored < sizeof ignored)
            used_ignored += (size_t)snprintf(ignored + used_ignored, sizeof ignored - used_ignored,
                                             "%s%s", used_ignored ? ", " : "", names[i]);
    slog_info("%sreload (SIGHUP): %s%s%s", who, used ? changed : "nothing to change",
              used_ignored ? "; needs a restart, ignored: " : "", ignored);
    *fresh_p = fresh;
    return 0;
}

int config_check_int(const config_t *self, const char *name, int64_t min, int64_t max, char *why,
                     size_t why_size)
{
    int64_t v = config_int(self, name);
    if (v >= min && v <= max)
        return 0;
    snprintf(why, why_size, "%s must be %" PRId64 "-%" PRId64 ", got %" PRId64, name, min, max, v);
    return -1;
}

int config_check_ints(const config_t *self, const config_range_t *ranges, char *why,
                      size_t why_size)
{
    for (const config_range_t *r = ranges; r->name; r++)
        if (config_check_int(self, r->name, r->min, r->max, why, why_size) != 0)
            return -1;
    return 0;
}

/* "tcp://host:port", "ipc://path", "inproc://name": the transport, then something,
   and a tcp endpoint ends in :port (or :*). What libzmq itself would refuse at
   connect or bind, said before any socket exists. */
static bool s_endpoint_ok(const char *ep, size_t len)
{
    static const char *const transports[] = {"tcp://", "ipc://",  "inproc://", "ws://",   "wss://",
                                             "pgm://", "epgm://", "tipc://",   "vmci://", NULL};
    for (size_t i = 0; transports[i]; i++) {
        size_t t = strlen(transports[i]);
        if (len <= t || strncmp(ep, transports[i], t) != 0)
            continue;
        if (i > 0)
            return true;
        const char *colon = NULL;
        for (const char *p = ep + t; p < ep + len; p++)
            if (*p == ':')
                colon = p;
        if (!colon || colon == ep + t || colon + 1 == ep + len)
            return false;
        if (colon + 2 == ep + len && colon[1] == '*')
            return true;
        for (const char *p = colon + 1; p < ep + len; p++)
            if (!isdigit((unsigned char)*p))
                return false;
        long port = strtol(colon + 1, NULL, 10);
        return port > 0 && port <= 65535;
    }
    return false;
}

int config_check_endpoints(const config_t *self, const char *name, char *why, size_t why_size)
{
    const char *list = config_str(self, name);
    size_t count = 0;
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (!len)
            break;
        if (!s_endpoint_ok(p, len)) {
            snprintf(why, why_size,
                     "%s: '%.*s' is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:5550)", name,
                     (int)(len > 200 ? 200 : len), p);
            return -1;
        }
        count++;
        p += len;
    }
    if (count == 0) {
        snprintf(why, why_size, "%s must name at least one endpoint", name);
        return -1;
    }
    return 0;
}
