"""A token check that races a device's revocation never makes the revoked token
valid at a gateway (issue 16, section 5; gateway/auth_cache.c).

The race, made deterministic: the only DB worker reaches the broker through a TCP
relay whose worker-to-broker direction the test can hold. Gateway 1 is asked to
open a WebSocket with the victim device's token; its auth.verify reaches the
worker, which reads the device (valid) and answers, and the answer is held in the
relay. The device is then revoked through gateway 2: the worker commits and
publishes device.revoked straight to the broker (its event socket does not cross
the relay), so the event reaches gateway 1 before the answer. The relay lets go
and the answer, "valid", arrives after the event.

Two cases: gateway 1 already follows the user's events (another device of the
user has a WebSocket there: the event is seen before the answer), and gateway 1
knows nothing of the user (the event never reaches it). In both, the WebSocket
must be refused or closed with 4001, and the token refused at once on HTTP, with
the periodic re-verification turned off (ws_reverify_s = 0) so that only the
fix can close it. Before the fix the socket stayed open and the token stayed
valid for auth_cache_ms.
"""
import socket
import threading
import time
import types
import uuid

import pytest
import requests

import procs
import wsraw
from system import FAST_HASH, Gateway, flags


class HoldRelay:
    """TCP relay listen_port -> target. hold() keeps what the client side sends
    (and shows it in held()), release() sends it on and stops holding. The other
    direction always flows."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.holding = False
        self.buffer = []  # (upstream socket, bytes) held, in order
        self.socks = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src, dst, holdable):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                if holdable and self.holding:
                    self.buffer.append((dst, data))
                    continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def hold(self):
        with self.lock:
            self.holding = True

    def held(self):
        with self.lock:
            return b"".join(d for _, d in self.buffer)

    def release(self):
        with self.lock:
            for dst, data in self.buffer:
                try:
                    dst.sendall(data)
                except OSError:
                    pass
            self.buffer = []
            self.holding = False

    def close(self):
        self.closed = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for " + what
        time.sleep(0.02)


@pytest.mark.parametrize("warm", [False, True], ids=["user-new-here", "user-followed-here"])
def test_verify_racing_a_revoke_never_admits(mariadb, database, warm):
    ports = [procs.free_port() for _ in range(4)]
    net = types.SimpleNamespace(frontend=procs.tcp(ports[0]), events_out=procs.tcp(ports[3]))
    started = []
    relay = None
    try:
        # a held worker must not be declared dead meanwhile: 30 heartbeats of 1 s
        broker = procs.Proc([procs.binary("broker"), "--frontend", net.frontend,
                             "--backend", procs.tcp(ports[1]), "--events-in",
                             procs.tcp(ports[2]), "--events-out", net.events_out,
                             "--heartbeat-ms", "1000", "--liveness", "30"], name="broker")
        started.append(broker)
        broker.wait_log("listening")
        relay = HoldRelay(ports[1])
        s = dict(mariadb.settings(database))
        s.update({"backend": procs.tcp(relay.port), "events_in": procs.tcp(ports[2]),
                  "pool_size": 4, "max_overflow": 0, "startup_wait_s": 30}, **FAST_HASH)
        worker = procs.Proc([procs.binary("dbworker")] + flags(s), name="dbworker")
        started.append(worker)
        worker.wait_log("serving", timeout=40)
        g1 = Gateway(net, ws_reverify_s=0, auth_cache_ms=60000, subscribe_settle_ms=100)
        started.append(g1.proc)
        g2 = Gateway(net, auth_cache_ms=60000)
        started.append(g2.proc)

        name, password = "race" + uuid.uuid4().hex[:8], "password-race"
        wait_for(lambda: requests.post(g2.url + "/v1/users", json={
            "username": name, "password": password}, timeout=10).status_code == 201, 20,
            "the user to be created")

        def login(device):
            r = requests.post(g2.url + "/v1/sessions", json={
                "username": name, "password": password, "device_name": device}, timeout=10)
            assert r.status_code == 201, r.text
            return r.json()

        victim, keeper = login("victim"), login("keeper")
        # gateway 2 knows the keeper's token before the relay holds: the revoke's
        # own token check must not wait behind the relay. The first request may be
        # answered before the token is confirmed; the second waits for that.
        for _ in range(2):
            r = requests.get(g2.url + "/v1/devices", timeout=10,
                             headers={"Authorization": "Bearer " + keeper["token"]})
            assert r.status_code == 200, r.text
        follower = None
        if warm:  # gateway 1 follows the user's events through the keeper's socket
            follower = wsraw.RawWS(g1.port, "/v1/sync/notify?token=" + keeper["token"])
            time.sleep(1.0)  # the subscription settled (subscribe_settle_ms 100) long ago

        relay.hold()
        outcome = {}

        def open_socket():
            try:
                ws = wsraw.RawWS(g1.port, "/v1/sync/notify?token=" + victim["token"],
                                 timeout=60)
            except wsraw.Refused as e:
                outcome["refused"] = e.status
                return
            except Exception as e:  # noqa: BLE001 - reported below
                outcome["error"] = repr(e)
                return
            try:
                frames = ws.read_frames(timeout=8)
                outcome["close"] = wsraw.close_code(frames)
            except TimeoutError:
                outcome["open"] = True
            finally:
                ws.close()

        opener = threading.Thread(target=open_socket)
        opener.start()
        # the worker has read the device and answered "valid": held in the relay
        wait_for(lambda: b"device_id" in relay.held(), 20, "the auth.verify answer")

        revoked = {}

        def revoke():
            r = requests.delete(g2.url + "/v1/devices/" + victim["device_id"],
                                headers={"Authorization": "Bearer " + keeper["token"]},
                                timeout=60)
            revoked["status"] = r.status_code

        revoker = threading.Thread(target=revoke)
        revoker.start()
        wait_for(lambda: mariadb.sql("SELECT revoked_at IS NOT NULL FROM devices WHERE id = %s"
                                     % int(victim["device_id"]), database=database)[0][0] == "1",
                 20, "the revoke to commit")
        time.sleep(1.0)  # its event reaches gateway 1 (when it follows the user)
        relay.release()

        revoker.join(30)
        assert revoked.get("status") == 204, revoked
        opener.join(30)
        assert not opener.is_alive()
        assert "error" not in outcome, outcome
        assert not outcome.get("open"), \
            "the revoked device's WebSocket was admitted and stayed open: %r" % outcome
        assert outcome.get("refused") == 401 or outcome.get("close") == 4001, outcome
        r = requests.get(g1.url + "/v1/devices", timeout=10,
                         headers={"Authorization": "Bearer " + victim["token"]})
        assert r.status_code == 401, "gateway 1 still takes the revoked token: %d" % r.status_code
        if warm:
            assert "answered after the device was revoked" in g1.proc.log(), g1.proc.log()[-2000:]
            follower.close()
        relay.release()
        for p in reversed(started):  # every process exits 0 on SIGTERM
            p.stop(timeout=20)
    finally:
        if relay is not None:
            relay.release()
        for p in reversed(started):
            if p.alive():
                p.stop(timeout=20, check=False)
        if relay is not None:
            relay.close()
