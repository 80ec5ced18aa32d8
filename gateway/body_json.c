/*  body_json.c - request bodies: one flat JSON object read straight into jansson
    values. See body_json.h. */
#include "body_json.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
} s_in_t;

static void s_ws(s_in_t *in)
{
    while (in->p < in->end && (*in->p == ' ' || *in->p == '\t' || *in->p == '\n' || *in->p == '\r'))
        in->p++;
}

static bool s_take(s_in_t *in, char c)
{
    if (in->p < in->end && *in->p == c) {
        in->p++;
        return true;
    }
    return false;
}

static bool s_literal(s_in_t *in, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(in->end - in->p) < n || memcmp(in->p, word, n) != 0)
        return false;
    in->p += n;
    return true;
}

/* Four hex digits at p (jansson takes both cases), or -1. */
static int32_t s_hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A \u escape at in->p (past the backslash, at 'u'), a surrogate pair taken
   whole, as UTF-8 into out: its length, or 0 for what jansson refuses or we leave
   to it (\u0000, a lone surrogate). */
static size_t s_unicode(s_in_t *in, unsigned char out[4])
{
    int32_t v = s_hex4(in->p + 1, in->end);
    if (v <= 0 || (v >= 0xDC00 && v <= 0xDFFF))
        return 0;
    in->p += 5;
    if (v >= 0xD800 && v <= 0xDBFF) {
        if (in->end - in->p < 6 || in->p[0] != '\\' || in->p[1] != 'u')
            return 0;
        int32_t lo = s_hex4(in->p + 2, in->end);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return 0;
        in->p += 6;
        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (v < 0x80) {
        out[0] = (unsigned char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (unsigned char)(0xC0 | (v >> 6));
        out[1] = (unsigned char)(0x80 | (v & 0x3F));
        return 2;
    }
    if (v < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (v >> 12));
        out[1] = (unsigned char)(0x80 | ((v >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (v & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (v >> 18));
    out[1] = (unsigned char)(0x80 | ((v >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((v >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (v & 0x3F));
    return 4;
}

/*  The string at in->p (at its opening quote), decoded: *text and *len, and *buf
    (to free) when escapes made a copy necessary; without escapes *text points
    into the input. false: not a string we read (jansson will say what is wrong). */
static bool s_string(s_in_t *in, const char **text, size_t *len, char **buf)
{
    *buf = NULL;
    if (!s_take(in, '"'))
        return false;
    const unsigned char *start = in->p;
    unsigned char *out = NULL; /* the decoded text, once there was an escape */
    size_t n = 0;
    while (in->p < in->end) {
        const unsigned char *run = in->p;
        in->p += utf8_json_plain(in->p, (size_t)(in->end - in->p));
        if (out) {
            memcpy(out + n, run, (size_t)(in->p - run));
            n += (size_t)(in->p - run);
        }
        if (in->p == in->end)
            break;
        unsigned char c = *in->p;
        if (c == '"') {
            in->p++;
            *buf = (char *)out;
            *text = out ? (const char *)out : (const char *)start;
            *len = out ? n : (size_t)(in->p - 1 - start);
            return true;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq_len(in->p, (size_t)(in->end - in->p));
            if (k == 0)
                break;
            if (out)
                memcpy(out + n, in->p, k);
            n += out ? k : 0;
            in->p += k;
            continue;
        }
        if (c != '\\' || in->end - in->p < 2)
            break; /* a raw control character, or a cut escape */
        if (!out) {
            /* the decoded text is never longer than what is left of the input */
            out = malloc((size_t)(in->p - start) + (size_t)(in->end - in->p) + 1);
            if (!out)
                return false;
            n = (size_t)(in->p - start);
            memcpy(out, start, n);
        }
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *e = in->p[1] ? strchr(from, in->p[1]) : NULL;
        if (e) {
            out[n++] = (unsigned char)to[e - from];
            in->p += 2;
            continue;
        }
        if (in->p[1] != 'u')
            break;
        in->p++;
        size_t k = s_unicode(in, out + n);
        if (k == 0)
            break;
        n += k;
    }
    free(out);
    return false;
}

/* One member's value: a string, true, false or null; NULL for anything else. */
static json_t *s_value(s_in_t *in)
{
    if (in->p < in->end && *in->p == '"') {
        const char *text;
        size_t len;
        char *buf;
        if (!s_string(in, &text, &len, &buf))
            return NULL;
        json_t *v = json_stringn_nocheck(text, len);
        free(buf);
        return v;
    }
    if (s_literal(in, "true"))
        return json_true();
    if (s_literal(in, "false"))
        return json_false();
    if (s_literal(in, "null"))
        return json_null();
    return NULL;
}

/* One "key": value, added to o. false when it is not one this reads, or its key
   was seen already (JSON_REJECT_DUPLICATES: jansson's error). */
static bool s_member(s_in_t *in, json_t *o)
{
    const char *text;
    size_t len;
    char *buf;
    if (!s_string(in, &text, &len, &buf))
        return false;
    char *key = buf ? buf : strndup(text, len);
    if (!key)
        return false;
    key[len] = 0; /* buf has room: see s_string */
    bool ok = false;
    s_ws(in);
    if (!json_object_get(o, key) && s_take(in, ':')) {
        s_ws(in);
        json_t *v = s_value(in);
        ok = v && json_object_set_new(o, key, v) == 0;
    }
    free(key);
    return ok;
}

/* The whole input as one object, or NULL when it is not one this reads. */
static json_t *s_object(s_in_t *in)
{
    s_ws(in);
    if (!s_take(in, '{'))
        return NULL;
    json_t *o = json_object();
    s_ws(in);
    bool closed = s_take(in, '}');
    while (!closed && o && s_member(in, o)) {
        s_ws(in);
        if (!s_take(in, ',')) {
            closed = s_take(in, '}');
            break;
        }
        s_ws(in);
    }
    s_ws(in);
    if (closed && in->p == in->end)
        return o;
    json_decref(o);
    return NULL;
}

json_t *body_json_read(const char *data, size_t len)
{
    s_in_t in = {(const unsigned char *)data, (const unsigned char *)data + len};
    return s_object(&in);
}

json_t *body_json_load(const char *data, size_t len, json_error_t *err)
{
    json_t *o = body_json_read(data, len);
    return o ? o : json_loadb(data, len, JSON_REJECT_DUPLICATES, err);
}
