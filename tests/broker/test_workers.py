"""Heartbeats both ways, dead worker detection, and what happens to the requests a
dead worker held: 503 worker_lost, or one resend when the body says idempotent."""
import time

import zmq

import smp


# A worker is dead after HEARTBEAT_MS * LIVENESS of silence: 1 s. Short enough for
# quick tests of dead workers, and 20 of the Python workers' 50 ms heartbeats, so a
# live one that a busy machine (sanitizers, two cores) delays is not lost.
HEARTBEAT_MS, LIVENESS = 200, 5


def fast(make_broker):
    return make_broker(heartbeat_ms=HEARTBEAT_MS, liveness=LIVENESS)


def test_broker_sends_heartbeats(make_broker):
    b = fast(make_broker)
    w = b.worker("hb")
    b.wait_workers("hb", 1)
    cmd, _ = w.recv(timeout=5, skip_heartbeats=False)
    assert cmd == smp.HEARTBEAT


def test_heartbeating_worker_stays(make_broker):
    """A worker that only heartbeats (no requests, no replies) stays, while silent
    workers registered after it are declared dead: order, not time, shows that
    more than one dead-worker interval has passed, twice over."""
    b = fast(make_broker)
    e = b.echo_worker("stay", heartbeat_s=0.05)
    b.wait_workers("stay", 1)
    for lost in (1, 2):
        b.worker("silent")  # READY, then nothing
        b.wait_workers("silent", 1)
        st = b.wait_status(lambda d: d["broker"]["workers_lost"] >= lost, timeout=20)
        assert "silent" not in st["services"], st
        assert st["services"].get("stay", {}).get("workers") == 1, st
        assert st["broker"]["workers_lost"] == lost, st
    assert b.status()["broker"]["workers_lost"] == 2
    assert b.client().request("stay", {"op": "x"})["status"] == 200
    assert e.disconnects == 0
    del e


def test_dead_worker_in_flight_is_503_worker_lost(make_broker):
    b = fast(make_broker)
    c = b.client()
    w = b.worker("dies")
    b.wait_workers("dies", 1)
    r1 = c.send("dies", {"op": "write"}, deadline_ms=30000)
    w.recv_request()
    # the worker now says nothing: dead after LIVENESS silent intervals
    body = c.wait_reply(r1, timeout=10)
    assert body["status"] == 503 and body["error"]["code"] == "worker_lost"
    cmd, _ = w.recv(timeout=5)  # a slow worker is told to start over
    assert cmd == smp.DISCONNECT
    st = b.status()
    assert st["broker"]["workers_lost"] == 1 and "dies" not in st["services"]


def test_dead_worker_idempotent_request_resent_once(make_broker):
    b = fast(make_broker)
    c = b.client()
    live = b.echo_worker("idem")
    b.wait_workers("idem", 1)
    doomed = b.worker("idem")  # registered last: never used, so it is chosen first
    b.wait_workers("idem", 2)
    r1 = c.send("idem", {"op": "read", "idempotent": True}, deadline_ms=30000)
    _, rid, _, _ = doomed.recv_request()
    assert rid == r1
    body = c.wait_reply(r1, timeout=10)
    assert body["status"] == 200 and body["data"]["op"] == "read"
    assert [r for r, _ in live.seen] == [r1]
    assert b.status()["broker"]["resent"] == 1


def test_idempotent_request_is_resent_only_once(make_broker):
    b = fast(make_broker)
    c = b.client()
    first = b.worker("once")
    second = b.worker("once")
    b.wait_workers("once", 2)
    r1 = c.send("once", {"op": "read", "idempotent": True}, deadline_ms=30000)
    # whoever gets it goes silent; the other keeps beating until the resend arrives
    holder = None
    end = time.monotonic() + 10
    while time.monotonic() < end:
        for w in (first, second):
            if w.sock.poll(0):
                frames = w.sock.recv_multipart()
                if frames[2] == smp.REQUEST:
                    assert frames[4] == r1
                    if holder is None:
                        holder = w
                    else:
                        assert w is not holder
                        holder = "resent"
        if holder == "resent":
            break
        for w in (first, second):
            if w is not holder:
                w.heartbeat()
        time.sleep(0.03)
    assert holder == "resent"
    # the second holder goes silent too: no second resend, 503 worker_lost
    body = c.wait_reply(r1, timeout=10)
    assert body["status"] == 503 and body["error"]["code"] == "worker_lost"
    assert b.status()["broker"]["resent"] == 1


def test_unknown_worker_is_told_to_disconnect(broker):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.backend)
    try:
        sock.send_multipart([b"", smp.PROTO, smp.HEARTBEAT])
        assert sock.poll(5000)
        frames = sock.recv_multipart()
        assert frames == [b"", smp.PROTO, smp.DISCONNECT]
    finally:
        sock.close()


def test_ready_again_means_started_over(broker):
    c = broker.client()
    w = broker.worker("again", credit=1, identity=b"worker-again")
    broker.wait_workers("again", 1)
    r1 = c.send("again", {"op": "x"})
    w.recv_request()
    w.sock.send_multipart([b"", smp.PROTO, smp.READY, b"again", smp.u32(1)])
    body = c.wait_reply(r1)
    assert body["status"] == 503 and body["error"]["code"] == "worker_lost"
    r2 = c.send("again", {"op": "y"})
    route, rid, _, _ = w.recv_request()
    assert rid == r2
    st = broker.status()["services"]["again"]
    assert st["workers"] == 1 and st["in_flight"] == 1
