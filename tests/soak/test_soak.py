"""Soak (issue 7, "Soak and leaks"): the whole system for a set time under rounds of
client churn and periodic faults; RSS and open file descriptors of every Sluice
process sampled each second; they must flatten out, not climb.

Each round, at once:
- SOCKETS notify WebSockets connect and leave, in four kinds: hello + ping + clean
  close; hello + a ping sent in two fragments + the TCP connection dropped; hello +
  a malformed message (error answer) + clean close; dropped right after the upgrade,
  before the token is checked;
- STREAMS chat answers streamed as Server-Sent Events, every other one cut off by
  closing the connection after its first delta (the gateway sends CANCEL);
- WRITES clipboard writes with Idempotency-Key (repeated with the same key after a
  503/504, as a client does), each followed by a list.
Every FAULT_S seconds, during a round, a fault: kill -9 of DB worker 0 and a new one
started on the same endpoints, or KILL CONNECTION (from MariaDB) of every pooled
connection. DB worker 1 lives through the whole run (and through every KILL
CONNECTION), so it is the one checked.

After each round the clients are all gone: that is a quiet point, where fds are
read once they have settled. The checks (docs/faults.md, "Soak", says why these
bounds):
- fds: at the end, each process (broker, gateway, stream worker, DB worker 1) has at
  most its baseline (first quiet point after warm-up) plus FD_SLACK; and the highest
  quiet-point count of the second half is at most the first half's plus FD_SLACK;
- RSS (not under ASan, where the allocator's quarantine makes RSS noise; there
  LeakSanitizer checks every process that exits, and Stack.stop() asserts exit 0):
  max RSS of the second half minus max RSS of the first half (both after warm-up)
  below max(RSS_MIN_KIB, RSS_PCT of the first half's);
- the clients got what they should (no 500, every write stored once, every
  socket outcome one the API documents, no chat answer left `streaming`).

Settings (environment): SLUICE_SOAK_S (120), SLUICE_SOAK_SOCKETS (200 per round),
SLUICE_SOAK_STREAMS (8), SLUICE_SOAK_WRITES (30), SLUICE_SOAK_FAULT_S (25),
SLUICE_SOAK_WARMUP_S (max(20, 20% of the run)).
The table goes to the output and to $SLUICE_BUILD_DIR/soak-report.txt.
"""
import asyncio
import collections
import contextlib
import json
import os
import resource
import socket
import threading
import time
import uuid

import pytest
import requests
import websockets

import procs
import procstat
from faultstack import FaultStack
from mariadb import MariaDB


def _env(name, default, kind=float):
    v = os.environ.get(name)
    return kind(v) if v not in (None, "") else default


SOAK_S = _env("SLUICE_SOAK_S", 120.0)
SOCKETS = _env("SLUICE_SOAK_SOCKETS", 200, int)
STREAMS = _env("SLUICE_SOAK_STREAMS", 8, int)
WRITES = _env("SLUICE_SOAK_WRITES", 30, int)
FAULT_S = _env("SLUICE_SOAK_FAULT_S", 25.0)
WARMUP_S = _env("SLUICE_SOAK_WARMUP_S", max(20.0, 0.2 * SOAK_S))
USERS = 20                 # each with two devices: 40 tokens for the sockets
WS_CONCURRENCY = 100       # sockets of a round open at once (client side)
FD_SLACK = {"dbworker": 2, "default": 0}   # dbworker: pooled connections (pool 2) open
RSS_MIN_KIB = 2048         # RSS growth bound: max(2 MiB, 5% of the first half's max)
RSS_PCT = 0.05
SETTLE_S = 15.0            # fds must be back at baseline within this after the clients left
STREAMING_S = 15.0
CHECKED = ("broker", "gateway", "streamworker", "dbworker-1")
# 20 words a delta each, 5 ms a token: an answer of ~1 s, long enough to cut
WORDS = " ".join("word%d" % i for i in range(200))


