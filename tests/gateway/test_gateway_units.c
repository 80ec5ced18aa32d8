/*  Unit tests of the gateway's pure modules: routes, validation (JSON -> SMP body),
    rendering (MessagePack -> JSON, ids as strings), the request-head parser, the
    Prometheus text, the rate limits and the failed-login throttle. */
#include "../unit/check.h"
#include "body_json.h"
#include "http_head.h"
#include "login_throttle.h"
#include "metrics.h"
#include "mp.h"
#include "outbound.h"
#include "ratelimit.h"
#include "render.h"
#include "routes.h"
#include "validate.h"
#include "username.h"

#include "clock.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_routes(void)
{
    const route_t *r = NULL;
    char param[ROUTE_PARAM_MAX], allow[64];
    CHECK(routes_match("POST", "/v1/clipboard", &r, param, allow, sizeof allow) == 0);
    CHECK(r && r->id == ROUTE_CLIP_CREATE && r->write && r->auth);
    CHECK(routes_match("DELETE", "/v1/devices/42", &r, param, allow, sizeof allow) == 0);
    CHECK(r->id == ROUTE_DEVICE_DELETE && strcmp(param, "42") == 0);
    CHECK(routes_match("GET", "/v1/chat/conversations/7/messages", &r, param, allow,
                       sizeof allow) == 0);
    CHECK(r->id == ROUTE_MSG_LIST && strcmp(param, "7") == 0);
    CHECK(routes_match("GET", "/v1/clipboard/latest", &r, param, allow, sizeof allow) == 0);
    CHECK(r->id == ROUTE_CLIP_LATEST);
    CHECK(routes_match("PUT", "/v1/clipboard", &r, param, allow, sizeof allow) == 405);
    CHECK(strcmp(allow, "POST, GET") == 0);
    CHECK(routes_match("GET", "/v1/devices/", &r, param, allow, sizeof allow) == 404);
    CHECK(routes_match("GET", "/v1/nothing", &r, param, allow, sizeof allow) == 404);
    CHECK(routes_match("GET", "/sync/notify", &r, param, allow, sizeof allow) == 0);
    CHECK(r->id == ROUTE_NOTIFY);
    /* a long segment is cut, and then refused by validation as too long */
    char path[200] = "/v1/clipboard/";
    memset(path + 14, '1', 150);
    path[164] = 0;
    CHECK(routes_match("DELETE", path, &r, param, allow, sizeof allow) == 0);
    CHECK(strlen(param) == ROUTE_PARAM_MAX - 1);

    uint32_t d[ROUTE_COUNT];
    for (size_t i = 0; i < ROUTE_COUNT; i++)
        d[i] = 5000;
    char err[200];
    CHECK(routes_parse_deadlines("clipboard.create=3000,chat.generate=60000", d, err, sizeof err) ==
          0);
    CHECK(d[ROUTE_CLIP_CREATE] == 3000 && d[ROUTE_MSG_CREATE] == 60000 &&
          d[ROUTE_CLIP_LIST] == 5000);
    CHECK(routes_parse_deadlines("nope=1", d, err, sizeof err) == -1);
    CHECK(routes_parse_deadlines("clipboard.create=0", d, err, sizeof err) == -1);
    CHECK(routes_parse_deadlines("clipboard.create", d, err, sizeof err) == -1);
    CHECK(routes_parse_deadlines("", d, err, sizeof err) == 0);
}

static void test_ids(void)
{
    int64_t v;
    CHECK(validate_id("0", 1, &v) && v == 0);
    CHECK(validate_id("9223372036854775807", 19, &v) && v == INT64_MAX);
    CHECK(!validate_id("9223372036854775808", 19, &v));
    CHECK(!validate_id("99999999999999999999", 20, &v));
    CHECK(!validate_id("-1", 2, &v));
    CHECK(!validate_id("", 0, &v));
    CHECK(!validate_id("1a", 2, &v));
    CHECK(!validate_id(" 1", 2, &v));
    CHECK(validate_idem_key("abc def", 7));
    CHECK(!validate_idem_key("tab\t", 4));
    char long_key[130];
    memset(long_key, 'k', sizeof long_key);
    CHECK(validate_idem_key(long_key, 128) && !validate_idem_key(long_key, 129));
    const char *t;
    size_t len;
    CHECK(validate_bearer("Bearer abc_-.~+/=", &t, &len) && len == 10);
    CHECK(validate_bearer("bearer   xyz  ", &t, &len) && len == 3 && strncmp(t, "xyz", 3) == 0);
    CHECK(!validate_bearer("Basic abc", &t, &len));
    CHECK(!validate_bearer("Bearer ", &t, &len));
    CHECK(!validate_bearer("Bearer a b", &t, &len));
    CHECK(validate_request_id("abc-123", 7) && !validate_request_id("a b", 3));
}

/* Runs validate_request on a JSON body for route and returns the error status (0 on
   success, with the unpacked body in *obj via zone). */
