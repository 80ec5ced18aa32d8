"""The whole Sluice system for integration tests, started from the built binaries
on free ports against a private MariaDB (tests/pylib/mariadb.py): a sluice-broker,
two sluice-dbworker with a pool of 2 connections each (no overflow: 4 connections
in all, so the seed's failure would show at once), a sluice-gateway and, when
asked, a sluice-streamworker with the echo provider.

    db = MariaDB(); db.start()
    s = Stack(db, chat=True); s.start()
    ann = s.user()                      # a new user with one device (session)
    phone = s.device(ann)               # a second device of the same user
    r = s.post("/v1/clipboard", {"content": "x"}, token=ann.token)
    s.stop()                            # SIGTERM to each; asserts clean exits

Used by the gateway, chat, browser and fault suites, so they all start the system
the same way.
"""
import asyncio
import json
import socket
import tempfile
import time
import uuid

import requests
import websockets

import procs

FAST_HASH = {"argon2_opslimit": 1, "argon2_memlimit_kib": 8}


def flags(settings):
    args = []
    for k, v in settings.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


class Device:
    """One logged-in device: a user's session."""

    def __init__(self, username, password, user_id, device_id, token):
        self.username = username
        self.password = password
        self.user_id = user_id
        self.device_id = device_id
        self.token = token

    @property
    def auth(self):
        return {"Authorization": "Bearer " + self.token}


class Gateway:
    def __init__(self, stack, env=None, **settings):
        self.port = procs.free_port()
        s = {"host": "127.0.0.1", "port": self.port, "frontend": stack.frontend,
             "events_out": stack.events_out, "subscribe_settle_ms": 20}
        s.update(settings)
        self.proc = procs.Proc([procs.binary("gateway")] + flags(s), env=env, name="gateway")
        self.proc.wait_log("listening")
        self.url = "http://127.0.0.1:%d" % self.port
        self.ws_url = "ws://127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.stop(timeout=20)


class Stack:
    """The whole system on free ports: broker, two DB workers (pool 2 each, no
    overflow), a gateway, and with chat=True a stream worker (echo provider)."""

    def __init__(self, db, chat=False, chat_settings=None, hash_settings=None,
                 gateway_settings=None):
        self.db = db
        self.gateway_settings = dict(gateway_settings or {})
        # the suite's fast Argon2id unless told otherwise ({} : the workers' real cost)
        self.hash_settings = dict(FAST_HASH if hash_settings is None else hash_settings)
        self.chat = chat
        self.chat_settings = dict(chat_settings or {})
        self.streamworker = None
        self.frontend = procs.tcp(procs.free_port())
        self.backend = procs.tcp(procs.free_port())
        self.events_in = procs.tcp(procs.free_port())
        self.events_out = procs.tcp(procs.free_port())
        self.workers = []
        self.http = requests.Session()

    def start(self):
        self.broker = procs.Proc([procs.binary("broker"), "--frontend", self.frontend,
                                  "--backend", self.backend, "--events-in", self.events_in,
                                  "--events-out", self.events_out], name="broker")
        self.broker.wait_log("listening")
        for _ in range(2):
            s = dict(self.db.settings())
            s.update({"backend": self.backend, "events_in": self.events_in, "pool_size": 2,
                      "max_overflow": 0, "startup_wait_s": 30})
            s.update(self.hash_settings)
            w = procs.Proc([procs.binary("dbworker")] + flags(s), name="dbworker")
            w.wait_log("serving", timeout=40)
            self.workers.append(w)
        if self.chat:
            self.start_streamworker(**self.chat_settings)
        # a short head deadline for the suite, unless the caller sets its own
        self.gateway = Gateway(self, **dict({"header_timeout_ms": 1500},
                                            **self.gateway_settings))
        self.url = self.gateway.url
        self.ws_url = self.gateway.ws_url
        end = time.monotonic() + 20
        while True:
            r = requests.get(self.url + "/health", timeout=5)
            if r.status_code == 200 and len(r.json()["pools"]) == 2:
                break
            assert time.monotonic() < end, "stack never became healthy: %s" % r.text
            time.sleep(0.1)

    def start_streamworker(self, **settings):
        """A sluice-streamworker (echo provider unless told otherwise) on this
        stack's broker; replaces the one running, if any, in self.streamworker."""
        s = {"backend": self.backend, "frontend": self.frontend,
             "journal_dir": tempfile.mkdtemp(prefix="stream-journal-"),
             "journal_scan_ms": 200, "token_delay_ms": 5}
        s.update(settings)
        self.streamworker = procs.Proc([procs.binary("streamworker")] + flags(s),
                                       name="streamworker")
        self.streamworker.wait_log("serving", timeout=15)
        return self.streamworker

    def stop(self):
        errors = []
        procs_ = [self.gateway.proc] + self.workers
        if self.streamworker is not None:
            procs_.insert(1, self.streamworker)
        for p in procs_ + [self.broker]:
            try:
                p.finish(timeout=20)
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))

    # ---- HTTP helpers -------------------------------------------------------------
    def request(self, method, path, body=None, token=None, headers=None, raw=None, **kw):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        return self.http.request(method, self.url + path, data=data, headers=h, timeout=15, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # ---- users and devices ---------------------------------------------------------
    def user(self, device="laptop"):
        name = "u" + uuid.uuid4().hex[:12]
        password = "password-" + uuid.uuid4().hex[:6]
        r = self.post("/v1/users", {"username": name, "password": password})
        assert r.status_code == 201, r.text
        return self.login(name, password, device)

    def login(self, username, password, device="laptop"):
        r = self.post("/v1/sessions", {"username": username, "password": password,
                                       "device_name": device})
        assert r.status_code == 201, r.text
        d = r.json()
        return Device(username, password, d["user_id"], d["device_id"], d["token"])

    def device(self, dev, name="phone"):
        return self.login(dev.username, dev.password, name)

    def create(self, dev, content, **extra):
        body = {"content": content}
        body.update(extra)
        r = self.post("/v1/clipboard", body, token=dev.token)
        assert r.status_code == 201, r.text
        return r.json()

    def pools(self):
        r = requests.get(self.url + "/health", timeout=5)
        return r.json().get("pools", [])


# ---- WebSocket helpers (websockets' asyncio client, run from sync tests) ----------

def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ws_open(stack, dev=None, after=None, path="/v1/sync/notify", token=None, headers=None):
    q = []
    if dev is not None and token is None and headers is None:
        token = dev.token
    if token is not None:
        q.append("token=" + token)
    if after is not None:
        q.append("after=%s" % after)
    url = stack.ws_url + path + ("?" + "&".join(q) if q else "")
    return await websockets.connect(url, extra_headers=headers or {}, max_size=8 * 1024 * 1024,
                                    open_timeout=10)


async def ws_recv(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def ws_quiet(ws, seconds=0.3):
    """True if nothing arrives within seconds (used only to check for *absence* after
    the positive events the test waited for already arrived)."""
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return True
    raise AssertionError("unexpected message: %s" % msg)


def raw_http(port, data, read_timeout=10.0):
    """Sends raw bytes, returns everything the server wrote until it closed the
    connection. A server that is still silent, or has not closed, after
    read_timeout fails the test: every caller expects an answer and a close."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while sending: what it said is still readable
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except ConnectionResetError:
            pass  # closed with data unread (ours): what came before is the answer
        except socket.timeout:
            raise AssertionError("no close within %.1f s; got %r" % (read_timeout, out[:300]))
        return out
