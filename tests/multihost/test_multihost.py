"""Sluice across hosts: nine network namespaces on one bridge (cluster.py), two
brokers that every program connects to.

What is shown, in this order (one cluster for the module):
1. a clipboard write through gateway 1 reaches a device on gateway 2's WebSocket;
2. the three DB workers on three hosts hold exactly the pool budget configured
   (3 + 2 + 1 = 6 connections of the `sluice` user in MariaDB's processlist, each
   from its worker's address), also under load through both gateways;
3. a live item reaches that WebSocket once (each event travels through both
   brokers: the gateway must drop the copy);
4. cutting broker 1's link (`ip link set down` at the bridge) keeps the service up;
5. killing broker 2 (SIGKILL) keeps the service up.

Requests in flight on the broker that is lost (docs/deploy.md, "Several brokers"):
the gateway answers them 503 `unavailable` as soon as its connection to that broker
drops (at once when the broker is killed; after the 3 s ZeroMQ heartbeat timeout
when its link is cut, or 504 `timeout` if their deadline comes first), whatever
happened to the write; the write itself may have committed, and a retry with the
same Idempotency-Key returns that first result without writing twice. The test
holds four writes in flight (a row lock taken as root in MariaDB keeps them waiting
in the DB workers), loses a broker, releases the lock, and asserts exactly that:
each answer is 201 or lost (503 unavailable; for a cut link also 504 timeout), both
occur (the writes wait until each broker holds some of them), and after the broker
is back every retried key yields one item, none twice.
"""
import concurrent.futures
import time
import uuid

import pytest

import netlab

REASON = netlab.unavailable_reason()
if REASON:
    print("multihost: SKIPPED: %s" % REASON)
    pytest.skip(REASON, allow_module_level=True)

import cluster as cl  # noqa: E402 (only when namespaces work)
import smp  # noqa: E402
import system  # noqa: E402

RECOVERY_S = 20  # a bound on how long the service may be impaired after a loss


@pytest.fixture(scope="module")
def c(request):
    cluster = cl.Cluster()
    try:
        cluster.start()
    except BaseException:
        logs = cluster.logs()
        try:
            cluster.stop()
        except Exception:  # noqa: BLE001 - the start failure is what matters
            pass
        raise AssertionError("cluster did not start; logs:\n" + logs)
    yield cluster
    failed = request.session.testsfailed
    cluster.stop(keep_logs=failed > 0)
    if failed:
        print("multihost: process logs kept in %s" % cluster.log_dir)


@pytest.fixture(scope="module")
def ann(c):
    """A user with a laptop (writes through gateway 1) and a phone (gateway 2)."""
    laptop = c.gw["gw1"].user()
    phone = c.gw["gw2"].login(laptop.username, laptop.password, "phone")
    for gw in c.gw.values():  # both tokens in both gateways' auth caches
        for dev in (laptop, phone):
            r = gw.get("/v1/clipboard?after=0", token=dev.token)
            assert r.status_code == 200, r.text
    return laptop, phone


def create(gw, dev, content, key=None):
    headers = {"Idempotency-Key": key} if key else None
    return gw.post("/v1/clipboard", {"content": content}, token=dev.token, headers=headers)


def wait_for(what, probe, timeout):
    end = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < end, "%s: not within %ss" % (what, timeout)
        time.sleep(0.1)


async def next_item(ws):
    while True:
        m = await system.ws_recv(ws, timeout=10)
        if m["type"] == "clipboard.item":
            return m["item"]


def check_event_crosses(c, laptop, phone, tag, once=False):
    """A write through gateway 1 shows on gateway 2's WebSocket. once=True: and
    only once: the message after it is the next write, not a copy of it from the
    other broker (each event reaches each gateway through both)."""

    async def go():
        ws = await system.ws_open(c.gw["gw2"], phone)
        try:
            hello = await system.ws_recv(ws)
            assert hello["type"] == "hello", hello
            first = create(c.gw["gw1"], laptop, tag + "-1")
            assert first.status_code == 201, first.text
            got = await next_item(ws)
            assert got["content"] == tag + "-1" and got["id"] == first.json()["id"], got
            if once:
                second = create(c.gw["gw1"], laptop, tag + "-2")
                assert second.status_code == 201, second.text
                got = await next_item(ws)
                assert got["content"] == tag + "-2", "item delivered twice: got %s again" % got
        finally:
            await ws.close()

    system.run(go())