static int s_validate(route_id_t route, const char *param, const char *body,
                      const char *const *args, size_t nargs, const char *idem, msgpack_zone *zone,
                      msgpack_object *obj, gw_err_t *err)
{
    validate_in_t in = {
        .route = routes_get(route),
        .param = param ? param : "",
        .args = args,
        .nargs = nargs,
        .body = (const uint8_t *)body,
        .body_len = body ? strlen(body) : 0,
        .idem = idem,
        .trace = "t1",
        .authed = true,
        .user_id = 5,
        .device_id = 6,
        .max_item_bytes = 10,
    };
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = validate_request(&in, &buf, err);
    if (rc == 0) {
        size_t off = 0;
        /* unpacked strings point into the bytes: keep a copy in the zone */
        char *copy = msgpack_zone_malloc(zone, buf.size);
        memcpy(copy, buf.data, buf.size);
        CHECK(msgpack_unpack(copy, buf.size, &off, zone, obj) == MSGPACK_UNPACK_SUCCESS);
    }
    msgpack_sbuffer_destroy(&buf);
    return rc == 0 ? 0 : err->status;
}

static void test_validate(void)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object o;
    gw_err_t err;
    int64_t n;
    const char *s;
    size_t len;
    bool b;

    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"hi\"}", NULL, 0, NULL, &zone, &o,
                     &err) == 0);
    CHECK(mp_get_str(&o, "op", &s, &len) && len == 16 && !memcmp(s, "clipboard.create", 16));
    const msgpack_object *args = mp_get(&o, "args");
    CHECK(mp_get_str(args, "content_type", &s, &len) && len == 10);
    CHECK(mp_get_int(mp_get(&o, "auth"), "user_id", &n) && n == 5);
    CHECK(mp_get_bool(&o, "idempotent", &b) && !b);
    CHECK(mp_get_str(&o, "trace", &s, &len) && len == 2);

    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"hi\"}", NULL, 0, "key-1", &zone, &o,
                     &err) == 0);
    CHECK(mp_get_bool(&o, "idempotent", &b) && b);
    CHECK(mp_get_str(&o, "idem", &s, &len) && len == 5);

    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"12345678901\"}", NULL, 0, NULL, &zone,
                     &o, &err) == 413);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":1}", NULL, 0, NULL, &zone, &o, &err) ==
          400);
    CHECK(strstr(err.message, "must be a string") != NULL);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"a\",\"x\":1}", NULL, 0, NULL, &zone,
                     &o, &err) == 400);
    CHECK(strstr(err.message, "unknown field") != NULL);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{", NULL, 0, NULL, &zone, &o, &err) == 400);
    CHECK(strstr(err.message, "malformed JSON") != NULL);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "[]", NULL, 0, NULL, &zone, &o, &err) == 400);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"\xff\"}", NULL, 0, NULL, &zone, &o,
                     &err) == 400);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"a\",\"content\":\"b\"}", NULL, 0,
                     NULL, &zone, &o, &err) == 400);
    CHECK(s_validate(ROUTE_CLIP_CREATE, NULL, "{\"content\":\"a\"}", NULL, 0, "bad\x01", &zone, &o,
                     &err) == 400);

    CHECK(s_validate(ROUTE_USERS_CREATE, NULL, "{\"username\":\"ann\",\"password\":\"12345678\"}",
                     NULL, 0, NULL, &zone, &o, &err) == 0);
    CHECK(mp_get(&o, "auth") == NULL);
    CHECK(s_validate(ROUTE_USERS_CREATE, NULL, "{\"username\":\"a n\",\"password\":\"12345678\"}",
                     NULL, 0, NULL, &zone, &o, &err) == 400);
    /* lengths count characters: 8 two-byte characters are a valid password */
    CHECK(s_validate(ROUTE_USERS_CREATE, NULL,
                     "{\"username\":\"ann\",\"password\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xc3\xa9\xc3\xa9\xc3\xa9\"}",
                     NULL, 0, NULL, &zone, &o, &err) == 0);

    const char *q1[] = {"after=10", "limit=5", "other=x"};
    CHECK(s_validate(ROUTE_CLIP_LIST, NULL, NULL, q1, 3, NULL, &zone, &o, &err) == 0);
    args = mp_get(&o, "args");
    CHECK(mp_get_int(args, "after", &n) && n == 10);
    CHECK(mp_get_int(args, "limit", &n) && n == 5);
    CHECK(mp_get_bool(&o, "idempotent", &b) && b);
    const char *q2[] = {"after=-1"};
    CHECK(s_validate(ROUTE_CLIP_LIST, NULL, NULL, q2, 1, NULL, &zone, &o, &err) == 400);
    const char *q3[] = {"limit=501"};
    CHECK(s_validate(ROUTE_CLIP_LIST, NULL, NULL, q3, 1, NULL, &zone, &o, &err) == 400);
    const char *q4[] = {"after=1", "after=2"};
    CHECK(s_validate(ROUTE_CLIP_LIST, NULL, NULL, q4, 2, NULL, &zone, &o, &err) == 400);
    const char *q5[] = {"after"};
    CHECK(s_validate(ROUTE_CLIP_LIST, NULL, NULL, q5, 1, NULL, &zone, &o, &err) == 400);

    CHECK(s_validate(ROUTE_DEVICE_DELETE, "12", NULL, NULL, 0, NULL, &zone, &o, &err) == 0);
    CHECK(mp_get_int(mp_get(&o, "args"), "device_id", &n) && n == 12);
    CHECK(s_validate(ROUTE_DEVICE_DELETE, "x", NULL, NULL, 0, NULL, &zone, &o, &err) == 400);
    CHECK(s_validate(ROUTE_CONV_CREATE, NULL, NULL, NULL, 0, NULL, &zone, &o, &err) == 0);
    CHECK(s_validate(ROUTE_CONV_CREATE, NULL, "{\"title\":null}", NULL, 0, NULL, &zone, &o, &err) ==
          0);
    CHECK(s_validate(ROUTE_MSG_CREATE, "3", "{\"content\":\"hi\"}", NULL, 0, NULL, &zone, &o,
                     &err) == 0);
    CHECK(mp_get_bool(mp_get(&o, "args"), "stream", &b) && b);
    CHECK(s_validate(ROUTE_MSG_CREATE, "3", "{\"content\":\"hi\",\"stream\":1}", NULL, 0, NULL,
                     &zone, &o, &err) == 400);
    /* a chat answer is never resent by the broker, key or not: the stream worker
       does not take the key to the database */
    CHECK(s_validate(ROUTE_MSG_CREATE, "3", "{\"content\":\"hi\",\"stream\":false}", NULL, 0,
                     "key-2", &zone, &o, &err) == 0);
    CHECK(mp_get_bool(&o, "idempotent", &b) && !b);
    CHECK(mp_get_bool(mp_get(&o, "args"), "stream", &b) && !b);

    int64_t after;
    const char *token;
    size_t token_len;
    const char *q6[] = {"token=abc", "after=4"};
    CHECK(validate_notify_query(q6, 2, &token, &token_len, &after, &err) == 0);
    CHECK(token_len == 3 && after == 4);
    const char *q7[] = {"after=x"};
    CHECK(validate_notify_query(q7, 1, &token, &token_len, &after, &err) == -1);
    CHECK(validate_notify_query(NULL, 0, &token, &token_len, &after, &err) == 0);
    CHECK(token == NULL && after == -1);
    msgpack_zone_destroy(&zone);
}

