/*  libFuzzer target: SMP/1 frames and MessagePack bodies through smp_parse and
    smp_event_parse. Input: one byte of direction, then frames each prefixed by a
    one-byte length (0-255; 255 means "the rest of the input"), so the fuzzer can
    vary both the frame count and each frame's bytes. A parsed message must build
    back into frames that parse again to the same command. */
#include "smp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    smp_dir_t dir = (smp_dir_t)(data[0] % 4);
    zmsg_t *msg = zmsg_new();
    size_t pos = 1;
    while (pos < size) {
        size_t len = data[pos++];
        if (len == 255 || pos + len > size)
            len = size - pos;
        zmsg_addmem(msg, data + pos, len);
        pos += len;
    }
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    smp_msg_t out;
    const char *why = NULL;
    if (smp_parse(msg, dir, zone, &out, &why) == 0) {
        zmsg_t *again = smp_build(&out, dir);
        smp_msg_t twice;
        if (!again || smp_parse(again, dir, zone, &twice, &why) != 0 ||
            twice.command != out.command || twice.body.size != out.body.size)
            abort(); /* build and parse disagree: a codec bug */
        zmsg_destroy(&again);
    } else if (!why) {
        abort(); /* every refusal carries a reason */
    }
    smp_bytes_t topic;
    msgpack_object body;
    smp_event_parse(msg, zone, &topic, &body, &why);
    msgpack_zone_free(zone);
    zmsg_destroy(&msg);
    return 0;
}