def test_write_on_gateway1_notifies_device_on_gateway2(c, ann):
    check_event_crosses(c, *ann, "cross")


def test_db_workers_share_the_pool_budget(c, ann):
    laptop, phone = ann
    budget = sum(cl.POOLS.values())
    want = {c.lab.hosts[w]: n for w, n in cl.POOLS.items()}
    assert c.db.connections_by_host() == want
    pools = c.gw["gw1"].health().json()["pools"]
    assert sorted(p["pool_size"] for p in pools) == sorted(cl.POOLS.values()), pools

    # load through both gateways: more concurrent writes than connections
    seen = []
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(create, c.gw["gw1" if i % 2 else "gw2"], laptop if i % 2 else phone,
                          "load-%d" % i) for i in range(48)]
        while not all(f.done() for f in futs):
            seen.append(sum(c.db.connections_by_host().values()))
        codes = [f.result().status_code for f in futs]
    assert codes == [201] * 48, codes
    assert max(seen) <= budget, seen
    assert c.db.connections_by_host() == want


def test_live_item_reaches_a_websocket_once(c, ann):
    check_event_crosses(c, *ann, "once", once=True)


def sys_status(addr):
    """sys status straight from one broker's frontend."""
    client = smp.Client("tcp://%s:5550" % addr)
    try:
        r = client.request("sys", {"op": "status"}, deadline_ms=2000, timeout=4)
        return r["data"]
    finally:
        client.close()


def db_workers_at(addr):
    try:
        return sys_status(addr)["services"].get("db", {}).get("workers", 0)
    except TimeoutError:
        return 0


def wait_gateway_uses_both_brokers(c, dev, g="gw1"):
    """Until a few reads through gateway g raise both brokers' request counters:
    its DEALER is connected to both again (after a cut, it reconnects on its own
    schedule)."""

    def both():
        before = [sys_status(c.lab.hosts[b])["broker"]["requests"] for b in ("b1", "b2")]
        for _ in range(4):
            assert c.gw[g].get("/v1/clipboard?after=0&limit=1", token=dev.token).status_code == 200
        after = [sys_status(c.lab.hosts[b])["broker"]["requests"] for b in ("b1", "b2")]
        # sys status itself is one request at each broker
        return all(a - b > 1 for a, b in zip(after, before))

    wait_for("%s sends to both brokers" % g, both, RECOVERY_S)


def lose_broker_with_writes_in_flight(c, dev, lose, tag, k=4):
    """k writes through gateway 1 held in the DB workers by a row lock (all k in
    flight at the brokers, as their sys status says), then lose(), then the lock is
    released. Returns [(key, content, response)]."""
    uid = int(dev.user_id)
    lock = c.db.cli(c.db.database)
    waiting = ("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '%s' "
               "AND info LIKE 'UPDATE users SET clip_seq%%'" % c.db.user)
    try:
        lock.run("BEGIN; SELECT clip_seq FROM users WHERE id = %d FOR UPDATE;" % uid)
        writes = [("%s-%s" % (tag, uuid.uuid4().hex[:8]), "%s-%d" % (tag, i)) for i in range(k)]
        with concurrent.futures.ThreadPoolExecutor(k) as ex:
            futs = [ex.submit(create, c.gw["gw1"], dev, content, key) for key, content in writes]

            def held():
                done = [f.result() for f in futs if f.done()]
                assert not done, "a write was answered before the lock was released: %s" % [
                    (r.status_code, r.text) for r in done]
                brokers = [sys_status(c.lab.hosts[b])["services"].get("db", {})
                           for b in ("b1", "b2")]
                counts = [d.get("in_flight", 0) + d.get("queued", 0) for d in brokers]
                # all k at the brokers, some at each (the one lost and the one kept)
                return (sum(counts) == k and min(counts) >= 1
                        and int(c.db.scalar(waiting)) >= 1)

            wait_for("%d writes waiting on the lock" % k, held, 15)
            lose()
            lock.run("ROLLBACK;")
            return [(key, content, f.result()) for (key, content), f in zip(writes, futs)]
    finally:
        lock.close()


