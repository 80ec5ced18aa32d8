"""Malformed frames: from a client, 400 bad_request when a request id could be read,
dropped otherwise; from a worker, ignored. The broker keeps serving either way."""


import zmq

import smp
from conftest import recv_all

P, REQ = smp.PROTO, smp.REQUEST
GOOD = smp.pack({"op": "x"})


def raw(broker, endpoint):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def test_malformed_client_frames(broker):
    e = broker.echo_worker("echo")
    broker.wait_workers("echo", 1)
    sock = raw(broker, broker.frontend)
    u32 = smp.u32(1000)
    # (frames, request id a 400 must carry, or None when it must be dropped)
    cases = [
        ([b""], None),
        ([b"", P], None),
        ([b"SMP1", REQ, b"echo", b"r0", u32, GOOD], None),  # no delimiter
        ([b"", b"SMP2", REQ, b"echo", b"r1", u32, GOOD], None),
        ([b"", P, b"\x7f", b"echo", b"r2", u32, GOOD], None),  # unknown command
        ([b"", P, smp.REPLY, b"r3", GOOD], None),  # not a client command
        ([b"", P, REQ, b"x" * 65, b"r4", u32, GOOD], None),  # service too long
        ([b"", P, REQ, b"echo", b"r" * 33, u32, GOOD], None),  # request id too long
        ([b"", P, REQ, b"echo", b"b1", b"\x00\x01", GOOD], b"b1"),  # short deadline
        ([b"", P, REQ, b"echo", b"b2", u32], b"b2"),  # no body
        ([b"", P, REQ, b"echo", b"b3", u32, b"\xc1"], b"b3"),  # never-used byte
        ([b"", P, REQ, b"echo", b"b4", u32, b"\xdd\xff\xff\xff\xff"], b"b4"),  # array32 bomb
        ([b"", P, REQ, b"echo", b"b5", u32, smp.pack([1, 2])], b"b5"),  # not a map
        ([b"", P, REQ, b"echo", b"b6", u32, smp.pack({"args": {}})], b"b6"),  # no op
        ([b"", P, REQ, b"echo", b"b7", u32, GOOD, b"extra"], b"b7"),
        ([b"", P, REQ, b"echo", b"b8", u32, GOOD + b"\x00"], b"b8"),  # trailing bytes
        ([b"", P, REQ, b"ec ho", b"b9", u32, GOOD], b"b9"),  # service with a space
        ([b"", P, REQ, b"echo", b"b10", u32, smp.pack({"op": "x", "idempotent": "yes"})],
         b"b10"),
        ([b"", P, smp.CANCEL], None),
        ([b"", P, smp.CANCEL, b"c1", b"extra"], b"c1"),
        ([b"", P, REQ, b"echo", b"b11", u32, b"\x81" + b"\x91" * 5000], b"b11"),  # deep nesting
        ([b"", P, REQ, b"echo", b"b12", u32, b"\xc6" + smp.u32(5 << 20) + b"x" * (5 << 20)],
         b"b12"),  # a 5 MiB body: over the codec's 4 MiB
        # more frames than the broker keeps per message (16): still refused, not cut
        ([b"", P, REQ, b"echo", b"b13", u32, GOOD] + [b"x"] * 30, b"b13"),
    ]
    for frames, _ in cases:
        sock.send_multipart(frames)
    # a good request after them all: everything before it has been answered by then
    sock.send_multipart([b"", P, REQ, b"echo", b"good", u32, GOOD])
    answered = []
    while True:
        assert sock.poll(5000), "broker stopped answering"
        frames = sock.recv_multipart()
        assert len(frames) == 5 and frames[:3] == [b"", P, smp.REPLY]
        body = smp.unpack(frames[4])
        if frames[3] == b"good":
            assert body["status"] == 200
            break
        assert body["status"] == 400 and body["error"]["code"] == "bad_request", body
        assert body["error"]["message"]
        answered.append(frames[3])
    assert answered == [rid for _, rid in cases if rid]
    assert [r for r, _ in e.seen] == [b"good"]
    st = broker.status()["broker"]
    assert st["bad_request"] == len(answered)
    assert st["dropped"] == len([c for c in cases if c[1] is None])
    sock.close()


