"""The pool: overflow, credit, recycle, pre-ping, a killed connection, a slow
statement next to fast ones, deadlines, migrations by several workers, and a
clean SIGTERM drain. Slow statements are made with a row lock held by a second
session (the mariadb CLI), never with a test-only op."""
import os
import time

from conftest import auth_of, gather, make_user


def db_service(stack, client=None):
    return stack.status(client)["services"].get("db", {})


def user_row_held(stack, user_id):
    """The user's row lock held by a CLI session for the block (tests/pylib/mariadb.py)."""
    return stack.db.user_row_held(stack.database, user_id)


def worker_and_user(stack, **pool):
    """One worker with these pool settings, a client that sees it ready, a user."""
    stack.start_worker(**pool)
    c = stack.client()
    stack.wait_ready(c)
    return c, make_user(c)


def create_body(u, content, **extra):
    body = {"op": "clipboard.create", "args": {"content": content}, "auth": auth_of(u)}
    body.update(extra)
    return body


def test_overflow_opens_and_closes_and_waiting_is_in_the_broker(stack):
    w = stack.start_worker(pool_size=2, max_overflow=2)
    c = stack.client()
    stack.wait_ready(c)
    stack.wait_pools(lambda p: p and p[0]["capacity"] == 4)
    u = make_user(c)
    with user_row_held(stack, u["user_id"]):
        rids = [c.send("db", create_body(u, "c%d" % i), deadline_ms=20000) for i in range(10)]
        pools = stack.wait_pools(lambda p: p[0]["checked_out"] == 4)
        assert pools[0]["overflow"] == 2 and pools[0]["open"] == 4
        # the six others wait in the broker's queue, none inside the worker
        assert pools[0]["waiting"] == 0
        svc = db_service(stack, c)
        assert svc["in_flight"] == 4 and svc["queued"] == 6, svc
        assert svc["capacity"] <= 4
    replies = gather(c, rids)
    assert [r["status"] for r in replies] == [201] * 10
    assert sorted(r["data"]["seq"] for r in replies) == list(range(1, 11))
    # the overflow connections are closed once idle; the pool keeps pool_size
    pools = stack.wait_pools(lambda p: p[0]["overflow"] == 0 and p[0]["open"] == 2)
    assert pools[0]["checked_out"] == 0
    assert len(stack.db.connection_ids(database=stack.database)) == 2
    assert w.alive()


def test_credit_never_exceeds_capacity(stack):
    c, u = worker_and_user(stack, pool_size=1, max_overflow=1)
    with user_row_held(stack, u["user_id"]):
        rids = [c.send("db", create_body(u, "x%d" % i), deadline_ms=20000) for i in range(5)]
        for _ in range(5):
            svc = db_service(stack, c)
            pools = stack.wait_pools(lambda p: True)
            assert svc["capacity"] <= 2 and svc["in_flight"] <= 2, svc
            assert pools[0]["checked_out"] + pools[0]["waiting"] <= 2, pools
            time.sleep(0.05)
    assert [r["status"] for r in gather(c, rids)] == [201] * 5


def test_recycle_replaces_old_connections(stack):
    stack.start_worker(pool_size=1, max_overflow=0, recycle_s=1)
    c = stack.client()
    stack.wait_ready(c)
    before = set(stack.db.connection_ids(database=stack.database))
    time.sleep(1.2)  # let the connection age past recycle_s
    for _ in range(3):
        assert c.call("db.ping")["status"] == 200
    after = set(stack.db.connection_ids(database=stack.database))
    assert before and after and not (before & after)
    pools = stack.wait_pools(lambda p: p[0]["ops"] >= 3)
    assert pools[0]["invalid"] == 0 and pools[0]["errors"] == 0


def test_pre_ping_survives_server_wait_timeout(stack):
    db = stack.db
    db.set_global("wait_timeout", 2)
    try:
        w = stack.start_worker(pool_size=2, max_overflow=0, ping_after_idle_ms=500)
        c = stack.client()
        stack.wait_ready(c)
        u = make_user(c)
        w.wait_log("not below the server's wait_timeout")  # recycle_s 3600 >= 2
        ids = set(db.connection_ids(database=stack.database))
        # the server closes the idle connections after its wait_timeout
        end = time.monotonic() + 10
        while ids & set(db.connection_ids(database=stack.database)) and time.monotonic() < end:
            time.sleep(0.2)
        assert not ids & set(db.connection_ids(database=stack.database))
        for i in range(4):
            assert c.call("clipboard.create", {"content": "p%d" % i}, auth=auth_of(u))["status"] == 201
            assert c.call("clipboard.list", auth=auth_of(u))["status"] == 200
        # found dead by the ping and discarded: no op failed or had to be retried
        pools = stack.wait_pools(lambda p: p[0]["invalid"] >= 1)
        assert pools[0]["errors"] == 0 and pools[0]["retries"] == 0, pools
    finally:
        db.set_global("wait_timeout", 28800)


def test_killed_connection_is_replaced_and_ops_retried(stack):
    # no pre-ping: the killed connections are found dead by the ops themselves
    c, u = worker_and_user(stack, pool_size=2, max_overflow=0, ping_after_idle_ms=-1)
    assert c.call("clipboard.create", {"content": "before"}, auth=auth_of(u))["status"] == 201
    killed = stack.db.kill_user_connections(database=stack.database)
    assert killed
    for i in range(3):
        assert c.call("clipboard.list", auth=auth_of(u))["status"] == 200
        assert c.call("clipboard.create", {"content": "after%d" % i},
                      auth=auth_of(u))["status"] == 201
    items = c.call("clipboard.list", auth=auth_of(u))["data"]["items"]
    assert [i["content"] for i in items] == ["before", "after0", "after1", "after2"]
    assert [i["seq"] for i in items] == [1, 2, 3, 4]
    pools = stack.wait_pools(lambda p: p[0]["invalid"] >= 1 and p[0]["retries"] >= 1)
    assert pools[0]["errors"] == 0
    assert not set(killed) & set(stack.db.connection_ids(database=stack.database))


