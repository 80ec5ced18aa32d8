/*  health.h - GET /health and GET /metrics, built from the broker's sys status,
    a db.ping and the gateway's own counters. */
#ifndef SLUICE_GATEWAY_HEALTH_H
#define SLUICE_GATEWAY_HEALTH_H

#include "gateway.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct health_t health_t;
typedef struct health_call_t health_call_t;

/* The answers of a gateway, each built at most once per cache_ms. NULL: no memory. */
health_t *health_new(gw_t *gw, int64_t cache_ms);
void health_destroy(health_t **self_p);

/* The answer: status, a malloc'd body (ownership passes to the callee) and its
   content type. */
typedef void(health_fn)(void *arg, int status, char *body, size_t len, const char *content_type);

/*  Starts building /health (metrics false) or /metrics (metrics true). Returns the
    call, or NULL when the answer was already given (fn was called before the
    return, e.g. no broker connected). */
health_call_t *health_start(gw_t *gw, bool metrics, health_fn *fn, void *arg);

/* No callback will come. Sets *call_p to NULL. */
void health_cancel(gw_t *gw, health_call_t **call_p);

#endif
