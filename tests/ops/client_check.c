/*  client_check.c - drives the client library for tests/ops/test_client.py.

    client_check FRONTENDS calls N      N blocking calls to echo "upper"; prints
                                        "status S local L" per reply
    client_check FRONTENDS cancel       an async "hold" call, cancelled once sent
    client_check FRONTENDS hold MS      one blocking "hold" call with deadline MS
*/
#include "sluice/client.h"

#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_body(msgpack_sbuffer *buf, const char *op)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(buf);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, op, strlen(op));
    msgpack_pack_str_with_body(&pk, "args", 4);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "text", 4);
    msgpack_pack_str_with_body(&pk, "abc", 3);
}

static void s_print(const sl_reply_t *reply)
{
    printf("status %d local %d\n", reply->status, reply->local);
    fflush(stdout);
}

static void s_on_reply(void *arg, uint64_t call, const sl_reply_t *reply)
{
    (void)call;
    *(int *)arg = 1;
    s_print(reply);
}

static int s_loop_until(sl_client_t *client, int *done)
{
    while (!*done) {
        struct pollfd fds[16];
        size_t n = sl_client_fd_count(client);
        for (size_t i = 0; i < n && i < 16; i++)
            fds[i] = (struct pollfd){.fd = sl_client_fd(client, i), .events = POLLIN};
        poll(fds, n, (int)sl_client_timeout_ms(client));
        sl_client_dispatch(client);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    sl_client_t *client = sl_client_new(argv[1]);
    if (!client)
        return 2;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    int rc = 0;
    if (strcmp(argv[2], "calls") == 0 && argc > 3) {
        int n = atoi(argv[3]);
        for (int i = 0; i < n; i++) {
            s_body(&buf, "upper");
            sl_reply_t reply;
            if (sl_client_call(client, "echo", buf.data, buf.size, 5000, NULL, NULL, &reply) != 0)
                return 1;
            s_print(&reply);
            sl_reply_free(&reply);
        }
    } else if (strcmp(argv[2], "cancel") == 0) {
        /* a first call brings the connection up, so the next one leaves at once */
        s_body(&buf, "services");
        sl_reply_t first;
        if (sl_client_call(client, "sys", buf.data, buf.size, 5000, NULL, NULL, &first) != 0)
            return 1;
        sl_reply_free(&first);
        s_body(&buf, "hold");
        int done = 0;
        uint64_t id;
        sl_call_handlers_t h = {NULL, s_on_reply};
        if (sl_client_send(client, "echo", buf.data, buf.size, 10000, &h, &done, &id) != 0)
            return 1;
        sl_client_dispatch(client);
        if (sl_client_cancel(client, id) != 0)
            return 1;
        s_loop_until(client, &done);
    } else if (strcmp(argv[2], "hold") == 0 && argc > 3) {
        s_body(&buf, "hold");
        sl_reply_t reply;
        if (sl_client_call(client, "echo", buf.data, buf.size, (uint32_t)atoi(argv[3]), NULL, NULL,
                           &reply) != 0)
            return 1;
        s_print(&reply);
        sl_reply_free(&reply);
    } else {
        rc = 2;
    }
    /* a bad body is refused */
    if (sl_client_send(client, "echo", "\x80", 1, 0, &(sl_call_handlers_t){NULL, s_on_reply}, NULL,
                       NULL) == 0)
        rc = 1;
    msgpack_sbuffer_destroy(&buf);
    sl_client_destroy(&client);
    return rc;
}
