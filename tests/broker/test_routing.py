"""Routing: services registered by READY, least-recently-used workers with credit,
credit never exceeded (CREDIT replaces the total), fast 503s."""
import subprocess

import procs
import smp
from conftest import nothing_for, deadline_of


def test_help_and_version():
    out = subprocess.run([procs.binary("broker"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("sluice-broker ")
    out = subprocess.run([procs.binary("broker"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--queue-max" in out.stdout and "--heartbeat-ms" in out.stdout
    out = subprocess.run([procs.binary("broker"), "--liveness", "0"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode != 0 and "liveness" in out.stdout + out.stderr


def test_request_reply_passes_through(broker):
    w = broker.worker("echo", credit=1)
    c = broker.client()
    broker.wait_workers("echo", 1)
    body = {"op": "thing.get", "args": {"n": 1, "s": "x" * 1000}, "trace": "t1",
            "auth": {"user_id": 7, "device_id": 9}}
    rid = c.send("echo", body, deadline_ms=2000)
    cmd, rest = w.recv()
    assert cmd == smp.REQUEST
    route, wrid, deadline, wbody = rest
    assert len(route) == 8 and wrid == rid
    assert 1000 < deadline_of(deadline) <= 2000  # the budget left, not the original
    assert smp.unpack(wbody) == body  # untouched, auth included
    reply = {"status": 201, "data": {"id": 5, "nested": [1, 2, {"a": None}]}}
    w.reply(route, wrid, reply)
    assert c.wait_reply(rid) == reply


def test_default_deadline(make_broker):
    b = make_broker(default_deadline_ms=3000)
    w = b.worker("echo")
    c = b.client()
    b.wait_workers("echo", 1)
    c.send("echo", {"op": "x"}, deadline_ms=0)
    _, _, deadline, _ = w.recv_request()
    assert 2000 < deadline <= 3000


def test_least_recently_used_worker_first(broker):
    c = broker.client()
    workers = [broker.worker("lru", credit=3) for _ in range(3)]
    broker.wait_workers("lru", 3)
    rids = [c.send("lru", {"op": "n", "args": {"i": i}}) for i in range(9)]
    got = {}
    for n, w in enumerate(workers):
        got[n] = sorted(rids.index(w.recv_request()[1]) for _ in range(3))
    # each worker got one request in every round of three, never two in a row
    assert sorted(got.values()) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert all(nothing_for(w, 0.1) for w in workers)


def test_lru_order_follows_use_not_registration(broker):
    c = broker.client()
    a, b = broker.worker("lru2"), broker.worker("lru2")
    broker.wait_workers("lru2", 2)
    r1 = c.send("lru2", {"op": "x"})
    # find who got r1, then r2 goes to the other one
    holders = {}
    for w in (a, b):
        try:
            route, rid, _, _ = w.recv_request(0.5)
            holders[rid] = (w, route)
        except TimeoutError:
            pass
    if r1 not in holders:
        raise AssertionError("no worker got r1")
    x, xroute = holders[r1]
    y = b if x is a else a
    r2 = c.send("lru2", {"op": "x"})
    yroute, rid, _, _ = y.recv_request()
    assert rid == r2
    x.reply(xroute, r1, {"status": 200})
    assert c.wait_reply(r1)["status"] == 200
    y.reply(yroute, r2, {"status": 200})
    assert c.wait_reply(r2)["status"] == 200
    # x was used longest ago, so it is first again, then y
    r3 = c.send("lru2", {"op": "x"})
    assert x.recv_request()[1] == r3
    r4 = c.send("lru2", {"op": "x"})
    assert y.recv_request()[1] == r4


def test_credit_never_exceeded_and_credit_replaces_total(broker):
    c = broker.client()
    w = broker.worker("cred", credit=2)
    broker.wait_workers("cred", 1)
    rids = [c.send("cred", {"op": "x"}) for _ in range(8)]
    held = [w.recv_request() for _ in range(2)]
    st = broker.wait_status(lambda d: d["services"]["cred"]["queued"] == 6)
    assert st["services"]["cred"]["in_flight"] == 2
    assert nothing_for(w)
    # a REPLY returns exactly one credit
    route, rid, _, _ = held.pop(0)
    w.reply(route, rid, {"status": 200})
    held.append(w.recv_request())
    assert nothing_for(w)
    assert broker.status()["services"]["cred"]["queued"] == 5
    # CREDIT replaces the total: 4 while holding 2 -> exactly 2 more
    w.credit(4)
    held += [w.recv_request(), w.recv_request()]
    assert nothing_for(w)
    st = broker.status()["services"]["cred"]
    assert st["queued"] == 3 and st["in_flight"] == 4 and st["capacity"] == 4
    # lowering the total: nothing new until it holds fewer than 1
    w.credit(1)
    for _ in range(3):
        route, rid, _, _ = held.pop(0)
        w.reply(route, rid, {"status": 200})
    assert nothing_for(w)
    route, rid, _, _ = held.pop(0)
    w.reply(route, rid, {"status": 200})
    held.append(w.recv_request())
    assert nothing_for(w)
    assert [r[1] for r in held] == [rids[5]]  # still in arrival order
    st = broker.status()["services"]["cred"]
    assert st["queued"] == 2 and st["in_flight"] == 1 and st["credit"] == 0


def test_no_worker_is_503_at_once(broker):
    c = broker.client()
    body = c.request("nobody", {"op": "x"}, deadline_ms=60000, timeout=5)
    assert body["status"] == 503 and body["error"]["code"] == "unavailable"


def test_zero_credit_worker_queues_until_credit(broker):
    c = broker.client()
    w = broker.worker("zero", credit=0)
    broker.wait_workers("zero", 1)
    rid = c.send("zero", {"op": "x"})
    broker.wait_status(lambda d: d["services"]["zero"]["queued"] == 1)
    w.credit(1)
    route, got, _, _ = w.recv_request()
    assert got == rid


def test_full_queue_is_503_at_once(make_broker):
    b = make_broker(queue_max=2, service_queue_max="tiny=0,big=5")
    c = b.client()
    w = b.worker("q", credit=1)
    t = b.worker("tiny", credit=0)
    b.wait_workers("q", 1)
    b.wait_workers("tiny", 1)
    rids = [c.send("q", {"op": "x"}, deadline_ms=60000) for _ in range(4)]
    cmd, rid, body = c.recv(5)  # only the one over the bound is answered now
    assert (cmd, rid) == (smp.REPLY, rids[3])
    assert body["status"] == 503 and body["error"]["code"] == "unavailable"
    st = b.status()["services"]
    assert st["q"]["queued"] == 2 and st["q"]["in_flight"] == 1 and st["q"]["queue_max"] == 2
    assert st["tiny"]["queue_max"] == 0
    body = c.request("tiny", {"op": "x"}, deadline_ms=60000, timeout=5)
    assert body["status"] == 503
    del w, t


def test_bad_service_queue_max_refused():
    import subprocess
    out = subprocess.run([procs.binary("broker"), "--service-queue-max", "db=x"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "service_queue_max" in out.stdout + out.stderr


def test_duplicate_request_id_in_progress_is_400(broker):
    c = broker.client()
    w = broker.worker("dup")
    broker.wait_workers("dup", 1)
    c.send("dup", {"op": "x"}, request_id=b"same")
    route, rid, _, _ = w.recv_request()
    c.send("dup", {"op": "x"}, request_id=b"same")
    cmd, rid2, body = c.recv(5)
    assert rid2 == b"same" and body["status"] == 400 and body["error"]["code"] == "bad_request"
    w.reply(route, rid, {"status": 200, "data": 1})
    assert c.wait_reply(b"same") == {"status": 200, "data": 1}
    # once answered, the id may be used again
    c.send("dup", {"op": "x"}, request_id=b"same")
    route, rid, _, _ = w.recv_request()
    assert rid == b"same"


def test_worker_disconnect_drains_then_leaves(broker):
    c = broker.client()
    w = broker.worker("dis", credit=2)
    broker.wait_workers("dis", 1)
    r1 = c.send("dis", {"op": "x"})
    route, rid, _, _ = w.recv_request()
    w.disconnect()
    broker.wait_workers("dis", 0)
    # no live worker any more: new requests fail fast
    assert c.request("dis", {"op": "x"})["status"] == 503
    # but what it holds is still delivered
    w.reply(route, rid, {"status": 200, "data": "late but fine"})
    assert c.wait_reply(r1)["data"] == "late but fine"
    broker.wait_status(lambda d: "dis" not in d["services"] and d["broker"]["workers"] == 0)


def test_frames_exactly_as_protocol_md(broker):
    """The broker writes REQUEST, PARTIAL and REPLY frame by frame: check every frame."""
    import zmq
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.frontend)
    w = broker.worker("frames")
    broker.wait_workers("frames", 1)
    body = smp.pack({"op": "x", "args": {"k": "v"}})
    sock.send_multipart([b"", smp.PROTO, smp.REQUEST, b"frames", b"rid-1", smp.u32(4000), body])
    assert w.sock.poll(5000)
    frames = w.sock.recv_multipart()
    assert len(frames) == 7 and frames[:3] == [b"", smp.PROTO, smp.REQUEST]
    route = frames[3]
    assert len(route) == 8 and frames[4] == b"rid-1" and frames[6] == body
    assert 0 < deadline_of(frames[5]) <= 4000
    partial, reply = smp.pack({"data": [1]}), smp.pack({"status": 200, "data": "z"})
    w.sock.send_multipart([b"", smp.PROTO, smp.PARTIAL, route, b"rid-1", partial])
    w.sock.send_multipart([b"", smp.PROTO, smp.REPLY, route, b"rid-1", reply])
    assert sock.poll(5000)
    assert sock.recv_multipart() == [b"", smp.PROTO, smp.PARTIAL, b"rid-1", partial]
    assert sock.poll(5000)
    assert sock.recv_multipart() == [b"", smp.PROTO, smp.REPLY, b"rid-1", reply]
    # a broker-made reply has the same shape
    sock.send_multipart([b"", smp.PROTO, smp.REQUEST, b"nobody", b"rid-2", smp.u32(0), body])
    assert sock.poll(5000)
    frames = sock.recv_multipart()
    assert len(frames) == 5 and frames[:4] == [b"", smp.PROTO, smp.REPLY, b"rid-2"]
    assert smp.unpack(frames[4])["status"] == 503
    sock.close()
