/*  Unit tests of the SMP/1 codec: every command round-trips through build and
    parse in each direction it is valid for, and malformed frame sets are refused
    with a reason instead of crashing. */
#include "check.h"
#include "mp.h"
#include "smp.h"

#include <string.h>

static msgpack_sbuffer s_body(const char *op, bool idempotent)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, idempotent ? 3 : 2);
    mp_pack_kv_str(&pk, "op", op);
    mp_pack_cstr(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_int(&pk, "limit", 20);
    if (idempotent)
        mp_pack_kv_bool(&pk, "idempotent", true);
    return buf;
}

static smp_bytes_t s_bytes(const msgpack_sbuffer *b)
{
    smp_bytes_t r = {(const uint8_t *)b->data, b->size};
    return r;
}

static void test_request_roundtrip(msgpack_zone *zone)
{
    msgpack_sbuffer body = s_body("clipboard.list", true);
    smp_msg_t m = {.command = SMP_REQUEST,
                   .service = smp_bytes_str("db"),
                   .request_id = smp_bytes_str("req-1"),
                   .deadline_ms = 2500,
                   .body = s_bytes(&body)};
    zmsg_t *msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    CHECK(zmsg_size(msg) == 7);
    smp_msg_t out;
    const char *why = NULL;
    CHECK(smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why) == 0);
    CHECK(out.command == SMP_REQUEST);
    CHECK(smp_bytes_eq(out.service, "db"));
    CHECK(smp_bytes_eq(out.request_id, "req-1"));
    CHECK(out.deadline_ms == 2500);
    CHECK(smp_bytes_eq(out.op, "clipboard.list"));
    CHECK(out.idempotent);
    int64_t limit = 0;
    CHECK(mp_get_int(mp_get(&out.body_obj, "args"), "limit", &limit) && limit == 20);
    /* the same request is not valid as broker->client */
    CHECK(smp_parse(msg, SMP_BROKER_TO_CLIENT, zone, &out, &why) == -1);
    zmsg_destroy(&msg);

    m.route = smp_bytes_str("\x00\x6b\x8b\x45\x67");
    m.route.size = 5;
    msg = smp_build(&m, SMP_BROKER_TO_WORKER);
    CHECK(smp_parse(msg, SMP_BROKER_TO_WORKER, zone, &out, &why) == 0);
    CHECK(out.route.size == 5 && memcmp(out.route.data, "\x00\x6b\x8b\x45\x67", 5) == 0);
    CHECK(!out.service.size);
    zmsg_destroy(&msg);
    msgpack_sbuffer_destroy(&body);
}

static void test_reply_partial(msgpack_zone *zone)
{
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    mp_error_body(&body, 503, "unavailable", "no worker");
    smp_msg_t m = {.command = SMP_REPLY,
                   .route = smp_bytes_str("route"),
                   .request_id = smp_bytes_str("r9"),
                   .body = s_bytes(&body)};
    smp_msg_t out;
    const char *why;
    zmsg_t *msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == 0);
    CHECK(out.status == 503 && smp_bytes_eq(out.route, "route"));
    const msgpack_object *err = mp_get(&out.body_obj, "error");
    CHECK(err && mp_str_eq(mp_get(err, "code"), "unavailable"));
    zmsg_destroy(&msg);

    msg = smp_build(&m, SMP_BROKER_TO_CLIENT);
    CHECK(zmsg_size(msg) == 5);
    CHECK(smp_parse(msg, SMP_BROKER_TO_CLIENT, zone, &out, &why) == 0);
    zmsg_destroy(&msg);

    /* a reply without a status is refused */
    msgpack_sbuffer_clear(&body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_str(&pk, "data", "x");
    m.body = s_bytes(&body);
    msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == -1);
    CHECK(why && strstr(why, "status"));
    zmsg_destroy(&msg);
    /* ... but is a fine partial */
    m.command = SMP_PARTIAL;
    msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == 0);
    CHECK(out.command == SMP_PARTIAL);
    zmsg_destroy(&msg);
    msgpack_sbuffer_destroy(&body);
}

