/*  utf8.c - UTF-8 and JSON string byte scans. See utf8.h. */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

/* As jansson checks it (utf.c): the lead byte gives the length, then the value
   must be in range for it. */
size_t utf8_seq_len(const unsigned char *p, size_t left)
{
    unsigned c = p[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xC2 && c <= 0xDF ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0;
    if (n <= 1 || n > left)
        return n <= left ? n : 0;
    uint32_t v = c & (0x3F >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) ||
        (n == 4 && v < 0x10000))
        return 0;
    return n;
}

#define S_ONES 0x0101010101010101ULL
#define S_HIGHS 0x8080808080808080ULL

/* How many bytes from p on (at most left) are plain ASCII that JSON carries as
   they are: 0x20-0x7F but '"' and '\\'. Eight at a time: the content of items is
   mostly such bytes, and a byte-by-byte check of a 1 MB item held the loop for
   milliseconds. */
size_t utf8_json_plain(const unsigned char *p, size_t left)
{
    size_t i = 0;
    for (; i + 8 <= left; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t quote = w ^ (S_ONES * '"'), bslash = w ^ (S_ONES * '\\');
        /* a high bit set in the result: some byte is >= 0x80, < 0x20, '"' or '\\'
           (the classic "has a zero byte" test, on w - 0x20.. and the two XORs) */
        uint64_t bad = (w | (w - S_ONES * 0x20) | ((quote - S_ONES) & ~quote) |
                        ((bslash - S_ONES) & ~bslash)) &
                       S_HIGHS;
        if (bad)
            break;
    }
    while (i < left && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
}
