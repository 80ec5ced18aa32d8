#!/usr/bin/python3
"""Login flood beside a legitimate reader (issue 16, section 3): the reader's
p50/p99 during the flood against idle.

    tests/bench/abuse_login.py [--seconds 10] [--factor 10] [--build build/test]

Starts its own private MariaDB and the test stack (tests/pylib/system.py: a
broker, two DB workers with a pool of 2, a gateway) with the DB workers' real
Argon2id cost, measures the hashing capacity (two hash threads / the time of one
wrong-password login), then runs, each for --seconds beside one reader doing
GET /v1/clipboard in a loop:

  idle          the reader alone;
  one-user      the issue's attack: 40 clients at once, wrong passwords for one
                username from one address (the failed-login throttle answers);
  many-users    --factor x the hashing capacity, open loop, every login a new
                username from one of many addresses, each address below
                login_fail_address_max: the throttle does not apply, the DB
                workers' bounded hash queue (hash_queue_max) does.

Prints one row per phase: what was sent, the answers by status, the reader's
p50/p99 and their ratio to idle. Not run by ctest (timing is not a test).
Importable: run_bench(seconds, factor) returns the rows, for tests/bench/abuse.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))


def _login(port, username, password, source):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        c.request("POST", "/v1/sessions",
                  json.dumps({"username": username, "password": password, "device_name": "b"}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        c.close()


def _pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100.0))]


class Reader:
    """One client reading its clipboard in a loop, on a kept-alive connection."""

    def __init__(self, port, token):
        self.port = port
        self.token = token
        self.lat = []
        self.statuses = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                c.request("GET", "/v1/clipboard?limit=10",
                          headers={"Authorization": "Bearer " + self.token})
                r = c.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = 0
            self.lat.append((time.monotonic() - t) * 1000.0)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            time.sleep(0.01)
        c.close()

    def run_for(self, seconds):
        self.thread.start()
        time.sleep(seconds)
        self.stop.set()
        self.thread.join()
        return self


def _flood_one_user(port, seconds, clients=40):
    """The issue's attack: clients at once, one username, one address, closed loop."""
    answers = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds
    name = "victim-" + uuid.uuid4().hex[:8]

    def run():
        while time.monotonic() < end:
            s = _login(port, name, "wrong-password", "127.0.30.1")
            with lock:
                answers[s] = answers.get(s, 0) + 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    return threads, answers, "%d clients, one username, one address" % clients


def _flood_many_users(port, seconds, rate, per_address=25, threads_n=64):
    """Open loop at rate logins/s, each a new username, addresses changed every
    per_address logins (below login_fail_address_max)."""
    answers = {}
    lock = threading.Lock()
    start = time.monotonic() + 0.05
    total = int(rate * seconds)
    counter = [0]

    def run():
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if i >= total:
                return
            due = start + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            a = i // per_address
            source = "127.%d.%d.%d" % (40 + a // 60000, (a // 250) % 240, 1 + a % 250)
            s = _login(port, "flood-%d-%s" % (i, uuid.uuid4().hex[:6]), "wrong", source)
            with lock:
                answers[s] = answers.get(s, 0) + 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(threads_n)]
    return threads, answers, "%.0f logins/s open loop (%d), new usernames, %d per address" % (
        rate, total, per_address)


def _phase(stack, token, seconds, flood=None):
    threads, answers, what = flood if flood else ([], {}, "nothing")
    for t in threads:
        t.start()
    reader = Reader(stack.gateway.port, token).run_for(seconds)
    for t in threads:
        t.join(60)
    return {"sent": what, "answers": dict(sorted(answers.items())), "reader": reader.lat,
            "reader_statuses": reader.statuses}


def hash_seconds(port, n=5):
    name = "nobody-" + uuid.uuid4().hex[:8]
    times = []
    for i in range(n):
        t = time.monotonic()
        _login(port, name, "wrong", "127.0.29.%d" % (1 + i))
        times.append(time.monotonic() - t)
    return sorted(times)[n // 2]


def run_bench(seconds=10, factor=10):
    import procs  # noqa: F401  (SLUICE_BUILD_DIR decides the binaries)
    from mariadb import MariaDB
    from system import Stack

    db = MariaDB()
    db.start()
    stack = Stack(db, hash_settings={})  # the DB workers' real Argon2id cost
    stack.start()
    rows = []
    try:
        ann = stack.user()
        stack.create(ann, "the reader's item")
        t = hash_seconds(stack.gateway.port)
        capacity = len(stack.workers) / t
        rate = factor * capacity
        port = stack.gateway.port
        idle = _phase(stack, ann.token, seconds)
        rows.append(("idle", idle))
        rows.append(("one-user", _phase(stack, ann.token, seconds,
                                        _flood_one_user(port, seconds))))
        rows.append(("many-users", _phase(stack, ann.token, seconds,
                                          _flood_many_users(port, seconds, rate))))
        pools = stack.pools()
    finally:
        stack.stop()
        db.destroy()
    return {"hash_ms": t * 1000, "capacity": capacity, "rate": rate, "rows": rows,
            "pools": pools}


def print_report(out, factor):
    print("hash (one wrong-password login alone): %.0f ms; capacity %.1f logins/s "
          "(2 DB workers x 1 hash thread); flood rate %.0f/s = %gx" % (
              out["hash_ms"], out["capacity"], out["rate"], factor))
    idle = out["rows"][0][1]["reader"]
    i50, i99 = _pct(idle, 50), _pct(idle, 99)
    print("%-11s %-58s %-26s %8s %8s %7s %7s %s" % (
        "phase", "sent", "answers", "p50 ms", "p99 ms", "p50 x", "p99 x", "reader"))
    for name, r in out["rows"]:
        lat = r["reader"]
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        print("%-11s %-58s %-26s %8.1f %8.1f %7.2f %7.2f %s" % (
            name, r["sent"][:58], json.dumps(r["answers"])[:26], p50, p99, p50 / i50, p99 / i99,
            "%d reads %s" % (len(lat), json.dumps(r["reader_statuses"]))))
    for p in out["pools"]:
        print("worker %s: hash_computed %s, hash_expired %s, hash_rejected %s" % (
            p.get("worker"), p.get("hash_computed"), p.get("hash_expired"),
            p.get("hash_rejected")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--factor", type=float, default=10)
    ap.add_argument("--build", default=os.environ.get("SLUICE_BUILD_DIR",
                                                      os.path.join(HERE, "..", "..", "build",
                                                                   "test")))
    a = ap.parse_args()
    os.environ["SLUICE_BUILD_DIR"] = os.path.abspath(a.build)
    print_report(run_bench(a.seconds, a.factor), a.factor)


if __name__ == "__main__":
    main()