static void test_worker_commands(msgpack_zone *zone)
{
    smp_msg_t out;
    const char *why;
    smp_msg_t m = {.command = SMP_READY, .service = smp_bytes_str("db"), .credit = 7};
    zmsg_t *msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == 0);
    CHECK(out.command == SMP_READY && out.credit == 7 && smp_bytes_eq(out.service, "db"));
    CHECK(smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why) == -1);
    zmsg_destroy(&msg);

    m = (smp_msg_t){.command = SMP_CREDIT, .credit = 0x01020304};
    msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == 0 && out.credit == 0x01020304);
    zmsg_destroy(&msg);

    m = (smp_msg_t){.command = SMP_HEARTBEAT};
    msg = smp_build(&m, SMP_BROKER_TO_WORKER);
    CHECK(zmsg_size(msg) == 3);
    CHECK(smp_parse(msg, SMP_BROKER_TO_WORKER, zone, &out, &why) == 0 && out.body.size == 0);
    zmsg_destroy(&msg);

    m = (smp_msg_t){.command = SMP_DISCONNECT};
    msg = smp_build(&m, SMP_WORKER_TO_BROKER);
    CHECK(smp_parse(msg, SMP_WORKER_TO_BROKER, zone, &out, &why) == 0);
    zmsg_destroy(&msg);

    m = (smp_msg_t){
        .command = SMP_CANCEL, .request_id = smp_bytes_str("r1"), .route = smp_bytes_str("peer")};
    msg = smp_build(&m, SMP_CLIENT_TO_BROKER);
    CHECK(zmsg_size(msg) == 4);
    CHECK(smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why) == 0);
    zmsg_destroy(&msg);
    msg = smp_build(&m, SMP_BROKER_TO_WORKER);
    CHECK(smp_parse(msg, SMP_BROKER_TO_WORKER, zone, &out, &why) == 0);
    CHECK(smp_bytes_eq(out.route, "peer") && smp_bytes_eq(out.request_id, "r1"));
    zmsg_destroy(&msg);
}

/* Builds a message from raw frames given as (pointer, size) pairs. */
static zmsg_t *s_frames(int n, const char **data, const size_t *sizes)
{
    zmsg_t *msg = zmsg_new();
    for (int i = 0; i < n; i++)
        zmsg_addmem(msg, data[i], sizes[i]);
    return msg;
}

