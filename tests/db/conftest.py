"""Fixtures for the DB worker tests: one private MariaDB per test session, a fresh
database per test, a real broker, and sluice-dbworker processes.

    def test_x(stack):
        c = stack.client()
        r = c.call("user.create", {"username": "ann", "password": "secret-pw"})
"""
import os
import time
import uuid

import pytest

import procs
import smp
from mariadb import MariaDB

DBWORKER = procs.binary("dbworker")
BROKER = procs.binary("broker")

# cheap Argon2id for tests (the defaults cost ~100 ms and 64 MiB per hash)
FAST_HASH = {"argon2_opslimit": 1, "argon2_memlimit_kib": 8}


@pytest.fixture(scope="session")
def mariadb():
    db = MariaDB()
    db.start()
    yield db
    db.destroy()


def flags(settings):
    args = []
    for k, v in settings.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


class Stack:
    """A broker, a database and the workers of one test."""

    def __init__(self, db, database):
        self.db = db
        self.database = database
        self.frontend = procs.tcp(procs.free_port())
        self.backend = procs.tcp(procs.free_port())
        self.events_in = procs.tcp(procs.free_port())
        self.events_out = procs.tcp(procs.free_port())
        self.broker = None
        self.workers = []
        self.clients = []

    def start_broker(self):
        self.broker = procs.Proc([BROKER, "--frontend", self.frontend, "--backend", self.backend,
                                  "--events-in", self.events_in, "--events-out", self.events_out],
                                 name="broker")
        return self.broker

    def worker_args(self, **settings):
        s = dict(self.db.settings(self.database))
        s.update({"backend": self.backend, "events_in": self.events_in, "pool_size": 2,
                  "max_overflow": 2, "startup_wait_s": 20})
        s.update(FAST_HASH)
        s.update(settings)
        return [DBWORKER] + flags(s)

    def start_worker(self, wait=True, **settings):
        w = procs.Proc(self.worker_args(**settings), name="dbworker")
        self.workers.append(w)
        if wait:
            w.wait_log("serving", timeout=30)
        return w

    def client(self):
        c = smp.Client(self.frontend)
        self.clients.append(c)
        return c

    def wait_ready(self, client=None, timeout=10.0):
        """Until a db.ping through the broker answers 200."""
        c = client or self.client()
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = c.request("db", {"op": "db.ping", "args": {}}, deadline_ms=1000)
            if last.get("status") == 200:
                return
            time.sleep(0.05)
        raise AssertionError("db.ping never answered 200: %r" % last)

    def status(self, client=None):
        c = client or self.client()
        r = c.request("sys", {"op": "status", "args": {}}, deadline_ms=2000)
        assert r["status"] == 200, r
        return r["data"]

    def pools(self, client=None):
        """The db workers' heartbeat status maps, as the broker last heard them."""
        return self.status(client).get("pools", [])

    def wait_pools(self, predicate, timeout=10.0, client=None):
        """Polls sys status until predicate(pools) is true; returns the pools."""
        end = time.monotonic() + timeout
        pools = None
        while time.monotonic() < end:
            pools = self.pools(client)
            if pools and predicate(pools):
                return pools
            time.sleep(0.1)
        raise AssertionError("pool status never matched; last: %r" % (pools,))

    def subscriber(self, topic):
        import zmq
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sub.connect(self.events_out)
        self.clients.append(sub)
        return sub

    def stop(self):
        for c in self.clients:
            c.close()
        errors = []
        for w in self.workers + ([self.broker] if self.broker else []):
            try:
                w.finish(timeout=20)
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))


@pytest.fixture
def stack(mariadb):
    name = "t_" + uuid.uuid4().hex[:12]
    mariadb.create_database(name)
    s = Stack(mariadb, name)
    s.start_broker()
    yield s
    s.stop()
    mariadb.sql("DROP DATABASE IF EXISTS `%s`" % name, check=False)


def make_user(client, name=None, password="password-1", device="laptop"):
    """Creates a user and a session; returns the auth map for ops."""
    name = name or "u" + uuid.uuid4().hex[:10]
    r = client.call("user.create", {"username": name, "password": password})
    assert r["status"] == 201, r
    s = client.call("session.create", {"username": name, "password": password,
                                       "device_name": device})
    assert s["status"] == 201, s
    return {"user_id": s["data"]["user_id"], "device_id": s["data"]["device_id"],
            "token": s["data"]["token"], "username": name}


def recv_event(sub, timeout=5.0):
    """The next event body on sub (a dict), or raise TimeoutError."""
    if not sub.poll(int(timeout * 1000)):
        raise TimeoutError("no event within %.1fs" % timeout)
    topic, proto, body = sub.recv_multipart()
    assert proto == b"SMP1"
    return topic.decode(), smp.unpack(body)


def wait_subscribed(stack, client, auth, sub, timeout=5.0):
    """PUB/SUB joins late: publishes a probe item until the subscriber sees one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.call("clipboard.create", {"content": "probe"}, auth=auth)
        assert r["status"] == 201, r
        if sub.poll(200):
            while sub.poll(100):
                sub.recv_multipart()
            return
    raise AssertionError("subscriber never received an event")


def gather(client, rids, timeout=20.0):
    """Replies to several requests sent at once, in the order of rids."""
    want = set(rids)
    got = {}
    end = time.monotonic() + timeout
    while want - set(got):
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply to %d of %d requests" % (len(want - set(got)), len(rids)))
        cmd, rid, body = client.recv(left)
        if cmd == smp.REPLY and rid in want:
            got[rid] = body
    return [got[r] for r in rids]


def auth_of(u):
    return {"user_id": u["user_id"], "device_id": u["device_id"]}
