"""SIGHUP reloads settings without a restart (issue 9, item 5; docs/config.md,
"Reloading (SIGHUP)").

The DB worker runs from a config file (--config) under a steady trickle of requests;
the file is edited and the worker sent SIGHUP. What must hold: the pool and the
credit follow (sys status pools[] and services), MariaDB's processlist follows
(grow and shrink), a connection in use is never closed (they are held by a row lock
while the pool shrinks below them), no request fails, an invalid file is rejected
as a whole with the old settings kept, and a new log level shows at once. The
stream worker's max_streams (its credit), the broker's and the gateway's log_level likewise.
"""
import importlib.util
import os
import signal
import tempfile
import threading
import time

import pytest

import procs

_spec = importlib.util.spec_from_file_location(
    "sluice_db_conftest", os.path.join(procs.SOURCE_DIR, "tests", "db", "conftest.py"))
_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_db)

# the db suite's fixtures: a private MariaDB per session, a database and broker per test
mariadb = _db.mariadb
stack = _db.stack


def write_config(path, settings):
    with open(path + ".new", "w") as f:
        f.write("# written by test_reload\n")
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    os.replace(path + ".new", path)  # the worker never reads half a file


def db_settings(stack, **extra):
    s = dict(stack.db.settings(stack.database))
    s.update({"backend": stack.backend, "events_in": stack.events_in, "startup_wait_s": 20,
              "log_level": "info"})
    s.update(_db.FAST_HASH)
    s.update(extra)
    return s


def reload(proc, marker_count):
    """SIGHUP, then wait for the one reload line it logs; returns that line."""
    proc.signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        lines = [l for l in proc.log().splitlines() if "reload (SIGHUP)" in l]
        if len(lines) > marker_count:
            assert len(lines) == marker_count + 1, lines
            return lines[-1]
        time.sleep(0.02)
    raise AssertionError("no reload line after SIGHUP; log:\n" + proc.log()[-3000:])


