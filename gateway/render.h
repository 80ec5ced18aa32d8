/*  render.h - worker replies (MessagePack) -> JSON text for clients.

    Pure. The one rule beyond a plain conversion: every integer under a key named
    "id" or ending in "_id" becomes a JSON string of digits (api.md: ids are
    strings so JavaScript keeps them exact); other integers (seq, next_after,
    counters) stay numbers.
*/
#ifndef SLUICE_GATEWAY_RENDER_H
#define SLUICE_GATEWAY_RENDER_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>

/* The JSON value of obj (key names the map key obj sits under, or NULL). Returns
   NULL when obj holds a string that is not valid UTF-8. */
json_t *render_json(const msgpack_object *obj, const char *key);

/* The compact JSON text of obj, malloc'd, with *len: the text render_dump(render_json
   (obj, NULL)) gives, written straight from the MessagePack without building a tree
   (the common reply path). NULL when obj holds a string that is not valid UTF-8, a
   NaN or an infinity. */
char *render_text(const msgpack_object *obj, size_t *len);

/* Compact JSON text of value, malloc'd, with *len; NULL on failure. Steals value. */
char *render_dump(json_t *value, size_t *len);

/* {"error":{"code":code,"message":message}} as malloc'd text. */
char *render_error(const char *code, const char *message, size_t *len);

#endif
