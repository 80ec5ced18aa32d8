"""The broker side of scenario 3's fix, with hand-driven workers: when every live
worker of a service reports its database down (heartbeat status "db_up": false; a
DB worker's credit is 0 then), a request that would queue is answered 503 at once
instead of waiting for its deadline, and the queue is flushed the same way. One
worker whose database is up keeps the usual queueing and routing."""
import time

import pytest

import procs
import smp

DEADLINE_MS = 10000
FAST_S = 2.5  # well under the deadline: the point of the fix


@pytest.fixture
def broker():
    ports = [procs.free_port() for _ in range(4)]
    fe, be, ein, eout = map(procs.tcp, ports)
    p = procs.Proc([procs.binary("broker"), "--frontend", fe, "--backend", be, "--events-in", ein,
                    "--events-out", eout, "--liveness", "20"], name="broker")
    p.wait_log("listening")
    peers = []
    yield p, fe, be, peers
    for x in peers:
        x.close()
    assert p.stop() == 0


def worker(be, peers, up):
    w = smp.Worker(be, "db", credit=0)
    peers.append(w)
    w.heartbeat({"worker": "w%d" % len(peers), "db_up": up})
    return w


def wait_pools(client, want):
    """Until sys status shows the workers' db_up as want (sorted list of bools)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        r = client.request("sys", {"op": "status"}, deadline_ms=2000)
        got = sorted(p.get("db_up") for p in r["data"].get("pools", []))
        if got == sorted(want):
            return
        time.sleep(0.05)
    raise AssertionError("pools never showed db_up %r" % (want,))


def test_all_down_is_503_at_once(broker):
    p, fe, be, peers = broker
    c = smp.Client(fe)
    peers.append(c)
    worker(be, peers, False)
    worker(be, peers, False)
    wait_pools(c, [False, False])
    start = time.monotonic()
    r = c.request("db", {"op": "db.ping"}, deadline_ms=DEADLINE_MS, timeout=FAST_S)
    assert r["status"] == 503 and r["error"]["code"] == "unavailable", r
    assert time.monotonic() - start < FAST_S


def test_queue_flushed_when_the_last_database_goes_down(broker):
    p, fe, be, peers = broker
    c = smp.Client(fe)
    peers.append(c)
    w = worker(be, peers, True)
    wait_pools(c, [True])
    rid = c.send("db", {"op": "db.ping"}, deadline_ms=DEADLINE_MS)  # queued: no credit
    w.heartbeat({"worker": "w1", "db_up": False})
    r = c.wait_reply(rid, timeout=FAST_S)
    assert r["status"] == 503, r


def test_one_database_up_keeps_routing(broker):
    p, fe, be, peers = broker
    c = smp.Client(fe)
    peers.append(c)
    worker(be, peers, False)  # its database is down
    up = worker(be, peers, True)
    wait_pools(c, [False, True])
    rid = c.send("db", {"op": "db.ping"}, deadline_ms=DEADLINE_MS)  # queued, not refused
    up.credit(1)
    route, got_rid, _, body = up.recv_request(timeout=5)
    assert got_rid == rid and body["op"] == "db.ping"
    up.reply(route, rid, {"status": 200, "data": {}})
    assert c.wait_reply(rid, timeout=5)["status"] == 200
