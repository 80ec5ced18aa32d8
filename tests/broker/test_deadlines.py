"""Deadlines: a request whose deadline passes while queued is answered 504 and
never sent; one a worker holds past its deadline is answered 504, the worker is
sent CANCEL, and its late reply is dropped (but returns its credit)."""
import smp
from conftest import recv_all


def test_queued_request_past_deadline_is_504_and_never_sent(broker):
    c = broker.client()
    w = broker.worker("slow", credit=1)
    broker.wait_workers("slow", 1)
    r1 = c.send("slow", {"op": "hold"}, deadline_ms=30000)
    route, rid, _, _ = w.recv_request()
    r2 = c.send("slow", {"op": "expires"}, deadline_ms=200)
    body = c.wait_reply(r2, timeout=5)
    assert body["status"] == 504 and body["error"]["code"] == "timeout"
    # the worker frees up: the next thing it gets is r3, never the expired r2
    w.reply(route, rid, {"status": 200})
    assert c.wait_reply(r1)["status"] == 200
    r3 = c.send("slow", {"op": "after"})
    _, rid, _, body = w.recv_request()
    assert rid == r3 and body["op"] == "after"
    assert broker.status()["broker"]["timeouts"] == 1


def test_expired_request_is_not_sent_when_credit_returns_first(broker):
    """Expiry is also checked when a request leaves the queue, not only by the
    janitor: many short deadlines behind one slow request all end 504."""
    c = broker.client()
    w = broker.worker("slow2", credit=1)
    broker.wait_workers("slow2", 1)
    r1 = c.send("slow2", {"op": "hold"}, deadline_ms=30000)
    route, rid, _, _ = w.recv_request()
    short = [c.send("slow2", {"op": "short"}, deadline_ms=100) for _ in range(20)]
    for r in short:
        assert c.wait_reply(r, timeout=5)["status"] == 504
    w.reply(route, rid, {"status": 200})
    assert c.wait_reply(r1)["status"] == 200
    r3 = c.send("slow2", {"op": "after"})
    assert w.recv_request()[1] == r3


def test_in_flight_past_deadline_is_504_and_late_reply_dropped(broker):
    c = broker.client()
    w = broker.worker("late", credit=1)
    broker.wait_workers("late", 1)
    r1 = c.send("late", {"op": "x"}, deadline_ms=300)
    route, rid, deadline, _ = w.recv_request()
    assert deadline <= 300
    body = c.wait_reply(r1, timeout=5)
    assert body["status"] == 504 and body["error"]["code"] == "timeout"
    cmd, rest = w.recv()
    assert cmd == smp.CANCEL and rest == [route, rid]
    # the late answer: a partial and a reply; both dropped, the credit comes back
    w.partial(route, rid, {"data": "too late"})
    w.reply(route, rid, {"status": 200, "data": "too late"})
    r2 = c.send("late", {"op": "y"})
    route2, rid2, _, _ = w.recv_request()
    assert rid2 == r2 and route2 != route
    w.reply(route2, rid2, {"status": 200, "data": "ok"})
    seen = []
    while True:
        cmd, rid, body = c.recv(5)
        seen.append((cmd, rid))
        if rid == r2:
            break
    assert seen == [(smp.REPLY, r2)]  # nothing more ever came for r1
    assert body["data"] == "ok"
    assert recv_all(c, 0.1) == []
    assert broker.status()["broker"]["late_replies"] >= 2