def sanitized():
    """True when the binaries under test are the ASan/UBSan build."""
    try:
        with open(os.path.join(procs.BUILD_DIR, "CMakeCache.txt")) as f:
            return any(line.strip() == "SLUICE_SANITIZE:BOOL=ON" for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def server_nofile():
    """Sluice processes started in here get the file limit the test started with;
    the client side (this process) runs with the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (ORIG_NOFILE, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


ORIG_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- the clients ------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.unexpected = []     # (round, what) every outcome the API does not allow
        self.acked = {}          # idempotency key -> seq
        self.latest = {}         # user index -> highest seq acknowledged
        self.cancelled = 0
        self.ws_sessions = 0

    def add(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def bad(self, rnd, what):
        with self.lock:
            self.unexpected.append((rnd, what))


class Clients:
    def __init__(self, stack, users, convs):
        self.s = stack
        self.users = users       # [(writer device, listener device)]
        self.convs = convs       # [(device, conversation id)] one per stream slot
        self.t = Tally()
        self.port = stack.gateway.port

    # -- notify sockets
    async def _ws_one(self, rnd, i, sem):
        ui = i % len(self.users)
        dev = self.users[ui][i % 2]
        kind = i % 4
        q = "token=" + dev.token
        if kind == 0:
            q += "&after=%d" % max(0, self.t.latest.get(ui, 0) - 20)
        async with sem:
            try:
                ws = await websockets.connect(self.s.ws_url + "/v1/sync/notify?" + q,
                                              open_timeout=20, close_timeout=5,
                                              max_size=8 << 20, ping_interval=None)
            except websockets.exceptions.InvalidStatusCode as e:
                # documented: 503 (gateway busy) with Retry-After; 429 is off here
                # (rate limits and socket caps)
                if e.status_code == 503:
                    self.t.add("ws_refused_503")
                else:
                    self.t.bad(rnd, "ws upgrade answered %d" % e.status_code)
                return
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
                self.t.bad(rnd, "ws connect failed: %r" % e)
                return
            with self.t.lock:
                self.t.ws_sessions += 1
            try:
                if kind == 3:
                    ws.transport.abort()  # gone before the token was checked
                    self.t.add("ws_dropped_early")
                    return
                await self._until(ws, "hello")
                if kind == 2:
                    await ws.send("{\"type\":")
                    await self._until(ws, "error")
                else:
                    await ws.send(["{\"type\":", "\"ping\"}"] if kind == 1 else "{\"type\":\"ping\"}")
                    await self._until(ws, "pong")
                if kind == 1:
                    ws.transport.abort()
                    self.t.add("ws_ok_dropped")
                else:
                    await ws.close()
                    self.t.add("ws_ok_closed")
            except websockets.exceptions.ConnectionClosed as e:
                # documented closes during hello/replay: 1013 database busy, 1011
                # database failed (a DB worker killed under it)
                code = e.rcvd.code if e.rcvd else None
                if code in (1011, 1013):
                    self.t.add("ws_closed_%d" % code)
                else:
                    self.t.bad(rnd, "ws closed %s (kind %d)" % (code, kind))
            except asyncio.TimeoutError:
                self.t.bad(rnd, "ws: no answer within 20 s (kind %d)" % kind)
            finally:
                if kind in (1, 3):
                    ws.transport.abort()
                elif not ws.closed:
                    await ws.close()

    async def _until(self, ws, typ):
        end = time.monotonic() + 20
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError()
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
            if msg.get("type") == typ:
                return msg
            if msg.get("type") not in ("hello", "clipboard.item", "clipboard.deleted"):
                raise AssertionError("unexpected message %r waiting for %s" % (msg, typ))

    def ws_round(self, rnd):
        async def main():
            sem = asyncio.Semaphore(WS_CONCURRENCY)
            got = await asyncio.gather(*(self._ws_one(rnd, i, sem) for i in range(SOCKETS)),
                                       return_exceptions=True)
            for e in got:
                if isinstance(e, BaseException):
                    self.t.bad(rnd, "ws client: %r" % e)
        asyncio.run(main())

    # -- chat streams
    def stream(self, rnd, slot):
        dev, conv = self.convs[slot]
        cancel = (rnd + slot) % 2 == 1
        body = json.dumps({"content": WORDS, "stream": True}).encode()
        head = ("POST /v1/chat/conversations/%s/messages HTTP/1.1\r\nHost: soak\r\n"
                "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n"
                % (conv, dev.token, len(body))).encode()
        buf = b""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sk:
                sk.sendall(head + body)
                while True:
                    chunk = sk.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    if cancel and b"event: delta" in buf:
                        self.t.add("stream_cut")
                        with self.t.lock:
                            self.t.cancelled += 1
                        return  # closing the socket is the client going away
        except OSError as e:
            self.t.bad(rnd, "stream %d: %r after %d bytes" % (slot, e, len(buf)))
            return
        status = buf[9:12]
        if status == b"200" and buf.rstrip().endswith(b"}") and b"event: done" in buf:
            self.t.add("stream_done")
        elif status == b"503" or (status == b"200" and b"event: error" in buf):
            self.t.add("stream_503_or_error_event")  # a DB worker killed under it
        else:
            self.t.bad(rnd, "stream %d: %r" % (slot, buf[:300]))

    # -- writes and lists
    def writes(self, rnd):
        with requests.Session() as http:
            for i in range(WRITES):
                ui = (rnd * WRITES + i) % len(self.users)
                dev = self.users[ui][0]
                key = "soak-%d-%d-%s" % (rnd, i, uuid.uuid4().hex[:8])
                for attempt in range(20):
                    try:
                        r = http.post(self.s.url + "/v1/clipboard", data=json.dumps(
                            {"content": key}), timeout=15,
                            headers={"Authorization": "Bearer " + dev.token,
                                     "Idempotency-Key": key})
                    except requests.exceptions.RequestException:
                        self.t.add("write_cut")
                        time.sleep(0.2)
                        continue
                    if r.status_code == 201:
                        seq = r.json()["seq"]
                        with self.t.lock:
                            self.t.acked[key] = seq
                            self.t.latest[ui] = max(self.t.latest.get(ui, 0), seq)
                        self.t.add("write_201")
                        break
                    if r.status_code in (503, 504):
                        if r.status_code == 503 and "Retry-After" not in r.headers:
                            self.t.bad(rnd, "503 without Retry-After")
                        self.t.add("write_%d" % r.status_code)
                        time.sleep(0.2)
                        continue
                    self.t.bad(rnd, "write answered %d: %s" % (r.status_code, r.text[:200]))
                    break
                else:
                    self.t.bad(rnd, "write %s never acknowledged in 20 tries" % key)
                try:
                    r = http.get(self.s.url + "/v1/clipboard?after=%d&limit=20"
                                 % max(0, self.t.latest.get(ui, 0) - 10), timeout=15,
                                 headers={"Authorization": "Bearer " + dev.token})
                    if r.status_code == 200:
                        self.t.add("list_200")
                    elif r.status_code in (503, 504):
                        self.t.add("list_%d" % r.status_code)
                    else:
                        self.t.bad(rnd, "list answered %d" % r.status_code)
                except requests.exceptions.RequestException:
                    self.t.add("list_cut")

    def _guard(self, rnd, fn, *args):
        """Runs fn; an exception in a client thread is a problem, not a lost trace."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported as a problem of the round
            self.t.bad(rnd, "%s: %r" % (getattr(fn, "__name__", fn), e))

    def round(self, rnd, fault=None):
        work = [(self.ws_round, rnd), (self.writes, rnd)]
        work += [(self.stream, rnd, k) for k in range(STREAMS)]
        if fault is not None:
            work.append((fault,))
        ts = [threading.Thread(target=self._guard, args=(rnd,) + w) for w in work]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=180)
            assert not t.is_alive(), "a client thread of round %d hung" % rnd


