/*  http_head.c - request head parser for the listener. See http_head.h. */
#include "http_head.h"

#include <string.h>
#include <strings.h>

static int s_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Whether every %-escape of src[0..len) is two hex digits that are not "00". */
static bool s_escapes_ok(const char *src, size_t len)
{
    for (const char *p = memchr(src, '%', len); p; p = memchr(p, '%', (size_t)(src + len - p))) {
        if ((size_t)(src + len - p) < 3 || s_hex(p[1]) < 0 || s_hex(p[2]) < 0 ||
            (p[1] == '0' && p[2] == '0'))
            return false;
        p += 3;
    }
    return true;
}

long http_head_decode(const char *src, size_t len, char *dst, size_t dst_size, bool plus)
{
    if (!s_escapes_ok(src, len))
        return HTTP_HEAD_DECODE_ESCAPE;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            c = (char)(s_hex(src[i + 1]) * 16 + s_hex(src[i + 2]));
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (o + 1 >= dst_size)
            return HTTP_HEAD_DECODE_NOSPACE;
        dst[o++] = c;
    }
    if (dst_size == 0)
        return HTTP_HEAD_DECODE_NOSPACE;
    dst[o] = 0;
    return (long)o;
}

bool http_head_plausible(const char *buf, size_t len)
{
    static const char version[] = "HTTP/1.";
    size_t i = 0;
    for (; i < len && buf[i] != ' '; i++) /* the method: 1-7 capitals */
        if (i >= 7 || buf[i] < 'A' || buf[i] > 'Z')
            return false;
    if (i == len)
        return true;
    if (i == 0)
        return false;
    if (++i == len)
        return true;
    if (buf[i] != '/' && buf[i] != '*')
        return false;
    for (; i < len && buf[i] != ' '; i++) /* the target: visible characters */
        if ((unsigned char)buf[i] <= 0x20 || buf[i] == 0x7f)
            return false;
    if (i == len)
        return true;
    i++;
    for (size_t k = 0; i < len && k < sizeof version - 1; i++, k++)
        if (buf[i] != version[k])
            return false;
    return true;
}

/* Copies a header value (trimmed) into dst; false when it does not fit. */
static bool s_copy_value(const char *v, size_t len, char *dst, size_t dst_size)
{
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len >= dst_size)
        return false;
    memcpy(dst, v, len);
    dst[len] = 0;
    return true;
}

/* Splits the raw query into decoded fragments. */
static bool s_query(http_head_t *out, const char *q, size_t len)
{
    size_t used = 0;
    const char *p = q, *end = q + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        size_t n = amp ? (size_t)(amp - p) : (size_t)(end - p);
        if (n > 0) {
            if (out->nargs == HTTP_HEAD_ARGS_MAX)
                return false;
            long d = http_head_decode(p, n, out->query + used, sizeof out->query - used, true);
            if (d < 0)
                return false;
            out->args[out->nargs++] = out->query + used;
            used += (size_t)d + 1;
        }
        p += n + (amp ? 1 : 0);
    }
    return true;
}

http_head_result_t http_head_parse(const char *buf, size_t len, http_head_t *out)
{
    memset(out, 0, sizeof *out);
    /* the head ends at the first empty line */
    const char *end = NULL;
    for (size_t i = 0; i + 3 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
            end = buf + i + 4;
            break;
        }
    }
    if (!end)
        return HTTP_HEAD_INCOMPLETE;
    out->head_len = (size_t)(end - buf);

    /* request line: METHOD SP target SP HTTP/1.x CRLF */
    const char *line_end = memchr(buf, '\r', out->head_len);
    if (line_end[1] != '\n')
        return HTTP_HEAD_MALFORMED;
    const char *sp1 = memchr(buf, ' ', (size_t)(line_end - buf));
    if (!sp1 || sp1 == buf || (size_t)(sp1 - buf) >= sizeof out->method)
        return HTTP_HEAD_MALFORMED;
    memcpy(out->method, buf, (size_t)(sp1 - buf));
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(line_end - target));
    if (!sp2 || sp2 == target || (size_t)(line_end - sp2) != 9 || strncmp(sp2 + 1, "HTTP/1.", 7))
        return HTTP_HEAD_MALFORMED;
    if (target[0] != '/')
        return HTTP_HEAD_MALFORMED;
    const char *qmark = memchr(target, '?', (size_t)(sp2 - target));
    const char *path_end = qmark ? qmark : sp2;
    /* libwebsockets closes a request with a bad escape without an answer: it is
       the listener's to refuse, whatever else is wrong with the head */
    if (!s_escapes_ok(target, (size_t)(sp2 - target)))
        return HTTP_HEAD_BAD_ESCAPE;
    http_head_result_t rc = HTTP_HEAD_OK;
    if (http_head_decode(target, (size_t)(path_end - target), out->path, sizeof out->path, false) <
        0)
        rc = HTTP_HEAD_TOO_BIG; /* libwebsockets takes longer paths */
    if (qmark && !s_query(out, qmark + 1, (size_t)(sp2 - qmark - 1)))
        rc = HTTP_HEAD_TOO_BIG;

    /* headers */
    const char *p = line_end + 2;
    const char *stop = end - 2; /* the final CRLF */
    while (p < stop) {
        const char *eol = memchr(p, '\r', (size_t)(stop - p) + 1);
        if (!eol || eol[1] != '\n')
            return HTTP_HEAD_MALFORMED;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p || *p == ' ' || *p == '\t')
            return HTTP_HEAD_MALFORMED;
        size_t name_len = (size_t)(colon - p);
        const char *v = colon + 1;
        size_t vlen = (size_t)(eol - v);
        if (name_len == 7 && strncasecmp(p, "upgrade", 7) == 0) {
            char value[32];
            if (s_copy_value(v, vlen, value, sizeof value) && strcasecmp(value, "websocket") == 0)
                out->upgrade_websocket = true;
        } else if (name_len == 13 && strncasecmp(p, "authorization", 13) == 0) {
            if (!s_copy_value(v, vlen, out->authorization, sizeof out->authorization))
                rc = HTTP_HEAD_TOO_BIG;
        } else if (name_len == 12 && strncasecmp(p, "x-request-id", 12) == 0) {
            if (!s_copy_value(v, vlen, out->request_id, sizeof out->request_id))
                out->request_id[0] = 0; /* not echoed; a new one is made */
        }
        p = eol + 2;
    }
    return rc;
}
