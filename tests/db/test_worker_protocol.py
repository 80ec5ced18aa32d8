"""The worker side of SMP/1 (common/worker.c) as sluice-dbworker speaks it, seen
from a fake broker (a ROUTER in the test): READY, heartbeats with the pool status,
CREDIT, a broker that goes silent or says DISCONNECT, and SIGTERM."""
import struct
import time

import msgpack
import pytest
import zmq

import procs
import smp


class FakeBroker:
    def __init__(self):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = procs.tcp(self.port)

    def recv(self, timeout=5.0):
        """(identity, command byte, rest of frames)"""
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("nothing from the worker within %.1fs" % timeout)
        frames = self.sock.recv_multipart()
        ident, empty, proto, cmd = frames[:4]
        assert empty == b"" and proto == b"SMP1", frames
        return ident, cmd, frames[4:]

    def expect(self, command, timeout=5.0, skip=(smp.HEARTBEAT,)):
        end = time.monotonic() + timeout
        while True:
            ident, cmd, rest = self.recv(max(0.01, end - time.monotonic()))
            if cmd == command:
                return ident, rest
            assert cmd in skip, (cmd, rest)

    def send(self, ident, *frames):
        self.sock.send_multipart([ident, b"", b"SMP1"] + list(frames))

    def close(self):
        self.sock.close()


@pytest.fixture
def fake(mariadb):
    import uuid
    name = "w_" + uuid.uuid4().hex[:10]
    mariadb.create_database(name)
    broker = FakeBroker()
    yield broker, mariadb, name
    broker.close()
    mariadb.sql("DROP DATABASE IF EXISTS `%s`" % name, check=False)


def start(fake, **settings):
    from conftest import DBWORKER, FAST_HASH, flags
    broker, db, name = fake
    s = dict(db.settings(name))
    s.update({"backend": broker.endpoint, "events_in": procs.tcp(procs.free_port()),
              "pool_size": 2, "max_overflow": 1, "worker_name": "w1"})
    s.update(FAST_HASH)
    s.update(settings)
    return procs.Proc([DBWORKER] + flags(s), name="dbworker")


def test_ready_heartbeat_requests_and_drain(fake):
    broker = fake[0]
    w = start(fake)
    ident, rest = broker.expect(smp.READY, timeout=30)
    assert rest[0] == b"db" and struct.unpack(">I", rest[1])[0] == 3
    # a heartbeat every second, carrying the pool status
    _, cmd, hb = broker.recv(timeout=3)
    while cmd != smp.HEARTBEAT:
        _, cmd, hb = broker.recv(timeout=3)
    status = msgpack.unpackb(hb[0], raw=False)
    for key in ("worker", "pool_size", "max_overflow", "checked_out", "overflow", "idle",
                "invalid", "waiting", "reconnects", "errors", "ops", "latency_p50_ms",
                "latency_p99_ms", "capacity"):
        assert key in status, key
    assert status["worker"] == "w1" and status["pool_size"] == 2
    # requests are answered on the route they came with
    broker.send(ident, smp.REQUEST, b"route-1", b"rid-1", smp.u32(5000),
                smp.pack({"op": "db.ping", "args": {}}))
    _, rest = broker.expect(smp.REPLY)
    assert rest[:2] == [b"route-1", b"rid-1"]
    assert msgpack.unpackb(rest[2], raw=False) == {"status": 200, "data": {}}
    # a malformed request body still gets an answer (400), never silence
    broker.send(ident, smp.REQUEST, b"route-2", b"rid-2", smp.u32(5000), b"\xc1")
    _, rest = broker.expect(smp.REPLY)
    assert rest[1] == b"rid-2" and msgpack.unpackb(rest[2], raw=False)["status"] == 400
    # SIGTERM: credit 0 first, DISCONNECT last, exit 0
    w.signal(15)
    _, rest = broker.expect(smp.CREDIT)
    assert struct.unpack(">I", rest[0])[0] == 0
    broker.expect(smp.DISCONNECT)
    assert w.stop() == 0


def test_silent_or_disconnecting_broker_gets_ready_again(fake):
    broker = fake[0]
    w = start(fake)
    ident, _ = broker.expect(smp.READY, timeout=30)
    # DISCONNECT from the broker: a new connection and READY again
    broker.send(ident, smp.DISCONNECT)
    ident2, rest = broker.expect(smp.READY)
    assert ident2 != ident and rest[0] == b"db"
    # silence for 3 heartbeat intervals: the worker takes the broker for dead
    t0 = time.monotonic()
    ident3, _ = broker.expect(smp.READY, timeout=8)
    assert ident3 != ident2
    assert time.monotonic() - t0 >= 2.5
    w.stop()
