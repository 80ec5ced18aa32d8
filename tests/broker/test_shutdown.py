"""SIGTERM: stop taking requests, answer what is queued with 503, DISCONNECT the
workers, deliver what they still hold (up to drain_ms), exit 0."""
import signal
import time

import smp


def test_sigterm_when_idle_exits_0(broker):
    assert broker.stop() == 0


def test_sigterm_answers_queued_503_and_drains(make_broker):
    b = make_broker(drain_ms=10000)
    c = b.client()
    w = b.worker("work", credit=1)
    b.wait_workers("work", 1)
    r1 = c.send("work", {"op": "held"}, deadline_ms=30000)
    route, rid, _, _ = w.recv_request()
    queued = [c.send("work", {"op": "queued"}, deadline_ms=30000) for _ in range(3)]
    b.wait_status(lambda d: d["services"]["work"]["queued"] == 3)
    b.proc.signal(signal.SIGTERM)
    for r in queued:
        body = c.wait_reply(r, timeout=5)
        assert body["status"] == 503 and body["error"]["code"] == "unavailable"
    cmd, _ = w.recv(timeout=5)
    assert cmd == smp.DISCONNECT
    # new requests are refused while it drains
    body = c.request("work", {"op": "new"}, timeout=5)
    assert body["status"] == 503
    # what the worker held still reaches its client
    w.reply(route, rid, {"status": 200, "data": "finished"})
    assert c.wait_reply(r1)["data"] == "finished"
    assert b.stop() == 0


def test_drain_limit_answers_what_is_left(make_broker):
    b = make_broker(drain_ms=200)
    c = b.client()
    w = b.worker("stuck", credit=1)
    b.wait_workers("stuck", 1)
    r1 = c.send("stuck", {"op": "never answered"}, deadline_ms=60000)
    w.recv_request()
    start = time.monotonic()
    b.proc.signal(signal.SIGTERM)
    body = c.wait_reply(r1, timeout=10)
    assert body["status"] == 503
    assert b.stop() == 0
    assert time.monotonic() - start < 5


def test_second_signal_stops_waiting(make_broker):
    b = make_broker(drain_ms=60000)
    c = b.client()
    w = b.worker("stuck", credit=1)
    b.wait_workers("stuck", 1)
    r1 = c.send("stuck", {"op": "never answered"}, deadline_ms=60000)
    w.recv_request()
    b.proc.signal(signal.SIGTERM)
    b.proc.wait_log("shutting down")
    b.proc.signal(signal.SIGINT)
    assert c.wait_reply(r1, timeout=10)["status"] == 503
    assert b.stop() == 0


def test_drain_with_a_worker_that_reconnects_on_disconnect(make_broker):
    """common/worker.c answers DISCONNECT by opening a new connection and sending
    READY, then replies to what it held on that connection: the broker stays quiet
    towards the newcomer and still delivers the reply."""
    b = make_broker(drain_ms=10000)
    c = b.client()
    w = b.worker("lib", credit=1)
    b.wait_workers("lib", 1)
    r1 = c.send("lib", {"op": "held"}, deadline_ms=30000)
    route, rid, _, _ = w.recv_request()
    b.proc.signal(signal.SIGTERM)
    cmd, _ = w.recv(timeout=5)
    assert cmd == smp.DISCONNECT
    w.close()
    again = b.worker("lib", credit=1)
    again.heartbeat()
    again.reply(route, rid, {"status": 200, "data": "drained"})
    assert c.wait_reply(r1)["data"] == "drained"
    assert b.proc.popen.wait(10) == 0
    try:
        cmd, _ = again.recv(timeout=0.2, skip_heartbeats=False)
    except TimeoutError:
        cmd = None
    assert cmd != smp.DISCONNECT  # no reconnect storm
    assert b.stop() == 0
