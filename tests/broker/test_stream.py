"""PARTIAL forwarding in order, and CANCEL (queued or in flight): the client always
gets exactly one final REPLY."""
import smp
from conftest import nothing_for, recv_all


def test_partials_forwarded_in_order_then_reply(broker):
    c = broker.client()
    w = broker.worker("chat")
    broker.wait_workers("chat", 1)
    rid = c.send("chat", {"op": "chat.generate"})
    route, wrid, _, _ = w.recv_request()
    for i in range(100):
        w.partial(route, wrid, {"data": {"event": "delta", "i": i}})
    w.reply(route, wrid, {"status": 200, "data": {"done": True}})
    body = c.wait_reply(rid)
    assert body == {"status": 200, "data": {"done": True}}
    assert [p["data"]["i"] for p in c.partials] == list(range(100))
    # anything after the final reply is dropped
    w.partial(route, wrid, {"data": "after"})
    w.reply(route, wrid, {"status": 200})
    assert c.request("sys", {"op": "services"})["status"] == 200
    assert recv_all(c, 0.1) == []


def test_cancel_queued_request(broker):
    c = broker.client()
    w = broker.worker("cq", credit=1)
    broker.wait_workers("cq", 1)
    r1 = c.send("cq", {"op": "hold"})
    route, rid, _, _ = w.recv_request()
    r2 = c.send("cq", {"op": "cancel me"})
    broker.wait_status(lambda d: d["services"]["cq"]["queued"] == 1)
    c.cancel(r2)
    body = c.wait_reply(r2)
    assert body["status"] == 499 and body["error"]["code"] == "cancelled"
    assert broker.status()["services"]["cq"]["queued"] == 0
    w.reply(route, rid, {"status": 200})
    assert c.wait_reply(r1)["status"] == 200
    r3 = c.send("cq", {"op": "after"})
    _, rid, _, body = w.recv_request()
    assert rid == r3  # the cancelled one was never sent


def test_cancel_in_flight_request(broker):
    c = broker.client()
    w = broker.worker("cf", credit=1)
    broker.wait_workers("cf", 1)
    r1 = c.send("cf", {"op": "stream"})
    route, rid, _, _ = w.recv_request()
    w.partial(route, rid, {"data": 1})
    c.cancel(r1)
    body = c.wait_reply(r1)
    assert body["status"] == 499 and body["error"]["code"] == "cancelled"
    assert [p["data"] for p in c.partials] == [1]
    cmd, rest = w.recv()
    assert cmd == smp.CANCEL and rest == [route, rid]
    # the worker still holds it until it replies: no new request meanwhile
    r2 = c.send("cf", {"op": "next"})
    assert nothing_for(w)
    w.partial(route, rid, {"data": 2})
    w.reply(route, rid, {"status": 499, "error": {"code": "cancelled", "message": "ok"}})
    route2, rid2, _, _ = w.recv_request()
    assert rid2 == r2
    w.reply(route2, rid2, {"status": 200})
    seen = []
    while True:
        cmd, rid, body = c.recv(5)
        seen.append((cmd, rid))
        if rid == r2:
            break
    assert seen == [(smp.REPLY, r2)]
    assert broker.status()["broker"]["cancelled"] == 1


def test_cancel_unknown_is_ignored(broker):
    c = broker.client()
    c.cancel(b"never-sent")
    body = c.request("sys", {"op": "services"})
    assert body["status"] == 200
    assert recv_all(c, 0.1) == []
