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
                then the same username and address at --factor x the hashing
                capacity, open loop;
  many-users    --factor x the hashing capacity, open loop, every login a new
                username from one of many addresses, each address below
                login_fail_address_max: the throttle does not apply, the DB
                workers' bounded hash queue (hash_queue_max) does.

Prints one row per phase: what was sent, the answers by status, the reader's
p50/p99 and their ratio to idle. The flood runs in a child process at
--flood-nice (default 10): it shares this host's CPUs with the stack, where a
real attacker's CPU would be elsewhere; --flood-nice 0 shows the worst case. Not run by ctest (timing is not a test).
Importable: run_bench(seconds, factor) returns the rows, for tests/bench/abuse.
"""
import argparse
import http.client
import json
import multiprocessing
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


FLOOD_NICE = [10]  # the flood generator's nice value (--flood-nice)


def _closed_loop(port, seconds, clients, name, source, out):
    """clients at once, one username, one address, closed loop (the issue's attack)."""
    os.nice(FLOOD_NICE[0])
    answers = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run():
        while time.monotonic() < end:
            s = _login(port, name, "wrong-password", source)
            with lock:
                answers[s] = answers.get(s, 0) + 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(answers)


def _open_loop(port, seconds, rate, one_name, per_address, out, threads_n=64):
    """rate logins/s on schedule. one_name: all for it from one address; else each a
    new username, the address changed every per_address logins (below
    login_fail_address_max)."""
    os.nice(FLOOD_NICE[0])
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
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if one_name:
                name, source = one_name, "127.0.31.1"
            else:
                a = i // per_address
                name = "flood-%d-%s" % (i, uuid.uuid4().hex[:6])
                source = "127.%d.%d.%d" % (40 + a // 60000, (a // 250) % 240, 1 + a % 250)
            s = _login(port, name, "wrong", source)
            with lock:
                answers[s] = answers.get(s, 0) + 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(answers)


def _phase(stack, token, seconds, flood=None):
    """The reader alone in this process (no flood thread shares its interpreter
    lock); the flood, if any, in a child process."""
    what, target, args = flood if flood else ("nothing", None, ())
    proc = out = None
    if target:
        out = multiprocessing.Queue()
        proc = multiprocessing.Process(target=target, args=args + (out,), daemon=True)
        proc.start()
    reader = Reader(stack.gateway.port, token).run_for(seconds)
    answers = {}
    if proc:
        answers = out.get(timeout=120)
        proc.join(30)
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


def run_bench(seconds=10, factor=10, worker_settings=None):
    import procs  # noqa: F401  (SLUICE_BUILD_DIR decides the binaries)
    from mariadb import MariaDB
    from system import Stack

    db = MariaDB()
    db.start()
    # the DB workers' real Argon2id cost, and their other hash defaults unless told
    stack = Stack(db, hash_settings=dict(worker_settings or {}))
    stack.start()
    rows = []
    try:
        ann = stack.user()
        stack.create(ann, "the reader's item")
        t = hash_seconds(stack.gateway.port)
        capacity = len(stack.workers) / t
        rate = factor * capacity
        port = stack.gateway.port
        victim = "victim-" + uuid.uuid4().hex[:8]
        rows.append(("idle", _phase(stack, ann.token, seconds)))
        rows.append(("one-user", _phase(stack, ann.token, seconds, (
            "40 clients at once, one username, one address", _closed_loop,
            (port, seconds, 40, victim, "127.0.30.1")))))
        rows.append(("one-user", _phase(stack, ann.token, seconds, (
            "%.0f/s (%gx) open loop, one username, one address" % (rate, factor), _open_loop,
            (port, seconds, rate, victim + "b", 0)))))
        rows.append(("many-users", _phase(stack, ann.token, seconds, (
            "%.0f/s (%gx) open loop, new usernames, 25 per address" % (rate, factor),
            _open_loop, (port, seconds, rate, None, 25)))))
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
    print("%-11s %-52s %-26s %8s %8s %7s %7s %s" % (
        "phase", "sent", "answers", "p50 ms", "p99 ms", "p50 x", "p99 x", "reader"))
    for name, r in out["rows"]:
        lat = r["reader"]
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        print("%-11s %-52s %-26s %8.1f %8.1f %7.2f %7.2f %s" % (
            name, r["sent"][:52], json.dumps(r["answers"])[:26], p50, p99, p50 / i50, p99 / i99,
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
    ap.add_argument("--flood-nice", type=int, default=10,
                    help="nice value of the flood generator, which shares this host's CPUs "
                         "with the stack (a real attacker's CPU is elsewhere); 0: none")
    ap.add_argument("--hash-nice", type=int, help="the DB workers' hash_nice (default theirs)")
    ap.add_argument("--hash-queue-max", type=int,
                    help="the DB workers' hash_queue_max (default theirs)")
    a = ap.parse_args()
    os.environ["SLUICE_BUILD_DIR"] = os.path.abspath(a.build)
    FLOOD_NICE[0] = a.flood_nice
    print("flood generator at nice %d (it shares the host's CPUs with the stack)" % a.flood_nice)
    ws = {}
    if a.hash_nice is not None:
        ws["hash_nice"] = a.hash_nice
    if a.hash_queue_max is not None:
        ws["hash_queue_max"] = a.hash_queue_max
    print_report(run_bench(a.seconds, a.factor, ws), a.factor)


if __name__ == "__main__":
    main()
