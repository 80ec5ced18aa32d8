"""SMP/1 over pyzmq + msgpack for tests: a client (DEALER to the broker frontend)
and a worker (DEALER to the broker backend). Frames as in docs/protocol.md."""
import itertools
import struct
import time

import msgpack
import zmq

PROTO = b"SMP1"
REQUEST, REPLY, PARTIAL = b"\x01", b"\x02", b"\x03"
READY, HEARTBEAT, DISCONNECT, CREDIT, CANCEL = b"\x10", b"\x11", b"\x12", b"\x13", b"\x14"


def u32(n):
    return struct.pack(">I", n)


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def curve_client(sock, cert_path, broker_cert_path):
    """Makes sock a CurveZMQ client with the key pair of cert_path (czmq files, as
    `sluicectl keygen PATH` writes them) and the broker's public certificate."""
    import zmq.auth
    public, secret = zmq.auth.load_certificate(cert_path + "_secret")
    server, _ = zmq.auth.load_certificate(broker_cert_path)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server


class Client:
    """A DEALER connected to one broker frontend.

    request() sends one REQUEST and waits for its REPLY, collecting PARTIALs; it
    returns the reply body (a dict) and keeps the partials in .partials."""

    _ids = itertools.count(1)

    def __init__(self, endpoint, ctx=None, curve=None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            curve_client(self.sock, *curve)
        self.sock.connect(endpoint)
        self.partials = []

    def send(self, service, body, deadline_ms=5000, request_id=None):
        rid = request_id or b"r%d" % next(self._ids)
        if isinstance(body, dict):
            body = pack(body)
        self.sock.send_multipart([b"", PROTO, REQUEST, service.encode() if isinstance(service, str) else service,
                                  rid, u32(deadline_ms), body])
        return rid

    def cancel(self, request_id):
        self.sock.send_multipart([b"", PROTO, CANCEL, request_id])

    def recv(self, timeout=10.0):
        """Next [command, request_id, body-dict] from the broker, or raise TimeoutError."""
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no message from broker within %.1fs" % timeout)
        frames = self.sock.recv_multipart()
        assert frames[0] == b"" and frames[1] == PROTO, frames
        return frames[2], frames[3], unpack(frames[4])

    def wait_reply(self, request_id, timeout=10.0):
        end = time.monotonic() + timeout
        self.partials = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply to %r" % request_id)
            cmd, rid, body = self.recv(left)
            if rid != request_id:
                continue
            if cmd == PARTIAL:
                self.partials.append(body)
            elif cmd == REPLY:
                return body

    def request(self, service, body, deadline_ms=5000, timeout=None):
        rid = self.send(service, body, deadline_ms)
        return self.wait_reply(rid, timeout or deadline_ms / 1000.0 + 5)

    def call(self, op, args=None, service="db", auth=None, **extra):
        """Shorthand: request(service, {"op": op, "args": args, ...})."""
        body = {"op": op, "args": args or {}}
        if auth:
            body["auth"] = auth
        body.update(extra)
        return self.request(service, body)

    def close(self):
        self.sock.close()


class Worker:
    """A test worker: READY on connect, then answers with a handler or by hand.

    recv() returns (command, frames-after-command); reply(route, rid, body)."""

    def __init__(self, endpoint, service, credit=1, ctx=None, identity=None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(endpoint)
        self.service = service
        self.sock.send_multipart([b"", PROTO, READY, service.encode(), u32(credit)])

    def recv(self, timeout=10.0, skip_heartbeats=True):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TimeoutError("worker got nothing within %.1fs" % timeout)
            frames = self.sock.recv_multipart()
            assert frames[0] == b"" and frames[1] == PROTO, frames
            if skip_heartbeats and frames[2] == HEARTBEAT:
                continue
            return frames[2], frames[3:]

    def recv_request(self, timeout=10.0):
        """Waits for a REQUEST: returns (route, request_id, deadline_ms, body-dict)."""
        while True:
            cmd, rest = self.recv(timeout)
            if cmd == REQUEST:
                route, rid, deadline, body = rest
                return route, rid, struct.unpack(">I", deadline)[0], unpack(body)

    def reply(self, route, rid, body):
        self.sock.send_multipart([b"", PROTO, REPLY, route, rid, pack(body)])

    def partial(self, route, rid, body):
        self.sock.send_multipart([b"", PROTO, PARTIAL, route, rid, pack(body)])

    def heartbeat(self, status=None):
        frames = [b"", PROTO, HEARTBEAT]
        if status is not None:
            frames.append(pack(status))
        self.sock.send_multipart(frames)

    def credit(self, n):
        self.sock.send_multipart([b"", PROTO, CREDIT, u32(n)])

    def disconnect(self):
        self.sock.send_multipart([b"", PROTO, DISCONNECT])

    def close(self):
        self.sock.close()