static void test_malformed(msgpack_zone *zone)
{
    smp_msg_t out;
    const char *why;
    const char body_ok[] = "\x81\xa2op\xa4ping"; /* {"op":"ping"} */
    struct {
        int n;
        const char *data[8];
        size_t sizes[8];
        const char *expect; /* substring of the reason */
    } cases[] = {
        {0, {0}, {0}, "delimiter"},
        {1, {"x"}, {1}, "delimiter"},
        {2, {"", "SMP2"}, {0, 4}, "SMP1"},
        {2, {"", "SMP"}, {0, 3}, "SMP1"},
        {3, {"", "SMP1", "\x01\x01"}, {0, 4, 2}, "one byte"},
        {3, {"", "SMP1", "\x7f"}, {0, 4, 1}, "direction"},
        {4, {"", "SMP1", "\x01", "db"}, {0, 4, 1, 2}, "request id"},
        {5, {"", "SMP1", "\x01", "db", "r"}, {0, 4, 1, 2, 1}, "deadline"},
        {6, {"", "SMP1", "\x01", "db", "r", "\0\0\0"}, {0, 4, 1, 2, 1, 3}, "deadline"},
        {6, {"", "SMP1", "\x01", "db", "r", "\0\0\0\1"}, {0, 4, 1, 2, 1, 4}, "body"},
        {7, {"", "SMP1", "\x01", "", "r", "\0\0\0\1", body_ok}, {0, 4, 1, 0, 1, 4, 9}, "service"},
        {7,
         {"", "SMP1", "\x01", "db", "", "\0\0\0\1", body_ok},
         {0, 4, 1, 2, 0, 4, 9},
         "request id"},
        {7,
         {"", "SMP1", "\x01", "db", "0123456789012345678901234567890123", "\0\0\0\1", body_ok},
         {0, 4, 1, 2, 33, 4, 9},
         "request id"},
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\xc1"},
         {0, 4, 1, 2, 1, 4, 1},
         "MessagePack"},
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\x81\xa2op"},
         {0, 4, 1, 2, 1, 4, 4},
         "truncated"},
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\x81\xa2op\xa4pingX"},
         {0, 4, 1, 2, 1, 4, 10},
         "after"},
        {7, {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\x91\x01"}, {0, 4, 1, 2, 1, 4, 2}, "map"},
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\x81\xa2op\x05"},
         {0, 4, 1, 2, 1, 4, 5},
         "op"},
        /* an array32 header claiming 4 billion elements must not be allocated */
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", "\xdd\xff\xff\xff\xff"},
         {0, 4, 1, 2, 1, 4, 5},
         "exceeds"},
        {7,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1",
          "\xdb\x7f\xff\xff\xff"
          "ab"},
         {0, 4, 1, 2, 1, 4, 7},
         "exceeds"},
        {8,
         {"", "SMP1", "\x01", "db", "r", "\0\0\0\1", body_ok, "extra"},
         {0, 4, 1, 2, 1, 4, 9, 5},
         "extra"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zmsg_t *msg = s_frames(cases[i].n, cases[i].data, cases[i].sizes);
        why = NULL;
        int rc = smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why);
        if (rc != -1 || !why || !strstr(why, cases[i].expect)) {
            fprintf(stderr, "case %zu: rc=%d reason=%s (want '%s')\n", i, rc, why ? why : "-",
                    cases[i].expect);
            check_failures++;
        }
        msgpack_zone_clear(zone);
        zmsg_destroy(&msg);
    }
    /* a request id is reported even when a later frame is bad, so the broker can answer */
    const char *d[] = {"", "SMP1", "\x01", "db", "abc", "\0\0\0\1", "\xc1"};
    size_t s[] = {0, 4, 1, 2, 3, 4, 1};
    zmsg_t *msg = s_frames(7, d, s);
    CHECK(smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why) == -1);
    CHECK(smp_bytes_eq(out.request_id, "abc"));
    zmsg_destroy(&msg);

    /* far more frames than any message has: still "extra", whether parsed from a
       zmsg or from the frame views the broker passes */
    const char body_ping[] = "\x81\xa2op\xa4ping";
    smp_bytes_t views[40] = {{(const uint8_t *)"", 0},       {(const uint8_t *)"SMP1", 4},
                             {(const uint8_t *)"\x01", 1},   {(const uint8_t *)"db", 2},
                             {(const uint8_t *)"r", 1},      {(const uint8_t *)"\0\0\0\1", 4},
                             {(const uint8_t *)body_ping, 9}};
    for (size_t i = 7; i < 40; i++)
        views[i] = (smp_bytes_t){(const uint8_t *)"x", 1};
    CHECK(smp_parse_frames(views, 7, SMP_CLIENT_TO_BROKER, zone, &out, &why) == 0);
    CHECK(smp_bytes_eq(out.op, "ping") && smp_bytes_eq(out.request_id, "r"));
    why = NULL;
    CHECK(smp_parse_frames(views, 40, SMP_CLIENT_TO_BROKER, zone, &out, &why) == -1);
    CHECK(why && strstr(why, "extra"));
    msg = zmsg_new();
    for (size_t i = 0; i < 40; i++)
        zmsg_addmem(msg, views[i].data, views[i].size);
    why = NULL;
    CHECK(smp_parse(msg, SMP_CLIENT_TO_BROKER, zone, &out, &why) == -1);
    CHECK(why && strstr(why, "extra"));
    zmsg_destroy(&msg);
    msgpack_zone_clear(zone);
}

static void test_events(msgpack_zone *zone)
{
    const char body[] = "\x81\xa4type\xa4ping";
    zmsg_t *msg = smp_event_build("user/12/", body, sizeof body - 1);
    smp_bytes_t topic;
    msgpack_object obj;
    const char *why;
    CHECK(smp_event_parse(msg, zone, &topic, &obj, &why) == 0);
    CHECK(smp_bytes_eq(topic, "user/12/"));
    CHECK(mp_str_eq(mp_get(&obj, "type"), "ping"));
    zmsg_destroy(&msg);
    msg = smp_event_build("user/12/", "\x01", 1);
    CHECK(smp_event_parse(msg, zone, &topic, &obj, &why) == -1);
    zmsg_destroy(&msg);
}

static void test_u32(void)
{
    uint8_t b[4];
    smp_put_u32(b, 0xdeadbeef);
    CHECK(b[0] == 0xde && b[3] == 0xef);
    CHECK(smp_get_u32(b) == 0xdeadbeef);
}

int main(void)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    test_request_roundtrip(zone);
    test_reply_partial(zone);
    test_worker_commands(zone);
    test_malformed(zone);
    test_events(zone);
    test_u32();
    msgpack_zone_free(zone);
    CHECK_DONE();
}