# ---- the run --------------------------------------------------------------------

@pytest.fixture
def soak_stack():
    db = MariaDB()
    db.start()
    database = db.create_database("soak_" + uuid.uuid4().hex[:8])
    with server_nofile():
        # the harness shares 20 devices among up to 100 sockets at once (more while a
        # fault slows the hellos): the per-device and per-user socket caps, made for
        # real devices, are tested in tests/gateway/test_outbound.py, not here
        s = FaultStack(db, database,
                       gateway_settings={"ws_max_per_device": 0, "ws_max_per_user": 0})
        s.start()
    try:
        yield s, db, database
    finally:
        try:
            with server_nofile():
                s.stop()
        finally:
            db.destroy()


def settle(mon, keys, timeout=5.0, quiet_s=1.0):
    """Reads fds of keys until none changed for quiet_s (or timeout); returns
    {key: (rss_kib, fds)}."""
    last, since = None, time.monotonic()
    end = time.monotonic() + timeout
    while True:
        now = {}
        for k in keys:
            row = mon.sample_one(k)
            if row is not None:
                now[k] = (row[1], row[2])
        fds = {k: v[1] for k, v in now.items()}
        if fds != last:
            last, since = fds, time.monotonic()
        if time.monotonic() - since >= quiet_s or time.monotonic() > end:
            return now
        time.sleep(0.1)


def slack(key):
    return FD_SLACK["dbworker"] if key.startswith("dbworker") else FD_SLACK["default"]


