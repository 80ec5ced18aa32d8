/*  Unit tests of config, mp, clock and slog. */
#include "check.h"
#include "clock.h"
#include "config.h"
#include "mp.h"
#include "slog.h"

#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static const config_option_t s_options[] = {
    {"frontend", CONFIG_STR, "tcp://127.0.0.1:5550", "where clients connect"},
    {"queue_max", CONFIG_INT, "1000", "bound of each service queue"},
    {"verbose", CONFIG_BOOL, "false", "say more"},
    {NULL, 0, NULL, NULL},
};

static int s_load(config_t **cfg, int argc, const char **argv)
{
    return config_load(cfg, "sluice-test", "test", s_options, argc, (char **)argv);
}

static void test_config(void)
{
    config_t *cfg = NULL;
    const char *none[] = {"prog"};
    unsetenv("SLUICE_QUEUE_MAX");
    unsetenv("SLUICE_CONFIG");
    CHECK(s_load(&cfg, 1, none) == 0);
    CHECK(strcmp(config_str(cfg, "frontend"), "tcp://127.0.0.1:5550") == 0);
    CHECK(config_int(cfg, "queue_max") == 1000);
    CHECK(!config_bool(cfg, "verbose"));
    CHECK(strcmp(config_str(cfg, "log_level"), "info") == 0);
    config_destroy(&cfg);
    CHECK(cfg == NULL);

    /* file < env < flags */
    char path[] = "/tmp/sluice-config-XXXXXX";
    int fd = mkstemp(path);
    const char text[] = "# comment\nqueue_max = 5\nfrontend=tcp://a:1\n\nverbose = yes\n";
    CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
    close(fd);
    setenv("SLUICE_QUEUE_MAX", "6", 1);
    const char *args[] = {"prog", "--config", path, "--frontend=tcp://b:2", "--log-level", "warn"};
    CHECK(s_load(&cfg, 6, args) == 0);
    CHECK(config_int(cfg, "queue_max") == 6);
    CHECK(strcmp(config_str(cfg, "frontend"), "tcp://b:2") == 0);
    CHECK(config_bool(cfg, "verbose"));
    CHECK(slog_enabled(SLOG_WARN) && !slog_enabled(SLOG_INFO));
    config_destroy(&cfg);
    const char *flag[] = {"prog", "--queue_max", "7"};
    CHECK(s_load(&cfg, 3, flag) == 0 && config_int(cfg, "queue_max") == 7);
    config_destroy(&cfg);
    unsetenv("SLUICE_QUEUE_MAX");

    /* errors are refused, with the config left NULL */
    const char *bad_int[] = {"prog", "--queue-max=ten"};
    CHECK(s_load(&cfg, 2, bad_int) == -1 && cfg == NULL);
    const char *unknown[] = {"prog", "--nope=1"};
    CHECK(s_load(&cfg, 2, unknown) == -1);
    const char *missing[] = {"prog", "--frontend"};
    CHECK(s_load(&cfg, 2, missing) == -1);
    const char *positional[] = {"prog", "stray"};
    CHECK(s_load(&cfg, 2, positional) == -1);
    const char *level[] = {"prog", "--log-level=loud"};
    CHECK(s_load(&cfg, 2, level) == -1);
    const char *nofile[] = {"prog", "--config=/nonexistent/sluice.conf"};
    CHECK(s_load(&cfg, 2, nofile) == -1);
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "mystery = 1\n", 12) == 12);
    close(fd);
    const char *badfile[] = {"prog", "--config", path};
    CHECK(s_load(&cfg, 3, badfile) == -1);
    unlink(path);
    /* --help and --version answer 1: print and exit 0 */
    const char *help[] = {"prog", "--help"};
    CHECK(s_load(&cfg, 2, help) == 1 && cfg == NULL);
    const char *version[] = {"prog", "--version"};
    CHECK(s_load(&cfg, 2, version) == 1);
    slog_set_level(SLOG_INFO);
}

static void test_mp(void)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    mp_pack_kv_str(&pk, "name", "clip");
    mp_pack_kv_int(&pk, "neg", -5);
    mp_pack_kv_bool(&pk, "flag", true);
    mp_pack_cstr(&pk, "huge");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    mp_pack_kv_int(&pk, "n", 42);
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object obj;
    size_t off = 0;
    CHECK(msgpack_unpack(buf.data, buf.size, &off, zone, &obj) == MSGPACK_UNPACK_SUCCESS);
    const char *s;
    size_t len;
    int64_t i;
    bool b;
    CHECK(mp_get_str(&obj, "name", &s, &len) && len == 4 && memcmp(s, "clip", 4) == 0);
    CHECK(mp_get_int(&obj, "neg", &i) && i == -5);
    CHECK(mp_get_int(&obj, "n", &i) && i == 42);
    CHECK(!mp_get_int(&obj, "huge", &i)); /* above INT64_MAX */
    CHECK(!mp_get_int(&obj, "name", &i)); /* wrong type */
    CHECK(!mp_get_str(&obj, "n", &s, &len));
    CHECK(mp_get_bool(&obj, "flag", &b) && b);
    CHECK(!mp_get(&obj, "absent"));
    CHECK(!mp_get(mp_get(&obj, "n"), "x")); /* not a map */

    mp_error_body(&buf, 404, "not_found", "no such item");
    off = 0;
    CHECK(msgpack_unpack(buf.data, buf.size, &off, zone, &obj) == MSGPACK_UNPACK_SUCCESS);
    CHECK(mp_get_int(&obj, "status", &i) && i == 404);
    CHECK(mp_str_eq(mp_get(mp_get(&obj, "error"), "code"), "not_found"));
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&buf);
}

static void test_clock(void)
{
    char text[CLOCK_RFC3339_SIZE];
    clock_format_rfc3339(1795428000123LL, text); /* 2026-11-23T10:00:00.123Z */
    CHECK(strcmp(text, "2026-11-23T10:00:00.123Z") == 0);
    int64_t a = clock_now_us();
    int64_t b = clock_now_us();
    CHECK(b >= a);
    CHECK(clock_wall_ms() > 1700000000000LL);
    slog_level_t level;
    CHECK(slog_level_parse("DEBUG", &level) == 0 && level == SLOG_DEBUG);
    CHECK(slog_level_parse("chatty", &level) == -1);
    const uint8_t rid[] = {0x00, 0xff};
    slog_write(SLOG_INFO, rid, 2, "unit test log line %d", 1);
}

int main(void)
{
    test_config();
    test_mp();
    test_clock();
    CHECK_DONE();
}
