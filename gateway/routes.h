/*  routes.h - the gateway's route table: which method and path is which SMP op.

    Pure: no I/O, no allocation. The table is the single place that says which
    service and op serve a route, whether it needs a token, whether it is a write
    (takes an Idempotency-Key) and what its metrics label is.
*/
#ifndef SLUICE_GATEWAY_ROUTES_H
#define SLUICE_GATEWAY_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ROUTE_USERS_CREATE,
    ROUTE_SESSIONS_CREATE,
    ROUTE_DEVICES_LIST,
    ROUTE_DEVICE_DELETE,
    ROUTE_CLIP_CREATE,
    ROUTE_CLIP_LIST,
    ROUTE_CLIP_LATEST,
    ROUTE_CLIP_DELETE,
    ROUTE_CONV_CREATE,
    ROUTE_CONV_LIST,
    ROUTE_MSG_LIST,
    ROUTE_MSG_CREATE,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_NOTIFY,
    ROUTE_STATIC,
    ROUTE_COUNT,
    ROUTE_UNMATCHED = ROUTE_COUNT, /* metrics label of 404/405 answers */
} route_id_t;

typedef struct {
    route_id_t id;
    const char *method;  /* "GET", "POST", "DELETE" */
    const char *pattern; /* path with at most one "{id}" segment */
    const char *label;   /* metrics label: "POST /v1/clipboard" */
    const char *service; /* SMP service, NULL when answered by the gateway itself */
    const char *op;      /* SMP op (also the name used in route_deadlines) */
    bool auth;           /* needs Authorization: Bearer */
    bool write;          /* takes Idempotency-Key */
    bool body;           /* has a JSON body */
} route_t;

#define ROUTE_PARAM_MAX 64 /* bytes of a path parameter kept for validation */

/*  Finds the route of method + path (path without the query). Returns 0 with
    *route set and the {id} segment copied into param (truncated to
    ROUTE_PARAM_MAX-1, which validation then refuses as too long); 404 when no
    pattern matches the path; 405 when the path exists for other methods, with
    those listed in allow ("GET, POST"). */
int routes_match(const char *method, const char *path, const route_t **route,
                 char param[ROUTE_PARAM_MAX], char *allow, size_t allow_size);

const route_t *routes_get(route_id_t id);

/* Metrics label of a route id, including ROUTE_UNMATCHED ("unmatched"). */
const char *routes_label(route_id_t id);

/*  Parses "op=ms,op=ms" (ops as in the table, e.g. "clipboard.create=3000") into
    out[], which the caller filled with the default first. Returns 0, or -1 with a
    reason in err. */
int routes_parse_deadlines(const char *spec, uint32_t out[ROUTE_COUNT], char *err, size_t err_size);

#endif
