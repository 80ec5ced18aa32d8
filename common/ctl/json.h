/*  json.h - JSON <-> MessagePack for sluicectl: what an operator types becomes a
    request body, and every body the broker sends back is printed as JSON. */
#ifndef SLUICE_CTL_JSON_H
#define SLUICE_CTL_JSON_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Packs a JSON value (integers stay integers, reals stay floats). */
void json_pack_msgpack(msgpack_packer *pk, const json_t *value);

/*  A MessagePack body (checked with mp_check first) as a new JSON value, or NULL
    when it is not well-formed. Binary strings become hex text; map keys that are not
    strings become their compact JSON text. */
json_t *json_from_msgpack(const uint8_t *body, size_t size);
json_t *json_from_object(const msgpack_object *obj);

#endif
