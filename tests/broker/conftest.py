"""Fixtures for the broker tests: a real sluice-broker on free ports, SMP/1 clients
and workers (tests/pylib/smp.py), and a threaded echo worker that keeps its
heartbeats going while a test drives other peers by hand."""
import struct
import threading
import time

import pytest
import zmq

import procs
import smp


class Broker:
    """One sluice-broker process. Settings are passed as flags (heartbeat_ms=100 ->
    --heartbeat-ms 100)."""

    def __init__(self, **settings):
        ports = [procs.free_port() for _ in range(4)]
        self.frontend, self.backend, self.events_in, self.events_out = map(procs.tcp, ports)
        args = [procs.binary("broker"), "--frontend", self.frontend, "--backend", self.backend,
                "--events-in", self.events_in, "--events-out", self.events_out]
        for name, value in settings.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        self.proc = procs.Proc(args, name="broker")
        self.proc.wait_log("listening")
        self._peers = []

    def client(self):
        c = smp.Client(self.frontend)
        self._peers.append(c)
        return c

    def worker(self, service, credit=1, identity=None):
        w = smp.Worker(self.backend, service, credit, identity=identity)
        self._peers.append(w)
        return w

    def echo_worker(self, service, credit=10, **kw):
        w = EchoWorker(self.backend, service, credit, **kw)
        self._peers.append(w)
        return w

    def status(self, client=None):
        body = (client or self.client()).request("sys", {"op": "status"})
        assert body["status"] == 200, body
        return body["data"]

    def wait_status(self, predicate, timeout=10.0, client=None):
        """Polls `sys status` until predicate(data) holds; returns that data."""
        client = client or self.client()
        end = time.monotonic() + timeout
        while True:
            data = self.status(client)
            if predicate(data):
                return data
            if time.monotonic() > end:
                raise AssertionError("broker status never matched: %r" % data)
            time.sleep(0.01)

    def wait_workers(self, service, count, client=None):
        """Waits until `sys status` shows count live workers for service."""
        return self.wait_status(
            lambda d: d["services"].get(service, {"workers": 0})["workers"] == count,
            client=client)

    def close_peers(self):
        for p in self._peers:
            if isinstance(p, EchoWorker):
                p.stop()
            else:
                p.close()
        self._peers = []

    def stop(self):
        self.close_peers()
        return self.proc.stop()


class EchoWorker(threading.Thread):
    """A worker in its own thread (its socket never leaves it): READY, heartbeats
    every heartbeat_s with an optional status body, and answers every REQUEST with
    {"status": 200, "data": body}. Requests seen are kept in .seen as (rid, body)."""

    def __init__(self, endpoint, service, credit=10, heartbeat_s=0.05, status=None,
                 identity=None):
        super().__init__(daemon=True)
        self.endpoint, self.service, self.credit = endpoint, service, credit
        self.heartbeat_s, self.status, self.identity = heartbeat_s, status, identity
        self.seen = []
        self.cancels = []
        self.disconnects = 0
        self._stop_flag = threading.Event()
        self.start()

    def run(self):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.identity:
            sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.connect(self.endpoint)
        sock.send_multipart([b"", smp.PROTO, smp.READY, self.service.encode(),
                             smp.u32(self.credit)])
        next_beat = 0.0
        while not self._stop_flag.is_set():
            now = time.monotonic()
            if now >= next_beat:
                frames = [b"", smp.PROTO, smp.HEARTBEAT]
                if self.status is not None:
                    frames.append(smp.pack(self.status))
                sock.send_multipart(frames)
                next_beat = now + self.heartbeat_s
            if not sock.poll(10):
                continue
            frames = sock.recv_multipart()
            cmd = frames[2]
            if cmd == smp.REQUEST:
                route, rid, _deadline, body = frames[3:7]
                self.seen.append((rid, smp.unpack(body)))
                sock.send_multipart([b"", smp.PROTO, smp.REPLY, route, rid,
                                     smp.pack({"status": 200, "data": smp.unpack(body)})])
            elif cmd == smp.CANCEL:
                self.cancels.append(frames[4])
            elif cmd == smp.DISCONNECT:
                self.disconnects += 1
        sock.close()

    def stop(self):
        self._stop_flag.set()
        self.join(5)


@pytest.fixture
def make_broker():
    """make_broker(**settings) starts a broker; each is stopped at the end of the test
    and must exit 0 after SIGTERM."""
    brokers = []

    def make(**settings):
        settings.setdefault("liveness", 20)  # hand-driven workers do not heartbeat
        settings.setdefault("drain_ms", 300)  # tests end with requests still held
        b = Broker(**settings)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        if b.proc.popen.returncode is None:
            b.stop()
        else:
            b.close_peers()


@pytest.fixture
def broker(make_broker):
    return make_broker()


def recv_all(sock_owner, timeout=0.2):
    """Everything a client gets within timeout (used only to show absence after a
    positive synchronisation point, never as the thing a test waits for)."""
    out = []
    try:
        while True:
            out.append(sock_owner.recv(timeout))
    except TimeoutError:
        pass
    return out


def nothing_for(worker, timeout=0.2):
    """True when worker gets no REQUEST within timeout."""
    try:
        worker.recv_request(timeout)
    except TimeoutError:
        return True
    return False


def deadline_of(frame):
    return struct.unpack(">I", frame)[0]