def test_write_lost_in_flight_is_503_and_not_repeated(stack):
    """clipboard.create without a key is one autocommit INSERT: when its connection
    dies while the server runs it, nobody knows whether it was applied. The answer
    is 503 saying so, and it is not run again behind the client's back."""
    c, u = worker_and_user(stack, pool_size=2, max_overflow=0)
    with user_row_held(stack, u["user_id"]):
        lost = c.send("db", create_body(u, "lost"), deadline_ms=20000)
        stack.wait_pools(lambda p: p[0]["checked_out"] == 1)
        assert stack.db.kill_user_connections(database=stack.database)
        r = gather(c, [lost])[0]
        assert r["status"] == 503 and r["error"]["code"] == "unavailable", r
        assert "may or may not have been applied" in r["error"]["message"], r
    # the killed INSERT was rolled back, and no retry applied it later
    assert c.call("clipboard.list", auth=auth_of(u))["data"]["items"] == []
    r = c.call("clipboard.create", {"content": "next"}, auth=auth_of(u))
    assert r["status"] == 201 and r["data"]["seq"] == 1, r


def test_write_with_key_lost_in_flight_is_retried_once(stack):
    """With an Idempotency-Key the INSERT runs in a transaction that had not reached
    COMMIT when its connection died: it is retried on a fresh connection and
    applied exactly once. (One connection, so the retry's is a fresh one, not
    another that the same KILL is about to end.)"""
    c, u = worker_and_user(stack, pool_size=1, max_overflow=0)
    with user_row_held(stack, u["user_id"]):
        sent = c.send("db", create_body(u, "kept", idem="lost-once"), deadline_ms=20000)
        stack.wait_pools(lambda p: p[0]["checked_out"] == 1)
        assert stack.db.kill_user_connections(database=stack.database)
        stack.wait_pools(lambda p: p[0]["retries"] >= 1 and p[0]["checked_out"] == 1)
    r = gather(c, [sent])[0]
    assert r["status"] == 201 and r["data"]["seq"] == 1, r
    items = c.call("clipboard.list", auth=auth_of(u))["data"]["items"]
    assert [(i["content"], i["seq"]) for i in items] == [("kept", 1)]


def test_slow_statement_does_not_block_others(stack):
    stack.start_worker(pool_size=2, max_overflow=1)
    c = stack.client()
    stack.wait_ready(c)
    slow_user, fast_user = make_user(c), make_user(c)
    with user_row_held(stack, slow_user["user_id"]):
        slow = c.send("db", create_body(slow_user, "slow"), deadline_ms=20000)
        stack.wait_pools(lambda p: p[0]["checked_out"] == 1)
        f = auth_of(fast_user)
        for i in range(20):
            assert c.call("clipboard.create", {"content": "f%d" % i}, auth=f)["status"] == 201
            assert c.call("clipboard.list", {"limit": 1}, auth=f)["status"] == 200
        # the slow one is still waiting on its lock all along
        assert not c.sock.poll(0)
    assert gather(c, [slow])[0]["status"] == 201


def test_deadline_stops_a_stuck_statement(stack):
    c, u = worker_and_user(stack, pool_size=1, max_overflow=0)
    with user_row_held(stack, u["user_id"]):
        r = c.request("db", create_body(u, "too late"), deadline_ms=800)
        assert r["status"] == 504, r
        # the worker gave its connection up at the deadline: the pool serves again
        # while the lock is still held
        for _ in range(3):
            assert c.call("db.ping")["status"] == 200
    # nothing of the timed-out write was committed
    assert c.call("clipboard.list", auth=auth_of(u))["data"]["items"] == []
    r = c.call("clipboard.create", {"content": "now"}, auth=auth_of(u))
    assert r["status"] == 201 and r["data"]["seq"] == 1


def test_three_workers_apply_migrations_once(stack):
    workers = [stack.start_worker(wait=False) for _ in range(3)]
    for w in workers:
        w.wait_log("serving", timeout=30)
    rows = stack.db.sql("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version",
                        stack.database)
    files = sorted(f for f in os.listdir(os.path.join(os.environ.get("SLUICE_SOURCE_DIR", "."),
                                                      "workers", "db", "migrations"))
                   if f.endswith(".sql"))
    assert [int(r[0]) for r in rows] == [int(f.split("_")[0]) for f in files]
    assert all(r[1] == "1" for r in rows)
    applied = [w for w in workers if "applied migration" in w.log()]
    assert len(applied) == 1
    late = stack.start_worker()
    assert "0 applied now" in late.log()
    c = stack.client()
    stack.wait_ready(c)
    stack.wait_pools(lambda p: len(p) == 4)


def test_sigterm_drains_in_flight_ops(stack):
    w = stack.start_worker(pool_size=2, max_overflow=0)
    c = stack.client()
    stack.wait_ready(c)
    u = make_user(c)
    with user_row_held(stack, u["user_id"]):
        rids = [c.send("db", create_body(u, "d%d" % i), deadline_ms=20000) for i in range(2)]
        stack.wait_pools(lambda p: p[0]["checked_out"] == 2)
        w.signal(15)
        w.wait_log("no new work")
    assert [r["status"] for r in gather(c, rids)] == [201, 201]
    assert w.stop() == 0
    assert not stack.db.connection_ids(database=stack.database)