/* render_text(o) is render_dump(render_json(o)): the same text, or both refuse */
static void s_check_text(const msgpack_object *o, const char *want)
{
    size_t len = 0, tlen = 0;
    char *tree = render_dump(render_json(o, NULL), &len);
    char *text = render_text(o, &tlen);
    CHECK(!tree == !text);
    CHECK(!tree || (len == tlen && memcmp(tree, text, len) == 0));
    CHECK(want ? text && strcmp(text, want) == 0 : text == NULL);
    free(tree);
    free(text);
}

/* body_json_load(b) is json_loadb(b, JSON_REJECT_DUPLICATES): the same value with
   its keys in the same order, or both refuse; fast: read without jansson */
static void s_check_body_as(const char *b, size_t len, bool fast_wanted)
{
    json_t *f = body_json_read(b, len);
    CHECK(!fast_wanted || f);
    json_decref(f);
    json_error_t e1, e2;
    json_t *fast = body_json_load(b, len, &e1);
    json_t *slow = json_loadb(b, len, JSON_REJECT_DUPLICATES, &e2);
    CHECK(!fast == !slow);
    if (fast && slow) {
        char *x = json_dumps(fast, JSON_COMPACT), *y = json_dumps(slow, JSON_COMPACT);
        CHECK(json_equal(fast, slow) && x && y && strcmp(x, y) == 0);
        free(x);
        free(y);
    } else if (!fast && !slow) {
        CHECK(strcmp(e1.text, e2.text) == 0 && e1.line == e2.line && e1.column == e2.column);
    }
    json_decref(fast);
    json_decref(slow);
}

static void s_check_body(const char *b, size_t len)
{
    s_check_body_as(b, len, false);
}