def test_malformed_worker_frames(make_broker):
    b = make_broker()
    c = b.client()
    good = b.echo_worker("svc")
    b.wait_workers("svc", 1)
    bad = b.worker("svc", credit=1)  # registered last: gets the next request
    b.wait_workers("svc", 2)
    r1 = c.send("svc", {"op": "x"}, deadline_ms=500)
    route, rid, _, _ = bad.recv_request()
    u32 = smp.u32(1)
    garbage = [
        [b""],
        [b"", b"SMP1"],
        [b"", b"XXXX", smp.REPLY, route, rid, smp.pack({"status": 200})],
        [b"", P, b"\x7f"],
        [b"", P, smp.REQUEST, b"svc", b"r", u32, GOOD],  # not a worker command
        [b"", P, smp.REPLY, b"abc", rid, smp.pack({"status": 200})],  # route size
        [b"", P, smp.REPLY, route, rid, smp.pack({"status": 99})],  # bad status
        [b"", P, smp.REPLY, route, rid, smp.pack("not a map")],
        [b"", P, smp.REPLY, route, rid, b"\xdd\xff\xff\xff\xff"],
        [b"", P, smp.REPLY, b"\x00" * 8, rid, smp.pack({"status": 200})],  # unknown route
        [b"", P, smp.REPLY, route, b"other-id", smp.pack({"status": 200})],  # wrong id
        [b"", P, smp.PARTIAL, route, rid, smp.pack([1])],
        [b"", P, smp.PARTIAL, b"\xff" * 8, rid, smp.pack({"data": 1})],
        [b"", P, smp.CREDIT, b"\x01"],
        [b"", P, smp.HEARTBEAT, smp.pack([1, 2])],
        [b"", P, smp.READY, b"sys", u32],  # sys is the broker's own
        [b"", P, smp.DISCONNECT, b"extra"],
        # a good reply followed by more frames than the broker keeps (16): refused
        [b"", P, smp.REPLY, route, rid, smp.pack({"status": 200})] + [b"x"] * 30,
    ]
    for frames in garbage:
        bad.sock.send_multipart(frames)
    # r1 was never answered by anything valid: its deadline answers it
    body = c.wait_reply(r1, timeout=5)
    assert body["status"] == 504
    # and the broker goes on serving
    for _ in range(5):
        assert c.request("svc", {"op": "y"})["status"] == 200
    st = b.status()["broker"]
    assert st["worker_errors"] >= 10
    assert recv_all(c, 0.05) == []


def test_reply_after_reconnect_is_delivered(broker):
    """A route is what a worker answers with: a worker that reconnected (new routing
    id, as common/worker.c does after DISCONNECT) still delivers what it held, and
    the credit goes back to the entry that held it."""
    c = broker.client()
    old = broker.worker("re", credit=1)
    broker.wait_workers("re", 1)
    r1 = c.send("re", {"op": "x"})
    route, rid, _, _ = old.recv_request()
    old.close()
    new = broker.worker("re", credit=1)  # READY on a new connection
    broker.wait_workers("re", 2)
    new.sock.send_multipart([b"", P, smp.REPLY, route, rid + b"x", smp.pack({"status": 200})])
    new.partial(route, rid, {"data": "p"})
    new.reply(route, rid, {"status": 200, "data": "delivered"})
    assert c.wait_reply(r1)["data"] == "delivered"
    assert [p["data"] for p in c.partials] == ["p"]
    st = broker.status()["services"]["re"]
    assert st["in_flight"] == 0 and st["credit"] == 2


def test_giant_frame_drops_only_that_connection(broker):
    e = broker.echo_worker("echo")
    broker.wait_workers("echo", 1)
    sock = raw(broker, broker.frontend)
    sock.send_multipart([b"", P, REQ, b"echo", b"huge", smp.u32(1000), b"x" * (9 << 20)])
    # the broker is not hurt, and other clients go on
    c = broker.client()
    assert c.request("echo", {"op": "x"})["status"] == 200
    assert b"huge" not in [r for r, _ in e.seen]
    sock.close()
