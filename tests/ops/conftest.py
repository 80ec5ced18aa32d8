"""Fixtures for the operator-tool and client-library tests: real sluice-brokers on
free ports, a streaming echo worker in its own thread, and helpers to run
sluicectl and the client example built from docs/clients.md."""
import os
import subprocess
import threading
import time

import pytest
import zmq

import procs
import smp

CTL = os.path.join(procs.BUILD_DIR, "common/ctl/sluicectl")
EXAMPLE = os.path.join(procs.BUILD_DIR, "tests/ops/client_example")


class Broker:
    def __init__(self, **settings):
        ports = [procs.free_port() for _ in range(4)]
        self.frontend, self.backend, self.events_in, self.events_out = map(procs.tcp, ports)
        args = [procs.binary("broker"), "--frontend", self.frontend, "--backend", self.backend,
                "--events-in", self.events_in, "--events-out", self.events_out,
                "--drain-ms", "300"]
        for name, value in settings.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        self.proc = procs.Proc(args, name="broker")
        self.proc.wait_log("listening")

    def status(self):
        c = smp.Client(self.frontend)
        try:
            body = c.request("sys", {"op": "status"})
        finally:
            c.close()
        assert body["status"] == 200, body
        return body["data"]

    def wait_status(self, predicate, timeout=10.0):
        end = time.monotonic() + timeout
        while True:
            data = self.status()
            if predicate(data):
                return data
            if time.monotonic() > end:
                raise AssertionError("broker status never matched: %r" % data)
            time.sleep(0.02)

    def wait_workers(self, service, count):
        return self.wait_status(
            lambda d: d["services"].get(service, {"workers": 0})["workers"] == count)


class StreamWorker(threading.Thread):
    """A worker of `service` on every broker given, in its own thread: READY,
    heartbeats, and for each REQUEST two PARTIALs {"data": {"n": i}} then a REPLY
    {"status": 200, "data": {"text": args.text upper-cased, "op": op}}. An op "hold"
    is never answered (kept in .held); "fail" is answered 409 conflict. Its
    heartbeat status names it (status["worker"] = name)."""

    def __init__(self, backends, service="echo", name=None, credit=10):
        super().__init__(daemon=True)
        self.backends, self.service, self.name_, self.credit = backends, service, name, credit
        self.seen = []
        self.held = []
        self.cancels = []
        self._stop_flag = threading.Event()
        self.start()

    def run(self):
        ctx = zmq.Context.instance()
        socks = []
        for endpoint in self.backends:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            s.send_multipart([b"", smp.PROTO, smp.READY, self.service.encode(),
                              smp.u32(self.credit)])
            socks.append(s)
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        next_beat = 0.0
        while not self._stop_flag.is_set():
            now = time.monotonic()
            if now >= next_beat:
                for s in socks:
                    frames = [b"", smp.PROTO, smp.HEARTBEAT]
                    if self.name_:
                        frames.append(smp.pack({"worker": self.name_}))
                    s.send_multipart(frames)
                next_beat = now + 0.1
            for s, _ in poller.poll(20):
                frames = s.recv_multipart()
                cmd = frames[2]
                if cmd == smp.REQUEST:
                    route, rid, _deadline, raw = frames[3:7]
                    body = smp.unpack(raw)
                    self.seen.append(body)
                    if body["op"] == "hold":
                        self.held.append((s, route, rid))
                        continue
                    if body["op"] == "fail":
                        s.send_multipart([b"", smp.PROTO, smp.REPLY, route, rid, smp.pack(
                            {"status": 409, "error": {"code": "conflict", "message": "no"}})])
                        continue
                    for i in range(2):
                        s.send_multipart([b"", smp.PROTO, smp.PARTIAL, route, rid,
                                          smp.pack({"data": {"n": i}})])
                    text = (body.get("args") or {}).get("text", "")
                    s.send_multipart([b"", smp.PROTO, smp.REPLY, route, rid, smp.pack(
                        {"status": 200, "data": {"text": text.upper(), "op": body["op"]}})])
                elif cmd == smp.CANCEL:
                    self.cancels.append(frames[4])
        for s in socks:
            s.send_multipart([b"", smp.PROTO, smp.DISCONNECT])
            s.close()

    def stop(self):
        self._stop_flag.set()
        self.join(5)


@pytest.fixture
def make_broker():
    brokers = []

    def make(**settings):
        b = Broker(**settings)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        if b.proc.alive():
            b.proc.stop()


@pytest.fixture
def make_worker():
    workers = []

    def make(brokers, **kw):
        w = StreamWorker([b.backend for b in brokers], **kw)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


def run(args, timeout=30, **kw):
    """Runs a program to its end; returns the CompletedProcess (text)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def ctl(*args, timeout=30):
    return run([CTL] + list(args), timeout=timeout)