def check_in_flight_outcome(results, lost_codes):
    """Each answer is 201, or one of lost_codes ({status: error code}); both occur."""
    codes = sorted(r.status_code for _, _, r in results)
    for _, _, r in results:
        assert r.status_code == 201 or r.status_code in lost_codes, r.text
        if r.status_code != 201:
            assert r.json()["error"]["code"] == lost_codes[r.status_code], r.text
    assert 201 in codes and set(codes) & set(lost_codes), codes


def check_service_up(c, laptop, phone, tag, n=6):
    """Within RECOVERY_S, n writes in a row succeed through each gateway (a DEALER
    alternates brokers, so n > 2 covers both of its pipes), a read too, and a chat
    message (stream worker: its db calls cross the brokers too)."""

    last = []

    def all_ok():
        for g, dev in (("gw1", laptop), ("gw2", phone)):
            for i in range(n):
                r = create(c.gw[g], dev, "%s-%s-%d" % (tag, g, i))
                if r.status_code != 201:
                    last[:] = [g, r.status_code, r.text]
                    return False
            r = c.gw[g].get("/v1/clipboard/latest", token=dev.token)
            if r.status_code != 200:
                last[:] = [g, r.status_code, r.text]
                return False
        return True

    try:
        wait_for("writes through both gateways all succeed", all_ok, RECOVERY_S)
    except AssertionError as e:
        raise AssertionError("%s; last failure: %s" % (e, last))
    for g, dev in (("gw1", laptop), ("gw2", phone)):
        conv = c.gw[g].post("/v1/chat/conversations", {"title": tag}, token=dev.token)
        assert conv.status_code == 201, conv.text
        for i in range(n):
            r = c.gw[g].post("/v1/chat/conversations/%s/messages" % conv.json()["id"],
                             {"content": "%s words %d" % (tag, i), "stream": False},
                             token=dev.token)
            assert r.status_code == 201, "%s chat %d: %s" % (g, i, r.text)


def check_retries(c, dev, results):
    """Every key retried returns one item; no content is stored twice."""
    for key, content, first in results:
        r = create(c.gw["gw1"], dev, content, key)
        assert r.status_code == 201, r.text
        assert r.json()["content"] == content
        if first.status_code == 201:
            assert r.json() == first.json()
    items = c.gw["gw1"].get("/v1/clipboard?after=0&limit=500", token=dev.token).json()["items"]
    for _, content, _ in results:
        assert [i["content"] for i in items].count(content) == 1, content


def test_cut_broker_link_keeps_service_up(c, ann):
    laptop, phone = ann
    wait_gateway_uses_both_brokers(c, laptop)
    try:
        results = lose_broker_with_writes_in_flight(c, laptop, lambda: c.lab.cut("b1"), "cut")
        check_in_flight_outcome(results, {503: "unavailable", 504: "timeout"})
        check_service_up(c, laptop, phone, "after-cut")
        check_event_crosses(c, laptop, phone, "cut-events")
    finally:
        c.lab.restore("b1")
    wait_for("broker 1 has the DB workers back", lambda: db_workers_at(c.lab.hosts["b1"]) == 3,
             RECOVERY_S)
    check_retries(c, laptop, results)


def test_killed_broker_keeps_service_up(c, ann):
    laptop, phone = ann
    for b in ("b1", "b2"):  # both brokers serve again (whatever the cut test left)
        wait_for("%s lists the 3 DB workers" % b,
                 lambda: db_workers_at(c.lab.hosts[b]) == 3, RECOVERY_S)
    wait_gateway_uses_both_brokers(c, laptop)

    def kill_b2():
        c.procs["b2"].kill()
        c.procs["b2"].killed = True

    results = lose_broker_with_writes_in_flight(c, laptop, kill_b2, "kill")
    check_in_flight_outcome(results, {503: "unavailable"})
    check_service_up(c, laptop, phone, "after-kill")
    check_event_crosses(c, laptop, phone, "kill-events")
    check_retries(c, laptop, results)