static void test_body_json(void)
{
    const char *bodies[] = {
        "{}",
        " { } ",
        "{\"content\":\"hello\"}",
        "\t{\r\n\"a\" : \"b\" ,\"c\":true}\n",
        "{\"content\":\"x\",\"content_type\":null,\"stream\":false}",
        "{\"b\":\"1\",\"a\":\"2\"}",                       /* order kept */
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",          /* every short escape */
        "{\"s\":\"\\u00e9\\u20AC\\ud83d\\ude00\\u0041\"}", /* \u, a pair, both cases */
        "{\"\\u006b\":\"keyed by an escape\"}",
        "{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
        "{\"\":\"\"}",
        "{\"a\":\"b\"}x",
        "{\"a\":\"b\"}}",
        "{}x",
        "{",
        "{\"a\"",
        "{\"a\":",
        "{\"a\":\"b\",}",
        "{,}",
        "{\"a\" \"b\"}",
        "{a:\"b\"}",
        "[]",
        "\"s\"",
        "",
        " ",
        "{\"a\":1}",
        "{\"a\":-1.5e3}",
        "{\"a\":[\"b\"]}",
        "{\"a\":{\"b\":null}}",
        "{\"a\":truex}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":True}",
        "{\"a\":\"b\",\"a\":\"c\"}", /* duplicate: refused */
        "{\"s\":\"\\u0000\"}",
        "{\"\\u0000\":\"s\"}",
        "{\"s\":\"\\ud800\"}",
        "{\"s\":\"\\udc00\"}",
        "{\"s\":\"\\ud800\\u0041\"}",
        "{\"s\":\"\\ud800x\"}",
        "{\"s\":\"\\u12\"}",
        "{\"s\":\"\\u12g4\"}",
        "{\"s\":\"\\x\"}",
        "{\"s\":\"\\\"}",
        "{\"s\":\"a\nb\"}",
        "{\"s\":\"a\x7f\"}",
        "{\"s\":\"\xc0\xaf\"}",
        "{\"s\":\"\xed\xa0\x80\"}",
        "{\"s\":\"\xe2\x82\"}",
        "{\"s\":\"\xff\"}",
        "\xef\xbb\xbf{}",
        "{\"s\":\"abc",
        "{\"s\":\"abc\\",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++)
        s_check_body_as(bodies[i], strlen(bodies[i]), i < 11); /* the first 11 are read fast */
    /* a NUL byte in the text, outside and inside a string */
    s_check_body("{}\0", 3);
    s_check_body("{\"s\":\"a\0b\"}", 12);
    /* long strings: an escape or a bad byte at every place of a word, and a
       string cut there */
    const char *odd[] = {"\\n",  "\\u00e9", "\\ud83d\\ude00", "\\\"", "\xc3\xa9",
                         "\x01", "\xff",    "\\u0000",        "\""};
    for (size_t k = 0; k < sizeof odd / sizeof *odd; k++)
        for (size_t at = 0; at < 20; at++) {
            char b[96];
            int n = snprintf(b, sizeof b, "{\"content\":\"%.*s%s%s\"}", (int)at,
                             "abcdefghijklmnopqrstuvwxyz", odd[k], at % 2 ? "tail-tail-tail" : "");
            s_check_body_as(b, (size_t)n, k < 5); /* escapes and UTF-8 are read fast */
            s_check_body(b, (size_t)n - 2);
        }
}

static void test_render_text(void)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    size_t off;
#define S_UNPACK()                                                                                 \
    do {                                                                                           \
        off = 0;                                                                                   \
        msgpack_unpack(buf.data, buf.size, &off, &zone, &o);                                       \
        msgpack_sbuffer_clear(&buf);                                                               \
    } while (0)
    /* escapes: quote, backslash, the short ones, other controls as \u00XX; UTF-8 as is */
    mp_pack_strn(&pk, "a\"b\\c\b\f\n\r\t\x01\x1f\x7f/\xc3\xa9\xf0\x9f\x98\x80", 20);
    S_UNPACK();
    s_check_text(&o, "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001F\x7f/\xc3\xa9\xf0\x9f\x98\x80\"");
    /* long strings go eight bytes at a time: a byte to escape, a UTF-8 sequence or
       a bad one at every place of a word, and at the ends */
    const char *odd[] = {"\"",
                         "\\",
                         "\x01",
                         "\x1f",
                         "\n",
                         "\xc3\xa9",
                         "\xe2\x82\xac",
                         "\xf0\x9f\x98\x80",
                         "\x7f",
                         " ",
                         "~",
                         "\xc0\xaf",
                         "\xe2\x82",
                         "\xff"};
    for (size_t k = 0; k < sizeof odd / sizeof *odd; k++)
        for (size_t at = 0; at < 26; at++) {
            char s[64];
            memset(s, 'a', sizeof s);
            size_t n = strlen(odd[k]);
            memcpy(s + at, odd[k], n);
            size_t len = at + n + (at % 3) * 7; /* also cut right after it */
            mp_pack_strn(&pk, s, len);
            S_UNPACK();
            size_t tlen = 0, jlen = 0;
            char *tree = render_dump(render_json(&o, NULL), &jlen);
            char *text = render_text(&o, &tlen);
            CHECK(!tree == !text);
            CHECK(!tree || (jlen == tlen && memcmp(tree, text, jlen) == 0));
            CHECK(!text == (k >= 11)); /* the last three are not UTF-8 */
            free(tree);
            free(text);
        }
    /* not UTF-8: an overlong form, a surrogate, a cut sequence, above U+10FFFF */
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "ab\xe2\x82", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mp_pack_strn(&pk, bad[i], strlen(bad[i]));
        S_UNPACK();
        s_check_text(&o, NULL);
    }
    /* reals as jansson writes them; NaN refused */
    msgpack_pack_array(&pk, 5);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_double(&pk, 3.0);
    msgpack_pack_double(&pk, 1e20);
    msgpack_pack_double(&pk, 1e-7);
    msgpack_pack_double(&pk, -0.1);
    S_UNPACK();
    s_check_text(&o, "[1.5,3.0,1e20,9.9999999999999995e-8,-0.10000000000000001]");
    msgpack_pack_double(&pk, NAN);
    S_UNPACK();
    s_check_text(&o, NULL);
    /* ids as strings (also negative), a huge unsigned as a string, nil/bin as null,
       keys that JSON cannot have are left out, an empty map and array */
    msgpack_pack_map(&pk, 7);
    mp_pack_kv_int(&pk, "user_id", -3);
    mp_pack_cstr(&pk, "big");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    mp_pack_cstr(&pk, "n");
    msgpack_pack_nil(&pk);
    mp_pack_cstr(&pk, "b");
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "x", 1);
    msgpack_pack_int(&pk, 5); /* an integer key */
    msgpack_pack_int(&pk, 6);
    mp_pack_cstr(&pk, "m");
    msgpack_pack_map(&pk, 0);
    mp_pack_cstr(&pk, "a");
    msgpack_pack_array(&pk, 0);
    S_UNPACK();
    s_check_text(&o, "{\"user_id\":\"-3\",\"big\":\"18446744073709551615\",\"n\":null,"
                     "\"b\":null,\"m\":{},\"a\":[]}");
    /* a repeated key: the tree's answer (first place, last value) */
    msgpack_pack_map(&pk, 3);
    mp_pack_kv_int(&pk, "seq", 1);
    mp_pack_kv_int(&pk, "x", 2);
    mp_pack_kv_int(&pk, "seq", 3);
    S_UNPACK();
    s_check_text(&o, "{\"seq\":3,\"x\":2}");
    /* an invalid key */
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_int(&pk, "\xff", 1);
    S_UNPACK();
    s_check_text(&o, NULL);
