/*  test_ctl_json.c - sluicectl's JSON <-> MessagePack conversion (common/ctl/json.c):
    what an operator types survives the trip, and whatever a peer sends prints. */
#include "../unit/check.h"
#include "json.h"

#include <string.h>

static json_t *s_round_trip(const char *text)
{
    json_t *in = json_loads(text, JSON_DECODE_ANY, NULL);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    json_pack_msgpack(&pk, in);
    json_t *out = json_from_msgpack((const uint8_t *)buf.data, buf.size);
    msgpack_sbuffer_destroy(&buf);
    json_decref(in);
    return out;
}

static void s_same(const char *text)
{
    json_t *want = json_loads(text, JSON_DECODE_ANY, NULL);
    json_t *got = s_round_trip(text);
    CHECK(got && json_equal(want, got));
    json_decref(want);
    json_decref(got);
}

int main(void)
{
    s_same("{\"text\": \"h\\u00e9llo\", \"n\": -42, \"big\": 9007199254740993, \"f\": 1.5}");
    s_same("[true, false, null, [], {}, \"\"]");
    s_same("{\"auth\": {\"user_id\": 1, \"device_id\": 2}, \"list\": [1, [2, [3]]]}");

    /* binary and keys that are not strings, as peers may send them */
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_bin_with_body(&pk, "\x01\xff", 2);
    msgpack_pack_str_with_body(&pk, "bad", 3);
    msgpack_pack_str_with_body(&pk, "\xff\xfe", 2); /* not UTF-8 */
    json_t *out = json_from_msgpack((const uint8_t *)buf.data, buf.size);
    CHECK(out != NULL);
    CHECK(strcmp(json_string_value(json_object_get(out, "7")), "01ff") == 0);
    CHECK(strcmp(json_string_value(json_object_get(out, "bad")), "fffe") == 0);
    json_decref(out);

    /* a container that declares more than it holds is refused, not allocated */
    CHECK(json_from_msgpack((const uint8_t *)"\xdd\xff\xff\xff\xff", 5) == NULL);
    CHECK(json_from_msgpack((const uint8_t *)"", 0) == NULL);
    msgpack_sbuffer_destroy(&buf);
    CHECK_DONE();
}
