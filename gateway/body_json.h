/*  body_json.h - a request body's JSON text -> a jansson value, fast for the
    bodies the API takes.

    jansson's parser reads a character at a time (about 30-50 ms of the loop for a
    1 MB string on the usual machine), and a POST of an item of max_item_bytes is
    an ordinary request: every other client of the gateway waited that long. The
    bodies of every route are one object of strings, booleans and nulls, which
    this reads eight bytes at a time where the text is plain ASCII. Anything
    else — a number, an array, a nested object, malformed text, a duplicate key,
    "\u0000" — goes to jansson, so the answer is always json_loadb's, and its
    error messages too. Pure.
*/
#ifndef SLUICE_GATEWAY_BODY_JSON_H
#define SLUICE_GATEWAY_BODY_JSON_H

#include <jansson.h>
#include <stddef.h>

/* json_loadb(data, len, JSON_REJECT_DUPLICATES, err): the same value (equal by
   json_equal, keys in the same order), or NULL and jansson's error. */
json_t *body_json_load(const char *data, size_t len, json_error_t *err);

/* The fast reading alone: the value, or NULL when the body is left to jansson.
   For tests, which check that the bodies the API takes never are. */
json_t *body_json_read(const char *data, size_t len);

#endif