#undef S_UNPACK
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&buf);
}

static void test_render(void)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    mp_pack_kv_int(&pk, "id", 9007199254740993LL);
    mp_pack_kv_int(&pk, "seq", 3);
    mp_pack_kv_int(&pk, "source_device_id", 2);
    mp_pack_cstr(&pk, "items");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_int(&pk, "id", 1);
    mp_pack_kv_bool(&pk, "is_active", true);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    size_t off = 0;
    msgpack_unpack(buf.data, buf.size, &off, &zone, &o);
    size_t len = 0;
    char *text = render_dump(render_json(&o, NULL), &len);
    CHECK(text && strcmp(text, "{\"id\":\"9007199254740993\",\"seq\":3,\"source_device_id\":\"2\","
                               "\"items\":[{\"id\":\"1\",\"is_active\":true}]}") == 0);
    free(text);
    /* an empty string (msgpack-c may give it a NULL pointer) is "" */
    msgpack_sbuffer_clear(&buf);
    msgpack_pack_map(&pk, 1);
    mp_pack_cstr(&pk, "");
    mp_pack_cstr(&pk, "");
    off = 0;
    msgpack_unpack(buf.data, buf.size, &off, &zone, &o);
    text = render_dump(render_json(&o, NULL), &len);
    CHECK(text && strcmp(text, "{\"\":\"\"}") == 0);
    free(text);
    /* invalid UTF-8 from a worker is not passed on */
    msgpack_sbuffer_clear(&buf);
    mp_pack_strn(&pk, "\xff", 1);
    off = 0;
    msgpack_unpack(buf.data, buf.size, &off, &zone, &o);
    CHECK(render_json(&o, NULL) == NULL);
    text = render_error("bad_request", "oops \"quoted\"", &len);
    CHECK(text && strcmp(text, "{\"error\":{\"code\":\"bad_request\",\"message\":\"oops "
                               "\\\"quoted\\\"\"}}") == 0);
    free(text);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&buf);
}

