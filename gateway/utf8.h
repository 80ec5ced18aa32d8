/*  utf8.h - the two byte scans that JSON text in and out of the gateway needs:
    a UTF-8 sequence checked as jansson checks it, and a run of bytes a JSON
    string carries as they are. Shared by render.c (replies, events) and
    body_json.c (request bodies): both walk items of up to max_item_bytes on the
    loop, so the common case (plain ASCII) goes eight bytes at a time. Pure.
*/
#ifndef SLUICE_GATEWAY_UTF8_H
#define SLUICE_GATEWAY_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at p (left > 0 bytes there), as jansson
   checks it: no overlong forms, no surrogates, nothing above U+10FFFF; 0 when it
   is not one. */
size_t utf8_seq_len(const unsigned char *p, size_t left);

/* How many bytes from p on (at most left) are 0x20-0x7F but '"' and '\\': the
   bytes a JSON string holds unescaped, and plain ASCII. */
size_t utf8_json_plain(const unsigned char *p, size_t left);

#endif
