"""Many workers on one database, and a MariaDB restart in the middle of load."""
import threading
import time

from conftest import auth_of, gather, make_user


def test_three_workers_give_gap_free_seq_per_user(stack):
    for _ in range(3):
        stack.start_worker(pool_size=2, max_overflow=2)
    c = stack.client()
    stack.wait_ready(c)
    stack.wait_pools(lambda p: len(p) == 3)
    users = [make_user(c) for _ in range(4)]
    rids = []
    for i in range(50):
        for u in users:
            rids.append(c.send("db", {"op": "clipboard.create", "args": {"content": "c%d" % i},
                                      "auth": auth_of(u)}, deadline_ms=30000))
    replies = gather(c, rids, timeout=60)
    assert all(r["status"] == 201 for r in replies), [r for r in replies if r["status"] != 201][:3]
    for u in users:
        items = []
        after = 0
        while True:
            r = c.call("clipboard.list", {"after": after, "limit": 500}, auth=auth_of(u))
            items += r["data"]["items"]
            if not r["data"]["items"]:
                break
            after = r["data"]["next_after"]
        assert [i["seq"] for i in items] == list(range(1, 51))
    # every worker took part
    pools = stack.wait_pools(lambda p: len(p) == 3 and all(w["ops"] > 0 for w in p))
    assert sum(w["errors"] for w in pools) == 0


def test_mariadb_restart_during_load(stack):
    db = stack.db
    for _ in range(2):
        stack.start_worker(pool_size=2, max_overflow=2, ping_after_idle_ms=200,
                           reconnect_backoff_max_ms=500)
    c = stack.client()
    stack.wait_ready(c)
    users = [make_user(c) for _ in range(3)]
    written = {u["user_id"]: 0 for u in users}  # keys made per user
    pending = {}  # idem key -> (user, content)
    statuses = []
    restarter = threading.Thread(target=db.restart)
    end = time.monotonic() + 60
    rounds = 0
    # writes go on through the whole restart; afterwards the ones that failed are
    # repeated with their key until they succeed
    while (pending or rounds < 3 or restarter.is_alive()) and time.monotonic() < end:
        rounds += 1
        if rounds == 3:
            restarter.start()
        if rounds < 3 or restarter.is_alive():
            for u in users:
                key = "u%d-%d" % (u["user_id"], written[u["user_id"]])
                written[u["user_id"]] += 1
                pending[key] = (u, key)
        batch = list(pending.items())[:9]
        rids = [c.send("db", {"op": "clipboard.create", "args": {"content": content},
                              "auth": auth_of(u), "idem": key, "idempotent": True},
                       deadline_ms=2000) for key, (u, content) in batch]
        reads = [c.send("db", {"op": "clipboard.list", "args": {"limit": 5},
                               "auth": auth_of(u), "idempotent": True}, deadline_ms=2000)
                 for u in users]
        # every request gets an answer in bounded time, restart or not: no hang
        replies = gather(c, rids + reads, timeout=15)
        for (key, _), r in zip(batch, replies):
            statuses.append(r["status"])
            assert r["status"] in (201, 503, 504), r
            if r["status"] == 201:
                del pending[key]
        for r in replies[len(rids):]:
            assert r["status"] in (200, 503, 504), r
        if not restarter.is_alive() and rounds > 3 and pending:
            time.sleep(0.05)
    restarter.join()
    assert not pending, "writes never succeeded after the restart: %r" % list(pending)
    # reads recover; each keyed write is there exactly once, seq without gaps
    for u in users:
        items, after = [], 0
        while True:
            r = c.call("clipboard.list", {"after": after, "limit": 500}, auth=auth_of(u))
            assert r["status"] == 200
            if not r["data"]["items"]:
                break
            items += r["data"]["items"]
            after = r["data"]["next_after"]
        n = written[u["user_id"]]
        assert sorted(i["content"] for i in items) == sorted(
            "u%d-%d" % (u["user_id"], i) for i in range(n))
        assert [i["seq"] for i in items] == list(range(1, n + 1))
    pools = stack.wait_pools(lambda p: len(p) == 2 and all(w["db_up"] for w in p))
    # the workers did lose their connections (the requests may all have ridden it
    # out: the ones sent while the server was down wait for a new connection)
    assert sum(w["invalid"] for w in pools) >= 1, pools


def test_broker_restart_worker_reconnects(stack):
    """A broker that dies is detected by the worker (3 silent heartbeats); it
    reconnects and says READY again to the new broker on the same endpoint."""
    w = stack.start_worker()
    c = stack.client()
    stack.wait_ready(c)
    u = make_user(c)
    stack.broker.kill()
    stack.start_broker()
    c2 = stack.client()
    stack.wait_ready(c2, timeout=15)
    assert c2.call("clipboard.create", {"content": "after"}, auth=auth_of(u))["status"] == 201
    assert w.alive()


def test_two_brokers_one_worker(stack):
    """One worker serves every broker it is given; events reach every broker."""
    import procs
    import smp
    from conftest import BROKER, recv_event
    ports = [procs.free_port() for _ in range(4)]
    fe2, be2, ein2, eout2 = (procs.tcp(p) for p in ports)
    b2 = procs.Proc([BROKER, "--frontend", fe2, "--backend", be2, "--events-in", ein2,
                     "--events-out", eout2], name="broker2")
    try:
        stack.start_worker(backend="%s,%s" % (stack.backend, be2),
                           events_in="%s,%s" % (stack.events_in, ein2))
        c1 = stack.client()
        stack.wait_ready(c1)
        c2 = smp.Client(fe2)
        stack.clients.append(c2)
        stack.wait_ready(c2)
        u = make_user(c2)
        import zmq
        subs = []
        for ep in (stack.events_out, eout2):
            s = zmq.Context.instance().socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, ("user/%d/" % u["user_id"]).encode())
            s.connect(ep)
            stack.clients.append(s)
            subs.append(s)
        # PUB/SUB joins late: create until both subscribers have seen an item
        seen = [False, False]
        end = time.monotonic() + 10
        while not all(seen) and time.monotonic() < end:
            r = c1.call("clipboard.create", {"content": "x"}, auth=auth_of(u))
            assert r["status"] == 201
            for i, s in enumerate(subs):
                while s.poll(50):
                    _, ev = recv_event(s)
                    assert ev["type"] == "clipboard.item"
                    seen[i] = True
        assert all(seen)
    finally:
        b2.stop(check=False)