class Pinger(threading.Thread):
    """Requests in a loop on its own client for as long as the test runs; every
    status is kept, so the test can insist that none failed."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.client = stack.client()
        self.statuses = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                r = self.client.request("db", {"op": "db.ping", "args": {}}, deadline_ms=15000)
            except Exception as e:  # the fixture closed the client: the test failed
                self.statuses.append(repr(e))
                return
            self.statuses.append(r.get("status"))
            time.sleep(0.01)

    def finish(self):
        self.halt.set()
        self.join(20)
        assert not self.is_alive()
        assert len(self.statuses) > 20, self.statuses
        assert set(self.statuses) == {200}, [s for s in self.statuses if s != 200]


def db_capacity(stack, c):
    return stack.status(c)["services"].get("db", {}).get("capacity")


def test_dbworker_sighup_resizes_the_pool_and_never_drops_a_connection_in_use(stack, tmp_path,
                                                                             request):
    path = str(tmp_path / "dbworker.conf")
    settings = db_settings(stack, pool_size=2, max_overflow=1)
    write_config(path, settings)
    w = procs.Proc([_db.DBWORKER, "--config", path], name="dbworker")
    stack.workers.append(w)
    w.wait_log("serving", timeout=30)
    c = stack.client()
    stack.wait_ready(c)
    stack.wait_pools(lambda p: p[0]["capacity"] == 3 and p[0]["open"] == 2)
    assert len(stack.db.connection_ids(database=stack.database)) == 2
    pinger = Pinger(stack)
    pinger.start()
    request.addfinalizer(lambda: (pinger.halt.set(), pinger.join(20)))  # before the stack
    reloads = 0

    # grow: the new connections open at once, the brokers get the credit at once
    settings.update(pool_size=4, max_overflow=2)
    write_config(path, settings)
    line = reload(w, reloads)
    reloads += 1
    assert "changed" in line and "pool_size 2 -> 4" in line and "max_overflow 1 -> 2" in line
    pools = stack.wait_pools(lambda p: p[0]["pool_size"] == 4 and p[0]["open"] == 4)
    assert pools[0]["capacity"] == 6 and pools[0]["max_overflow"] == 2
    _wait(lambda: db_capacity(stack, c) == 6, "broker credit 6")
    _wait(lambda: len(stack.db.connection_ids(database=stack.database)) == 4, "4 in processlist")

    # shrink below what is checked out: five ops hold five connections (blocked on a
    # row lock; the pinger keeps the sixth busy now and then); none may be closed
    # under its op
    u = _db.make_user(c)
    lock = _hold_user_row(stack, u["user_id"])
    try:
        rids = [c.send("db", {"op": "clipboard.create", "args": {"content": "x%d" % i},
                              "auth": _db.auth_of(u)}, deadline_ms=30000) for i in range(5)]
        _wait(lambda: len(_busy(stack)) == 5, "5 connections blocked on the lock")
        held = _busy(stack)
        settings.update(pool_size=1, max_overflow=0)
        write_config(path, settings)
        line = reload(w, reloads)
        reloads += 1
        assert "pool_size 4 -> 1" in line and "max_overflow 2 -> 0" in line
        stack.wait_pools(lambda p: p[0]["pool_size"] == 1 and p[0]["capacity"] == 1)
        _wait(lambda: db_capacity(stack, c) == 1, "broker credit 1")
        # a heartbeat after the reload: the five are still checked out, and the very
        # same five server connections still run their statements
        pools = stack.wait_pools(lambda p: True)
        assert pools[0]["checked_out"] >= 5 and pools[0]["open"] >= 5, pools
        assert _busy(stack) == held
    finally:
        lock.run("COMMIT;")
        lock.close()
    replies = _db.gather(c, rids, timeout=30)
    assert [r["status"] for r in replies] == [201] * 5
    # they came back and were closed down to the new pool_size, none counted lost
    pools = stack.wait_pools(lambda p: p[0]["open"] == 1 and p[0]["checked_out"] == 0)
    assert pools[0]["invalid"] == 0 and pools[0]["overflow"] == 0, pools
    _wait(lambda: len(stack.db.connection_ids(database=stack.database)) == 1, "1 in processlist")

    # an invalid file is rejected as a whole: the valid line in it is not applied either
    for bad, why in (({"pool_size": 0, "max_overflow": 3}, "pool_size must be >= 1"),
                     ({"pool_size": "ten", "max_overflow": 3}, "must be an integer"),
                     ({"log_level": "loud", "max_overflow": 3}, "log_level must be")):
        broken = dict(settings)
        broken.update(bad)
        write_config(path, broken)
        line = reload(w, reloads)
        reloads += 1
        assert "rejected, settings unchanged" in line and why in line, line
        assert " ERROR " in line
        pools = stack.wait_pools(lambda p: True)
        assert pools[0]["pool_size"] == 1 and pools[0]["max_overflow"] == 0, pools
        assert db_capacity(stack, c) == 1

    # log level: no op is logged at info; after the reload to debug, ops are. A
    # restart-only setting in the same file is named and ignored.
    assert " DEBUG " not in w.log()
    settings.update(log_level="debug", service="elsewhere", max_overflow=1)
    write_config(path, settings)
    line = reload(w, reloads)
    reloads += 1
    assert "log_level info -> debug" in line and "max_overflow 0 -> 1" in line, line
    assert "needs a restart, ignored: service" in line, line
    r = c.request("db", {"op": "db.ping", "args": {}}, deadline_ms=5000)
    assert r["status"] == 200, r  # still the db service: the new name was not applied
    w.wait_log(" DEBUG ", timeout=5)
    stack.wait_pools(lambda p: p[0]["capacity"] == 2)

    # SIGHUP with nothing changed says so (and the ignored setting is named again:
    # it still differs from what runs)
    line = reload(w, reloads)
    assert "nothing to change" in line and "ignored: service" in line, line

    pinger.finish()
    assert w.alive()


def test_streamworker_sighup_changes_max_streams_and_the_credit(stack, tmp_path):
    stack.start_worker()
    c = stack.client()
    stack.wait_ready(c)
    path = str(tmp_path / "streamworker.conf")
    settings = {"backend": stack.backend, "frontend": stack.frontend,
                "journal_dir": tempfile.mkdtemp(prefix="stream-journal-"),
                "max_streams": 3, "log_level": "info"}
    write_config(path, settings)
    w = procs.Proc([procs.binary("streamworker"), "--config", path], name="streamworker")
    stack.workers.append(w)
    w.wait_log("serving", timeout=15)

    def chat_capacity():
        return stack.status(c)["services"].get("chat", {}).get("capacity")

    _wait(lambda: chat_capacity() == 3, "chat credit 3")
    settings["max_streams"] = 7
    write_config(path, settings)
    line = reload(w, 0)
    assert "max_streams 3 -> 7" in line, line
    _wait(lambda: chat_capacity() == 7, "chat credit 7")

    settings["max_streams"] = 0
    write_config(path, settings)
    line = reload(w, 1)
    assert "rejected, settings unchanged" in line and "max_streams" in line, line
    assert chat_capacity() == 7
    assert w.alive()


def test_broker_sighup_changes_log_level(stack, tmp_path):
    path = str(tmp_path / "broker.conf")
    ports = [procs.free_port() for _ in range(4)]
    settings = dict(zip(("frontend", "backend", "events_in", "events_out"),
                        map(procs.tcp, ports)))
    settings["log_level"] = "info"
    write_config(path, settings)
    b = procs.Proc([procs.binary("broker"), "--config", path], name="broker")
    stack.workers.append(b)  # stopped (SIGTERM, exit 0 insisted on) by the fixture
    b.wait_log("listening")
    settings.update(log_level="debug", queue_max=5)
    write_config(path, settings)
    line = reload(b, 0)
    assert "changed log_level info -> debug" in line, line
    assert "needs a restart, ignored: queue_max" in line, line
    settings["log_level"] = "chatty"
    write_config(path, settings)
    line = reload(b, 1)
    assert "rejected" in line and "log_level" in line, line
    assert b.alive()


def _hold_user_row(stack, user_id):
    s = stack.db.cli(stack.database)
    try:
        s.run("BEGIN; SELECT id FROM users WHERE id = %d FOR UPDATE;" % user_id)
    except BaseException:
        s.close()
        raise
    return s


def _busy(stack):
    """Server ids of the worker's connections running a statement now, the pinger's
    SELECT 1 aside: the ones blocked on the row lock (whose holder is root)."""
    rows = stack.db.sql("SELECT id FROM information_schema.processlist WHERE user = '%s' "
                        "AND db = '%s' AND command <> 'Sleep' AND COALESCE(info, '') <> 'SELECT 1'"
                        % (stack.db.user, stack.database))
    return {int(r[0]) for r in rows}


def _wait(predicate, what, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("never: " + what)
        time.sleep(0.05)


def test_gateway_sighup_changes_log_level_and_rate_limits(stack, tmp_path):
    import requests
    path = str(tmp_path / "gateway.conf")
    port = procs.free_port()
    settings = {"host": "127.0.0.1", "port": port, "frontend": stack.frontend,
                "events_out": stack.events_out, "static_dir": "", "log_level": "info"}
    write_config(path, settings)
    g = procs.Proc([procs.binary("gateway"), "--config", path], name="gateway")
    stack.workers.append(g)
    g.wait_log("listening")
    http = requests.Session()  # one keep-alive connection, opened before the reload
    url = "http://127.0.0.1:%d/v1/no-such-route" % port

    def statuses(n):
        return [http.get(url, timeout=5).status_code for _ in range(n)]

    assert 429 not in statuses(6)
    settings.update(log_level="debug", address_rate=1, address_burst=2, token_rate=7,
                    max_body_bytes=1000, address_max_pending=64, max_pending=500)
    write_config(path, settings)
    line = reload(g, 0)
    assert "changed " in line and "log_level info -> debug" in line, line
    assert "address_rate 0 -> 1" in line and "token_rate 0 -> 7" in line, line
    assert "address_max_pending 256 -> 64" in line and "max_pending 2048 -> 500" in line, line
    assert "needs a restart, ignored: max_body_bytes" in line, line
    # the new per-address rate applies to a new connection at once, without a restart
    http.close()
    http = requests.Session()
    got = statuses(6)
    assert got[:2] == [404, 404] and 429 in got, got
    # a bad value is rejected whole: the log level and the limits stay as they are
    settings.update(log_level="info", address_rate=-3)
    write_config(path, settings)
    line = reload(g, 1)
    assert "rejected" in line and "rate limit" in line, line
    assert 429 in statuses(4)
    settings.update(log_level="shouty", address_rate=1)
    write_config(path, settings)
    line = reload(g, 2)
    assert "rejected" in line and "log_level" in line, line
    # and off again
    settings.update(log_level="info", address_rate=0)
    write_config(path, settings)
    line = reload(g, 3)
    assert "address_rate 1 -> 0" in line, line
    http.close()
    http = requests.Session()
    assert 429 not in statuses(6)
    http.close()
    assert g.alive()