static void test_head(void)
{
    http_head_t h;
    const char *req = "GET /v1/sync/notify?token=a%2Bb&after=5 HTTP/1.1\r\n"
                      "Host: x\r\nUpgrade: WebSocket\r\nAuthorization:  Bearer t \r\n"
                      "X-Request-Id: r1\r\n\r\nextra";
    CHECK(http_head_parse(req, strlen(req), &h) == HTTP_HEAD_OK);
    CHECK(strcmp(h.method, "GET") == 0 && strcmp(h.path, "/v1/sync/notify") == 0);
    CHECK(h.nargs == 2 && strcmp(h.args[0], "token=a+b") == 0 && strcmp(h.args[1], "after=5") == 0);
    CHECK(h.upgrade_websocket && strcmp(h.authorization, "Bearer t") == 0);
    CHECK(strcmp(h.request_id, "r1") == 0);
    CHECK(h.head_len == strlen(req) - 5);
    CHECK(http_head_parse(req, 30, &h) == HTTP_HEAD_INCOMPLETE);
    const char *bad[] = {"GET\r\n\r\n",
                         "GET / HTTP/2.0\r\n\r\n",
                         "GET x HTTP/1.1\r\n\r\n",
                         "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
                         " GET / HTTP/1.1\r\n\r\n",
                         "GET / HTTP/1.1\r\n Folded: x\r\n\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(http_head_parse(bad[i], strlen(bad[i]), &h) == HTTP_HEAD_MALFORMED);
    /* bad escapes anywhere in the target are refused, even with a part too big */
    const char *esc[] = {"GET /a%zz HTTP/1.1\r\n\r\n", "DELETE /v1/clipboard/1%00 HTTP/1.1\r\n\r\n",
                         "GET /x?a=%00 HTTP/1.1\r\n\r\n", "GET /x?a=%4 HTTP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof esc / sizeof esc[0]; i++)
        CHECK(http_head_parse(esc[i], strlen(esc[i]), &h) == HTTP_HEAD_BAD_ESCAPE);
    char longer[600];
    snprintf(longer, sizeof longer, "GET /%0300d%%00 HTTP/1.1\r\n\r\n", 0);
    CHECK(http_head_parse(longer, strlen(longer), &h) == HTTP_HEAD_BAD_ESCAPE);
    snprintf(longer, sizeof longer, "GET /%0300d HTTP/1.1\r\n\r\n", 0);
    CHECK(http_head_parse(longer, strlen(longer), &h) == HTTP_HEAD_TOO_BIG);
    char dst[8];
    CHECK(http_head_decode("a%41+", 5, dst, sizeof dst, true) == 3 && strcmp(dst, "aA ") == 0);
    CHECK(http_head_decode("%00", 3, dst, sizeof dst, true) == HTTP_HEAD_DECODE_ESCAPE);
    CHECK(http_head_decode("%4", 2, dst, sizeof dst, true) == HTTP_HEAD_DECODE_ESCAPE);
    CHECK(http_head_decode("123456789", 9, dst, sizeof dst, true) == HTTP_HEAD_DECODE_NOSPACE);
    CHECK(http_head_decode("12345678%zz", 11, dst, sizeof dst, true) == HTTP_HEAD_DECODE_ESCAPE);
    /* the start of a connection that can still be a request, and bytes that cannot */
    const char *maybe[] = {"",
                           "G",
                           "GE",
                           "POST",
                           "POST ",
                           "POST /v1/us",
                           "GET / ",
                           "GET / HTTP/1",
                           "GET / HTTP/1.1\r\nHost",
                           "OPTIONS * HTTP/1.0"};
    for (size_t i = 0; i < sizeof maybe / sizeof maybe[0]; i++)
        CHECK(http_head_plausible(maybe[i], strlen(maybe[i])));
    const char *never[] = {"g",         " GET",         "\x16\x03\x01", "HELLOWORLD", "GET x",
                           "GET /a\tb", "GET / HTTP/2", "GET / XTTP",   "GET\r\n"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        CHECK(!http_head_plausible(never[i], strlen(never[i])));
}

static void test_metrics(void)
{
    metrics_t *m = metrics_new();
    metrics_request(m, ROUTE_CLIP_CREATE, 201, 1500);
    metrics_request(m, ROUTE_CLIP_CREATE, 201, 20000000);
    metrics_request(m, ROUTE_UNMATCHED, 404, 10);
    metrics_request(m, ROUTE_CLIP_LIST, 299, 10);
    metrics_count(m, "ws_close_1009");
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    metrics_gauges_t g = {.websockets = 3};
    metrics_render(m, out, &g, NULL);
    fclose(out);
    CHECK(strstr(text, "sluice_gateway_http_requests_total{route=\"POST /v1/clipboard\","
                       "status=\"201\"} 2\n") != NULL);
    CHECK(strstr(text, "route=\"unmatched\",status=\"404\"} 1") != NULL);
    CHECK(strstr(text, "status=\"other\"} 1") != NULL);
    CHECK(strstr(text, "sluice_gateway_http_request_duration_seconds_bucket{route=\"POST "
                       "/v1/clipboard\",le=\"0.0025\"} 1\n") != NULL);
    CHECK(strstr(text, "le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(text, "sluice_gateway_open_websockets 3\n") != NULL);
    CHECK(strstr(text, "reason=\"ws_close_1009\"} 1") != NULL);
    free(text);
    metrics_destroy(&m);
    CHECK(m == NULL);
}

static void test_ratelimit(void)
{
    CHECK(ratelimit_new(0, 5, 10) == NULL);
    CHECK(ratelimit_new(1, 0.5, 10) == NULL);
    CHECK(ratelimit_new(1, 5, 0) == NULL);
    /* 2 per second, burst 3: three at once, then the fourth waits a second */
    ratelimit_t *rl = ratelimit_new(2, 3, 4);
    int64_t t = 1000000;
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 1);
    CHECK(ratelimit_take(rl, "b", t) == 0); /* keys are independent */
    CHECK(ratelimit_take(rl, "a", t + 499) == 1);
    CHECK(ratelimit_take(rl, "a", t + 500) == 0); /* one refilled in 500 ms */
    CHECK(ratelimit_take(rl, "a", t + 500) == 1);
    /* a slow refill gives a longer Retry-After */
    ratelimit_t *slow = ratelimit_new(0.25, 1, 4);
    CHECK(ratelimit_take(slow, "x", t) == 0);
    CHECK(ratelimit_take(slow, "x", t) == 4);
    ratelimit_destroy(&slow);
    /* bounded: a flood of new keys evicts the least recently used */
    CHECK(ratelimit_size(rl) == 2);
    CHECK(ratelimit_take(rl, "c", t + 500) == 0);
    CHECK(ratelimit_take(rl, "d", t + 500) == 0);
    CHECK(ratelimit_take(rl, "a", t + 500) == 1); /* a is the newest again */
    CHECK(ratelimit_take(rl, "e", t + 500) == 0); /* evicts b, the oldest */
    CHECK(ratelimit_size(rl) == 4);
    CHECK(ratelimit_evicted(rl) == 1);
    for (int i = 0; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        CHECK(ratelimit_take(rl, key, t + 600) == 0);
    }
    CHECK(ratelimit_size(rl) == 4);
    CHECK(ratelimit_evicted(rl) == 1001);
    /* idle keys go once their bucket is full again (burst 3 at 2/s: 1500 ms) */
    CHECK(ratelimit_take(rl, "late", t + 2000) == 0);
    ratelimit_expire(rl, t + 2100);
    CHECK(ratelimit_size(rl) == 1); /* the k* keys were last used at t+600 */
    ratelimit_expire(rl, t + 3499);
    CHECK(ratelimit_size(rl) == 1);
    ratelimit_expire(rl, t + 3500);
    CHECK(ratelimit_size(rl) == 0);
    /* long keys are cut, not refused */
    char longkey[200];
    memset(longkey, 'z', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    CHECK(ratelimit_take(rl, longkey, t) == 0);
    ratelimit_destroy(&rl);
    CHECK(rl == NULL);
    ratelimit_destroy(&rl);
}

static void test_ratelimit_give_and_forget(void)
{
    int64_t t = 1000000;
    ratelimit_t *rl = ratelimit_new(1, 2, 10);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 1);
    ratelimit_give(rl, "a", t); /* one back */
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 1);
    for (int i = 0; i < 5; i++)
        ratelimit_give(rl, "a", t); /* never above burst */
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 1);
    ratelimit_give(rl, "nobody", t); /* a key not held is full already */
    CHECK(ratelimit_size(rl) == 1);
    ratelimit_forget(rl, "a");
    CHECK(ratelimit_size(rl) == 0);
    CHECK(ratelimit_take(rl, "a", t) == 0);
    ratelimit_forget(rl, "nobody");
    /* a 64-character key (the longest username) is kept whole */
    char k1[65], k2[65];
    memset(k1, 'u', 64);
    k1[64] = 0;
    memcpy(k2, k1, sizeof k1);
    k2[63] = 'v';
    CHECK(ratelimit_take(rl, k1, t) == 0);
    CHECK(ratelimit_take(rl, k1, t) == 0);
    CHECK(ratelimit_take(rl, k2, t) == 0);
    ratelimit_destroy(&rl);
}

static void test_login_throttle(void)
{
    CHECK(username_ok("ann", 3));
    CHECK(username_ok("Ann_B.c-9", 9));
    CHECK(!username_ok("an", 2));
    CHECK(!username_ok("ann ", 4));
    CHECK(!username_ok("\xc3\xa0nn", 4));
    CHECK(!username_ok(NULL, 0));
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = 0;
    CHECK(username_ok(long_name, 64));
    CHECK(!username_ok(long_name, 65));

    login_throttle_config_t bad = {
        .username_max = -1, .address_max = 1, .window_s = 60, .max_entries = 10};
    CHECK(login_throttle_new(&bad) == NULL);
    bad = (login_throttle_config_t){
        .username_max = 1, .address_max = 1, .window_s = 0, .max_entries = 10};
    CHECK(login_throttle_new(&bad) == NULL);

    /* 3 failures per username, 5 per address, over 60 s */
    login_throttle_config_t cfg = {
        .username_max = 3, .address_max = 5, .window_s = 60, .max_entries = 100};
    login_throttle_t *lt = login_throttle_new(&cfg);
    CHECK(lt != NULL);
    int64_t t = 1000000;
    const char *limit = NULL;
    login_attempt_t a[8];
    /* three failures for "Ann", in flight at once: the fourth is refused before
       any answer came, and names its limit; Retry-After is window / max */
    for (int i = 0; i < 3; i++)
        CHECK(login_throttle_begin(lt, "Ann", 3, "10.0.0.1", t, &a[i], &limit) == 0);
    CHECK(login_throttle_begin(lt, "aNN", 3, "10.0.0.2", t, &a[3], &limit) == 20);
    CHECK(limit && strcmp(limit, "login_fail_username_max") == 0);
    CHECK(!a[3].open);
    for (int i = 0; i < 3; i++)
        login_throttle_end(lt, &a[i], 401, t);
    CHECK(login_throttle_begin(lt, "ann", 3, "10.0.0.3", t, &a[0], &limit) == 20);
    /* ... and one more comes back after window / max */
    CHECK(login_throttle_begin(lt, "ann", 3, "10.0.0.3", t + 20000, &a[0], &limit) == 0);
    login_throttle_end(lt, &a[0], 401, t + 20000);
    /* the address 10.0.0.1 has 3 failures; a refused username took none from it */
    CHECK(login_throttle_begin(lt, "bob", 3, "10.0.0.1", t, &a[0], &limit) == 0);
    login_throttle_end(lt, &a[0], 401, t);
    CHECK(login_throttle_begin(lt, NULL, 0, "10.0.0.1", t, &a[0], &limit) == 0);
    login_throttle_end(lt, &a[0], 401, t); /* an impossible username counts for its address */
    CHECK(login_throttle_begin(lt, "carl", 4, "10.0.0.1", t, &a[0], &limit) == 12);
    CHECK(strcmp(limit, "login_fail_address_max") == 0);
    /* a refused address takes nothing from the username */
    for (int i = 0; i < 3; i++) {
        CHECK(login_throttle_begin(lt, "carl", 4, "10.0.0.9", t, &a[0], &limit) == 0);
        login_throttle_end(lt, &a[0], 503, t); /* not a failure: given back */
    }
    /* successes are given back, and forget the username's failures */
    for (int i = 0; i < 2; i++) {
        CHECK(login_throttle_begin(lt, "dana", 4, "10.0.1.1", t, &a[0], &limit) == 0);
        login_throttle_end(lt, &a[0], 401, t);
    }
    CHECK(login_throttle_begin(lt, "dana", 4, "10.0.1.2", t, &a[0], &limit) == 0);
    login_throttle_end(lt, &a[0], 201, t);
    for (int i = 0; i < 3; i++) {
        CHECK(login_throttle_begin(lt, "dana", 4, "10.0.1.3", t, &a[0], &limit) == 0);
        login_throttle_end(lt, &a[0], 401, t);
    }
    CHECK(login_throttle_begin(lt, "dana", 4, "10.0.1.4", t, &a[0], &limit) == 20);
    /* a client gone before its answer (status 0) counts as a failure */
    CHECK(login_throttle_begin(lt, "erin", 4, "10.0.2.1", t, &a[0], &limit) == 0);
    login_throttle_end(lt, &a[0], 0, t);
    login_throttle_end(lt, &a[0], 201, t); /* closed already: nothing happens */
    CHECK(login_throttle_entries(lt) > 0);
    login_throttle_expire(lt, t + 120000);
    CHECK(login_throttle_entries(lt) == 0);
    login_throttle_destroy(&lt);
    CHECK(lt == NULL);
    login_throttle_destroy(&lt);

    /* both limits 0: nothing is counted or refused */
    login_throttle_config_t off = {
        .username_max = 0, .address_max = 0, .window_s = 60, .max_entries = 10};
    lt = login_throttle_new(&off);
    for (int i = 0; i < 100; i++) {
        CHECK(login_throttle_begin(lt, "ann", 3, "10.0.0.1", t, &a[0], &limit) == 0);
        login_throttle_end(lt, &a[0], 401, t);
    }
    CHECK(login_throttle_entries(lt) == 0);
    login_throttle_destroy(&lt);
}

/* outbound: a connection that records its sheds and drops its bytes, as the
   gateway's connections do. */
typedef struct {
    outbound_conn_t oc; /* first: the callback gets its address */
    int shed;
    outbound_why_t why;
} s_fake_conn_t;

static void s_fake_shed(outbound_conn_t *oc, outbound_why_t why)
{
    s_fake_conn_t *c = (s_fake_conn_t *)oc;
    c->shed++;
    c->why = why;
    outbound_set(oc, 0);
}

static void test_outbound(void)
{
    outbound_t *o = outbound_new(1000, 1); /* 1000 bytes, 1 ms without progress */
    s_fake_conn_t a = {0}, b = {0}, c = {0};
    outbound_attach(o, &a.oc, -1, s_fake_shed); /* no socket: only a shrinking queue is */
    outbound_attach(o, &b.oc, -1, s_fake_shed); /* progress */
    outbound_attach(o, &c.oc, -1, s_fake_shed);
    CHECK(outbound_reserve(&a.oc, 600));
    outbound_set(&a.oc, 600);
    CHECK(outbound_reserve(&b.oc, 300));
    outbound_set(&b.oc, 300);
    CHECK(outbound_total(o) == 900);
    /* c asks for 200: a, the biggest, is shed; b stays */
    CHECK(outbound_reserve(&c.oc, 200));
    CHECK(a.shed == 1 && a.why == OUTBOUND_BUDGET && b.shed == 0 && outbound_total(o) == 300);
    outbound_set(&c.oc, 200);
    /* b asks for 600 more: it would be the biggest itself, so it is refused */
    CHECK(!outbound_reserve(&b.oc, 600));
    CHECK(b.shed == 0 && c.shed == 0 && outbound_total(o) == 500);
    /* a connection is shed once: a (shed, still holding bytes) is never chosen again */
    outbound_set(&a.oc, 500);
    outbound_set(&b.oc, 400);
    CHECK(outbound_reserve(&c.oc, 10)); /* b goes: a holds more but was shed already */
    CHECK(a.shed == 1 && b.shed == 1 && outbound_total(o) == 700);
    /* the write-progress timeout: c holds bytes and takes none */
    int64_t later = clock_now_ms() + 1000;
    outbound_janitor(o, later);
    CHECK(c.shed == 1 && c.why == OUTBOUND_STALLED && a.shed == 1);
    outbound_detach(&a.oc);
    outbound_detach(&b.oc);
    outbound_detach(&c.oc);
    CHECK(outbound_total(o) == 0);
    outbound_destroy(&o);
    CHECK(o == NULL);
}

int main(void)
{
    test_routes();
    test_ids();
    test_validate();
    test_render();
    test_render_text();
    test_body_json();
    test_head();
    test_metrics();
    test_ratelimit();
    test_ratelimit_give_and_forget();
    test_login_throttle();
    test_outbound();
    CHECK_DONE();
}
