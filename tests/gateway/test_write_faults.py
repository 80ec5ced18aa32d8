"""A clipboard write that meets a fault while it is in flight, through the gateway.
The write is held at a known point (a `mariadb` session holds the user's row lock,
which the INSERT's trigger needs), so each test knows where the write is when the
fault comes, and waits on states (pool counters, answers), not on time:

- a keyed write whose DB worker is killed with SIGKILL: the broker resends it
  (a keyed write is idempotent) to the other worker, and the write is stored once;
  a retry with the same key gets the same answer;
- a write past its route's deadline: 504 `timeout`, and nothing written, even
  after the lock is released.
"""
import concurrent.futures
import time
import uuid

import requests

from system import Gateway, Stack

DB_DEADLINE_MS = 60000  # the keyed write's deadline: never the thing that ends it


def user_row_held(mariadb, user_id):
    """The user's row lock held by a CLI session for the block: clipboard.create for
    that user waits on it (the seq trigger)."""
    return mariadb.user_row_held(mariadb.database, user_id)


def post_clip(url, dev, content, key=None, timeout=90):
    h = {"Authorization": "Bearer " + dev.token}
    if key:
        h["Idempotency-Key"] = key
    return requests.post(url + "/v1/clipboard", json={"content": content}, headers=h,
                         timeout=timeout)


def wait_pools(stack, pred, what, timeout=30.0):
    """Until pred(pools of /health) holds; returns those pools. (A /health can
    wait up to its 2 s db.ping on a killed worker: hence a long time-out.)"""
    end = time.monotonic() + timeout
    pools = None
    while time.monotonic() < end:
        pools = requests.get(stack.url + "/health", timeout=20).json().get("pools", [])
        if pred(pools):
            return pools
        time.sleep(0.05)
    raise AssertionError("%s: never happened; pools %r" % (what, pools))


def busy(pools):
    return [p for p in pools if p["checked_out"] > 0]


def pid_of(pool):
    """The worker's pid, from its default name db-<host>-<pid>."""
    return int(pool["worker"].rsplit("-", 1)[1])


def items_of(stack, dev):
    r = stack.get("/v1/clipboard", token=dev.token)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def key_rows(mariadb, user_id, key):
    return int(mariadb.scalar("SELECT COUNT(*) FROM idempotency_keys WHERE user_id = %d"
                              " AND idem_key = '%s'" % (int(user_id), key), mariadb.database))


def test_keyed_write_across_a_killed_db_worker(mariadb):
    """The DB worker running a keyed POST /v1/clipboard is killed (SIGKILL) while
    the INSERT waits on the row lock, inside the key's transaction. The server
    rolls the dead connection's transaction back; the broker finds the worker
    dead and resends the request to the other worker, which waits for the dead
    one's claim of the key and then writes. The client gets 201, the item is
    stored once, and a retry with the same key gets the same answer byte for byte
    and stores nothing more."""
    s = Stack(mariadb, gateway_settings={"route_deadlines": "clipboard.create=%d"
                                         % DB_DEADLINE_MS})
    s.start()
    try:
        ann = s.user()
        key = "killed-" + uuid.uuid4().hex[:8]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with user_row_held(mariadb, ann.user_id):
                first = pool.submit(post_clip, s.url, ann, "once", key)
                held = busy(wait_pools(s, lambda p: len(busy(p)) == 1,
                                       "the keyed write reaching a DB worker"))[0]
                pid = pid_of(held)
                victim = [w for w in s.workers if w.pid == pid]
                assert len(victim) == 1, (held, [w.pid for w in s.workers])
                other = [w for w in s.workers if w.pid != pid][0]
                victim[0].kill()
                # the broker declares it dead and resends to the other worker,
                # whose claim of the key now waits on the dead one's
                wait_pools(s, lambda p: [pid_of(x) for x in busy(p)] == [other.pid],
                           "the write resent to the other DB worker")
                assert not first.done(), first.result()
            r1 = first.result(timeout=90)
        assert r1.status_code == 201, r1.text
        item = r1.json()
        assert item["content"] == "once" and item["seq"] == 1, item
        r2 = post_clip(s.url, ann, "once", key)
        assert r2.status_code == 201 and r2.content == r1.content, (r1.text, r2.text)
        items = items_of(s, ann)
        assert [(i["id"], i["seq"], i["content"]) for i in items] == [
            (item["id"], 1, "once")], items
        assert key_rows(mariadb, ann.user_id, key) == 1
    finally:
        s.stop()


def test_route_deadline_answers_504_and_writes_nothing(stack, mariadb):
    """A clipboard write through a gateway whose route_deadlines gives
    clipboard.create 1 s, held on the user's row lock: 504 `timeout` at its
    deadline, and nothing of it is ever written. Order, not time, shows the
    route's deadline was used: an earlier write of the same user through the
    stack's gateway (default deadline, 5 s) is still waiting when the 504
    comes, and is stored once the lock goes. The late write must have been
    stopped in the DB worker before the lock goes: a statement left to wait
    would be applied then."""
    short = Gateway(stack, route_deadlines="clipboard.create=1000")
    try:
        ann = stack.user()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            with user_row_held(mariadb, ann.user_id):
                kept = pool.submit(post_clip, stack.url, ann, "kept")
                wait_pools(stack, lambda p: len(busy(p)) == 1, "the first write waiting")
                late = pool.submit(post_clip, short.url, ann, "too late")
                r = late.result(timeout=30)
                assert r.status_code == 504, r.text
                assert r.json()["error"]["code"] == "timeout", r.text
                assert not kept.done(), "the default deadline ended first: %s" % (
                    kept.result().text)
                # The broker's 504 comes at the deadline; the DB worker stops the
                # statement (KILL QUERY) within its next tick. A lock released in
                # between would let the INSERT finish first, and then it stands
                # (docs/db-worker.md): so the lock goes only once the late write's
                # connection is given back, and only the first write holds one.
                wait_pools(stack, lambda p: sum(x["checked_out"] for x in p) == 1,
                           "the DB worker stopping the late write")
                assert not kept.done(), kept.result().text
            r = kept.result(timeout=30)
        assert r.status_code == 201, r.text
        # every statement of both writes is over: nothing can still be applied
        wait_pools(stack, lambda p: not busy(p) and all(x["waiting"] == 0 for x in p),
                   "the pools idle")
        items = items_of(stack, ann)
        assert [(i["seq"], i["content"]) for i in items] == [(1, "kept")], items
        # the late write did not take a seq either: the next one is 2
        assert stack.create(ann, "next")["seq"] == 2
    finally:
        short.stop()
