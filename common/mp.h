/*  mp.h - MessagePack helpers over msgpack-c: typed lookups in a parsed map and
    packers for the bodies every process writes (replies, errors).

    Lookups never trust the value: a wrong type answers "absent" or false, so a
    caller turns it into a 400 with its own message.
*/
#ifndef SLUICE_MP_H
#define SLUICE_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*  Checks that data holds exactly one well-formed MessagePack value whose declared
    container and string sizes fit in the bytes given. msgpack-c allocates a
    container's declared element count before reading it, so a 5-byte array32
    header from a peer would cost gigabytes: run this before msgpack_unpack on
    anything from outside. Returns false with *reason set. */
bool mp_check(const void *data, size_t size, const char **reason);

/* Value under key in map, or NULL when obj is not a map or has no such key. */
const msgpack_object *mp_get(const msgpack_object *map, const char *key);

/* Typed getters: return false when absent or of another type. A str is returned
   as pointer + length (not NUL-terminated). Integers accept both signed and
   unsigned encodings that fit in int64. */
bool mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len);
bool mp_get_int(const msgpack_object *map, const char *key, int64_t *value);
bool mp_get_bool(const msgpack_object *map, const char *key, bool *value);
bool mp_as_int(const msgpack_object *obj, int64_t *value);
bool mp_str_eq(const msgpack_object *obj, const char *s);

/* Packing helpers */
void mp_pack_cstr(msgpack_packer *pk, const char *s);
void mp_pack_strn(msgpack_packer *pk, const char *s, size_t len);
/* key (a C string) followed by a value */
void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void mp_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value);
void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);

/* {"status": status, "error": {"code": code, "message": message}} into buf (cleared
   first). */
void mp_error_body(msgpack_sbuffer *buf, int status, const char *code, const char *message);

#endif