def test_soak(soak_stack, capsys):
    s, db, database = soak_stack
    asan = sanitized()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client side only

    users = []
    for _ in range(USERS):
        w = s.user("writer")
        users.append((w, s.device(w, "listener")))
    convs = []
    for k in range(STREAMS):
        dev = users[k % USERS][0]
        r = s.post("/v1/chat/conversations", {"title": "soak"}, token=dev.token)
        assert r.status_code == 201, r.text
        convs.append((dev, r.json()["id"]))
    s.http.close()  # no keep-alive connection of the set-up left in the gateway

    mon = procstat.Sampler()
    mon.watch("broker", s.broker)
    mon.watch("gateway", s.gateway.proc)
    mon.watch("streamworker", s.streamworker)
    mon.watch("dbworker-0", s.workers[0])
    mon.watch("dbworker-1", s.workers[1])
    mon.start()
    c = Clients(s, users, convs)
    victim = {"proc": s.workers[0]}
    faults = collections.Counter()

    def kill_worker():
        victim["proc"].kill()
        time.sleep(1.0)  # the broker sees it gone after 3 silent heartbeats
        with server_nofile():
            w = s.start_dbworker()
        victim["proc"] = w
        mon.watch("dbworker-0", w)
        faults["kill -9 dbworker-0"] += 1

    def kill_connections():
        n = len(db.kill_user_connections(database=database))
        faults["KILL CONNECTION"] += 1
        faults["connections killed"] += n

    quiet = []   # (t, {key: (rss, fds)}) after each round
    t_start = time.monotonic()
    t_warm = mon.now() + WARMUP_S
    next_fault = t_start + FAULT_S
    rnd = 0
    fault_kinds = [kill_worker, kill_connections]   # taken in turn
    n_faults = 0
    while time.monotonic() - t_start < SOAK_S:
        fault = None
        if time.monotonic() >= next_fault:
            fault = fault_kinds[n_faults % len(fault_kinds)]
            n_faults += 1
            next_fault += FAULT_S
        c.round(rnd, fault)
        rnd += 1
        keys = [k for k in mon.names() if k in CHECKED]
        quiet.append((mon.now(), settle(mon, keys)))

    # a last round with no fault: everything must work again
    last_bad = len(c.t.unexpected)
    before = collections.Counter(c.t.counts)
    c.round(rnd)
    final = c.t.counts - before
    t_end = mon.now()
    mon_keys = [k for k in mon.names() if k in CHECKED]
    ends = settle(mon, mon_keys)
    base_i = next((i for i, (t, _) in enumerate(quiet) if t >= t_warm), None)
    assert base_i is not None and len(quiet) - base_i >= 4, \
        "the run is too short for a warm-up of %.0fs: %d rounds" % (WARMUP_S, len(quiet))
    baseline = quiet[base_i][1]
    # fds back at the baseline once the clients are gone: polled up to SETTLE_S
    deadline = time.monotonic() + SETTLE_S
    while any(ends[k][1] > baseline[k][1] + slack(k) for k in CHECKED) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
        ends = {k: (mon.sample_one(k) or (0, 0, 0))[1:] for k in CHECKED}
    mon.stop()

    # ---- the table
    t_mid = (quiet[base_i][0] + t_end) / 2
    problems = []
    lines = []
    head = ("%-16s %9s %9s %9s %9s %11s %11s %7s %7s %7s %7s %12s  %s"
            % ("process", "rss0_MiB", "rssW_MiB", "rssE_MiB", "rssMax", "rss_h1_max",
               "rss_h2_max", "fd0", "fdW", "fdE", "fdMax", "rss_growth", "verdict"))
    lines.append(head)
    for key in mon.names():
        ser = mon.series(key)
        if not ser:
            continue
        tw = quiet[base_i][0]
        h1 = [r for t, r, f in ser if tw <= t < t_mid]
        h2 = [r for t, r, f in ser if t >= t_mid]
        checked = key in CHECKED
        row_w = baseline.get(key) if checked else None
        row_e = ends.get(key) if checked else (ser[-1][1], ser[-1][2])
        growth = (max(h2) - max(h1)) if (h1 and h2) else None
        verdict = []
        if checked:
            fd_bound = baseline[key][1] + slack(key)
            if row_e[1] > fd_bound:
                problems.append("%s: %d fds at the end, baseline %d (+%d slack)"
                                % (key, row_e[1], baseline[key][1], slack(key)))
                verdict.append("FD LEAK")
            q1 = [q[key][1] for t, q in quiet[base_i:] if t < t_mid and key in q]
            q2 = [q[key][1] for t, q in quiet[base_i:] if t >= t_mid and key in q]
            if q1 and q2 and max(q2) > max(q1) + slack(key):
                problems.append("%s: quiet-point fds climbed: first half max %d, second %d"
                                % (key, max(q1), max(q2)))
                verdict.append("FDS CLIMB")
            if asan:
                verdict.append(("" if verdict else "fds ok, ") + "rss NOT CHECKED (ASan)")
            elif growth is None:
                problems.append("%s: no RSS samples in a half" % key)
            else:
                bound = max(RSS_MIN_KIB, RSS_PCT * max(h1))
                if growth > bound:
                    problems.append("%s: RSS grew %d KiB in the second half (bound %d KiB)"
                                    % (key, growth, bound))
                    verdict.append("RSS CLIMB")
                elif not verdict:
                    verdict.append("ok (bound %d KiB)" % bound)
        else:
            verdict.append("not checked (killed by the test)")
        mib = lambda kib: "-" if kib is None else "%.1f" % (kib / 1024.0)
        lines.append("%-16s %9s %9s %9s %9s %11s %11s %7s %7s %7s %7s %12s  %s" % (
            key, mib(ser[0][1]), mib(row_w[0] if row_w else None), mib(row_e[0]),
            mib(max(r for _, r, _ in ser)), mib(max(h1) if h1 else None),
            mib(max(h2) if h2 else None), ser[0][2], row_w[1] if row_w else "-", row_e[1],
            max(f for _, _, f in ser), "-" if growth is None else "%+d KiB" % growth,
            " ".join(v for v in verdict if v)))
    n2 = sum(1 for t, _ in quiet if t >= t_mid)
    summary = [
        "soak: %.0fs, %d rounds (%d in the second half), %s build; warm-up %.0fs; "
        "per round %d sockets, %d streams, %d writes; faults every %.0fs"
        % (SOAK_S, rnd + 1, n2, "ASan" if asan else "gcc", WARMUP_S, SOCKETS, STREAMS,
           WRITES, FAULT_S),
        "faults: " + ", ".join("%s %d" % kv for kv in sorted(faults.items())),
        "clients: " + ", ".join("%s %d" % kv for kv in sorted(c.t.counts.items())),
        "websocket sessions: %d" % c.t.ws_sessions + ("" if asan else
            "; a per-connection leak of %d B or more in the gateway breaks the RSS bound "
            "(bound / second-half sockets)" % (RSS_MIN_KIB * 1024 // max(1, n2 * SOCKETS))),
    ]
    if asan:
        summary.append("ASan build: RSS is reported, not checked; LeakSanitizer checks "
                       "every process at its exit (Stack.stop asserts exit 0)")
    text = "\n".join(summary + lines)

    # ---- what the clients saw
    problems += ["round %d: %s" % u for u in c.t.unexpected[:20]]
    if c.t.unexpected[last_bad:] or final["ws_ok_closed"] + final["ws_ok_dropped"] + \
            final["ws_dropped_early"] != SOCKETS:
        problems.append("the last round (no fault) was not clean: %r" % dict(final))
    rows = db.sql("SELECT content, COUNT(*) FROM clipboard_items WHERE content LIKE 'soak-%' "
                  "GROUP BY content", database)
    counts = {r[0]: int(r[1]) for r in rows}
    missing = [k for k in c.t.acked if counts.get(k) != 1]
    if missing:
        problems.append("%d acknowledged writes not stored exactly once: %s"
                        % (len(missing), missing[:5]))
    end = time.monotonic() + STREAMING_S
    while int(db.scalar("SELECT COUNT(*) FROM messages WHERE status='streaming'", database)):
        if time.monotonic() > end:
            problems.append("chat answers still `streaming` %.0fs after the run" % STREAMING_S)
            break
        time.sleep(0.2)
    cancelled = int(db.scalar("SELECT COUNT(*) FROM messages WHERE status='cancelled'", database))
    text += "\nchat answers stored cancelled: %d (streams cut by the client: %d)" % (
        cancelled, c.t.cancelled)
    with open(os.path.join(procs.BUILD_DIR, "soak-report.txt"), "w") as f:
        f.write(text + "\n" + "".join("PROBLEM: %s\n" % p for p in problems))
    with capsys.disabled():
        print("\n" + text)
        for p in problems:
            print("  PROBLEM: " + p)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not problems, "\n".join(problems[:30])
