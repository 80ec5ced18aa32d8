/*  smp.h - SMP/1 codec: builds and parses every command of docs/protocol.md.

    A message is parsed from a czmq zmsg_t whose first frame is the empty delimiter
    (a ROUTER caller pops the peer identity first). Parsing never trusts the peer:
    any frame count, size or MessagePack problem yields -1 and a reason string that
    can be logged and sent back as a `bad_request` error. Parsed fields point into
    the message's frames and the caller's zone, so they live as long as both do.
*/
#ifndef SLUICE_SMP_H
#define SLUICE_SMP_H

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#define SMP_PROTOCOL "SMP1"
#define SMP_SERVICE_MAX 64             /* bytes in a service name */
#define SMP_REQUEST_ID_MAX 32          /* protocol.md: 1-32 opaque bytes */
#define SMP_ROUTE_MAX 256              /* a ZeroMQ routing id is at most 255 bytes */
#define SMP_OP_MAX 64                  /* bytes in an op name */
#define SMP_IDEM_MAX 128               /* api.md: Idempotency-Key is 1-128 chars */
#define SMP_BODY_MAX (4 * 1024 * 1024) /* a body above this is refused */
#define SMP_TOPIC_MAX 128
#define SMP_DEFAULT_DEADLINE_MS 5000

typedef enum {
    SMP_REQUEST = 0x01,
    SMP_REPLY = 0x02,
    SMP_PARTIAL = 0x03,
    SMP_CANCEL = 0x14, /* client -> broker -> worker: the client no longer wants the answer */
    SMP_READY = 0x10,
    SMP_HEARTBEAT = 0x11,
    SMP_DISCONNECT = 0x12,
    SMP_CREDIT = 0x13,
} smp_command_t;

/* Which grammar applies depends on who sent the frames and to whom. */
typedef enum {
    SMP_CLIENT_TO_BROKER, /* REQUEST, CANCEL */
    SMP_BROKER_TO_CLIENT, /* REPLY, PARTIAL */
    SMP_WORKER_TO_BROKER, /* READY, PARTIAL, REPLY, CREDIT, HEARTBEAT, DISCONNECT */
    SMP_BROKER_TO_WORKER, /* REQUEST, CANCEL, HEARTBEAT, DISCONNECT */
} smp_dir_t;

typedef struct {
    const uint8_t *data; /* not NUL-terminated */
    size_t size;
} smp_bytes_t;

typedef struct {
    smp_command_t command;
    smp_bytes_t service;    /* client REQUEST, READY */
    smp_bytes_t route;      /* worker side REQUEST, REPLY, PARTIAL, CANCEL: opaque, given back */
    smp_bytes_t request_id; /* REQUEST, REPLY, PARTIAL, CANCEL */
    uint32_t deadline_ms;   /* REQUEST: budget from now, 0 = default */
    uint32_t credit;        /* READY, CREDIT */
    smp_bytes_t body;       /* raw MessagePack: REQUEST, REPLY, PARTIAL, HEARTBEAT (may be empty) */
    msgpack_object body_obj; /* body unpacked into the caller's zone (NIL when no body) */
    smp_bytes_t op;          /* REQUEST: body "op" */
    bool idempotent;         /* REQUEST: body "idempotent": true */
    int status;              /* REPLY: body "status" */
} smp_msg_t;

/*  Parses msg, sent in direction dir, into out. The body is unpacked into zone (the
    caller clears it when done with out). Returns 0, or -1 with *reason set to a
    static human-readable string. The request id is filled in as soon as it is known,
    so a caller can address an error reply even when a later frame is bad. */
int smp_parse(zmsg_t *msg, smp_dir_t dir, msgpack_zone *zone, smp_msg_t *out, const char **reason);
/*  The same over count frames given as views (the frames after a ROUTER's routing
    id), for a caller that receives into zmq_msg_t parts instead of a zmsg_t. */
int smp_parse_frames(const smp_bytes_t *frames, size_t count, smp_dir_t dir, msgpack_zone *zone,
                     smp_msg_t *out, const char **reason);

/*  Builds the frames of m for direction dir, starting with the empty delimiter.
    Only the fields that command uses are read. Returns NULL if m does not fit the
    grammar (our own programming error, so it is also logged). */
zmsg_t *smp_build(const smp_msg_t *m, smp_dir_t dir);

/*  Events: [topic, "SMP1", body]. */
zmsg_t *smp_event_build(const char *topic, const void *body, size_t body_size);
int smp_event_parse(zmsg_t *msg, msgpack_zone *zone, smp_bytes_t *topic, msgpack_object *body,
                    const char **reason);

/* 4-byte unsigned big-endian integers, as every integer frame carries. */
void smp_put_u32(uint8_t out[4], uint32_t value);
uint32_t smp_get_u32(const uint8_t in[4]);

/* smp_bytes_t helpers */
smp_bytes_t smp_bytes_str(const char *s);
bool smp_bytes_eq(smp_bytes_t a, const char *s);

#endif
