/*  routes.c - the route table. See routes.h. */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Order matters only for 405: every pattern is tried, the method decides. */
static const route_t s_routes[ROUTE_COUNT] = {
    {ROUTE_USERS_CREATE, "POST", "/v1/users", "POST /v1/users", "db", "user.create", false, true,
     true},
    {ROUTE_SESSIONS_CREATE, "POST", "/v1/sessions", "POST /v1/sessions", "db", "session.create",
     false, true, true},
    {ROUTE_DEVICES_LIST, "GET", "/v1/devices", "GET /v1/devices", "db", "device.list", true, false,
     false},
    {ROUTE_DEVICE_DELETE, "DELETE", "/v1/devices/{id}", "DELETE /v1/devices/{id}", "db",
     "device.revoke", true, true, false},
    {ROUTE_CLIP_CREATE, "POST", "/v1/clipboard", "POST /v1/clipboard", "db", "clipboard.create",
     true, true, true},
    {ROUTE_CLIP_LIST, "GET", "/v1/clipboard", "GET /v1/clipboard", "db", "clipboard.list", true,
     false, false},
    {ROUTE_CLIP_LATEST, "GET", "/v1/clipboard/latest", "GET /v1/clipboard/latest", "db",
     "clipboard.latest", true, false, false},
    {ROUTE_CLIP_DELETE, "DELETE", "/v1/clipboard/{id}", "DELETE /v1/clipboard/{id}", "db",
     "clipboard.delete", true, true, false},
    {ROUTE_CONV_CREATE, "POST", "/v1/chat/conversations", "POST /v1/chat/conversations", "db",
     "chat.conversation.create", true, true, true},
    {ROUTE_CONV_LIST, "GET", "/v1/chat/conversations", "GET /v1/chat/conversations", "db",
     "chat.conversation.list", true, false, false},
    {ROUTE_MSG_LIST, "GET", "/v1/chat/conversations/{id}/messages",
     "GET /v1/chat/conversations/{id}/messages", "db", "chat.message.list", true, false, false},
    {ROUTE_MSG_CREATE, "POST", "/v1/chat/conversations/{id}/messages",
     "POST /v1/chat/conversations/{id}/messages", "chat", "chat.generate", true, true, true},
    {ROUTE_HEALTH, "GET", "/health", "GET /health", NULL, "health", false, false, false},
    {ROUTE_METRICS, "GET", "/metrics", "GET /metrics", NULL, "metrics", false, false, false},
    {ROUTE_NOTIFY, "GET", "/v1/sync/notify", "GET /v1/sync/notify", NULL, "notify", true, false,
     false},
    {ROUTE_STATIC, "GET", "/", "GET static", NULL, "static", false, false, false},
};

/* Does path match pattern? A "{id}" segment matches one non-empty segment, which
   is copied into param. */
static bool s_match(const char *pattern, const char *path, char param[ROUTE_PARAM_MAX])
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (strncmp(p, "{id}", 4) == 0) {
            const char *end = strchr(s, '/');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (len == 0)
                return false;
            size_t keep = len < ROUTE_PARAM_MAX - 1 ? len : ROUTE_PARAM_MAX - 1;
            memcpy(param, s, keep);
            param[keep] = 0;
            p += 4;
            s += len;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == 0 && *s == 0;
}

int routes_match(const char *method, const char *path, const route_t **route,
                 char param[ROUTE_PARAM_MAX], char *allow, size_t allow_size)
{
    bool path_found = false;
    size_t used = 0;
    if (allow_size)
        allow[0] = 0;
    param[0] = 0;
    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        const route_t *r = &s_routes[i];
        char scratch[ROUTE_PARAM_MAX] = "";
        /* the static files are everything else that a GET asks for, checked last
           by the caller; here "/" alone stands for them */
        if (!s_match(r->pattern, path, scratch))
            continue;
        if (strcmp(r->method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0 &&
             r->id == ROUTE_STATIC)) {
            *route = r;
            memcpy(param, scratch, ROUTE_PARAM_MAX);
            return 0;
        }
        path_found = true;
        if (allow_size && !strstr(allow, r->method)) {
            int n = snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "", r->method);
            if (n > 0 && (size_t)n < allow_size - used)
                used += (size_t)n;
        }
    }
    /* the alias of the original application */
    if (strcmp(path, "/sync/notify") == 0) {
        if (strcmp(method, "GET") == 0) {
            *route = &s_routes[ROUTE_NOTIFY];
            return 0;
        }
        if (allow_size)
            snprintf(allow, allow_size, "GET");
        return 405;
    }
    return path_found ? 405 : 404;
}

const route_t *routes_get(route_id_t id)
{
    return id < ROUTE_COUNT ? &s_routes[id] : NULL;
}

const char *routes_label(route_id_t id)
{
    return id < ROUTE_COUNT ? s_routes[id].label : "unmatched";
}

int routes_parse_deadlines(const char *spec, uint32_t out[ROUTE_COUNT], char *err, size_t err_size)
{
    const char *p = spec;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[128];
        if (len == 0 || len >= sizeof item) {
            snprintf(err, err_size, "route_deadlines: bad item near '%.20s'", p);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        char *end = NULL;
        long ms = eq ? strtol(eq + 1, &end, 10) : -1;
        if (!eq || end == eq + 1 || *end || ms < 1 || ms > 3600 * 1000) {
            snprintf(err, err_size, "route_deadlines: '%s' is not op=milliseconds (1-3600000)",
                     item);
            return -1;
        }
        *eq = 0;
        bool found = false;
        for (size_t i = 0; i < ROUTE_COUNT; i++) {
            if (s_routes[i].service && strcmp(s_routes[i].op, item) == 0) {
                out[i] = (uint32_t)ms;
                found = true;
            }
        }
        if (!found) {
            snprintf(err, err_size, "route_deadlines: no route has op '%s'", item);
            return -1;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}
