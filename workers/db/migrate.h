/*  migrate.h - schema migrations, applied at start before the worker serves.

    The numbered files NNN_name.sql of a folder are applied in order, each once,
    recorded in schema_migrations. The whole run holds GET_LOCK, so several
    workers starting at once apply each migration exactly once: the first does
    the work, the others wait for the lock and then find everything applied.
    This runs before the event loop starts, so it uses the blocking API.
*/
#ifndef SLUICE_DB_MIGRATE_H
#define SLUICE_DB_MIGRATE_H

#include "conn.h"

#include <stdbool.h>

typedef bool(migrate_stop_fn)(void *arg);

/*  Connects (retrying every second until wait_s passed or stop says so), applies
    what is missing from dir (NULL: none) and returns 0, or -1 after logging why.
    *wait_timeout_s gets the server's wait_timeout (for the recycle_s check). */
int migrate_run(const conn_config_t *config, const char *dir, int wait_s, migrate_stop_fn *stop,
                void *arg, long *wait_timeout_s);

#endif
