"""vs_seed.py - Sluice side by side with the seed application it replaces (the driver of
tests/bench/vs-seed; run that, which installs packages and builds first).

For each system in turn (the seed peer in buggy mode, in fixed mode, then Sluice) on
the same port and the same private MariaDB (database emptied between systems):
  http     POST /v1/clipboard and GET /v1/clipboard?after=0&limit=20, gw_load, same
           client concurrency; then POST at the overload concurrency (deadline 5 s)
  sockets  N notify WebSockets held (gw_load ws) while a writer POSTs all along;
           then K items from another device: notify latency to every socket
  chat     N chat answers streamed at once (echo provider, W words, 20 ms apart)
           while a prober POSTs a clipboard item every 100 ms
  multi    two server processes (uvicorn --workers 2; two Sluice gateways on the
           port): sockets of D devices, M items: does every device get every item?
  curve    POST and GET at each client concurrency of --curve (ascending, a fresh
           start of the system first): throughput and latency against concurrency,
           drawn with gnuplot into --plots (PNG)
Prints one table (and writes it to --out as JSON too). Every step has a timeout.
"""
import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEER_DIR = os.path.join(ROOT, "tests", "bench", "peers", "seed_fastapi")
PY = "/usr/bin/python3"


def log(*a):
    print("vs-seed:", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- processes ----------------------------------------------------------------------
class Procs:
    """Processes this run started; stopped by their own ids (process groups of ours)."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.items = []

    def start(self, name, args, env=None):
        out = open(os.path.join(self.logdir, name + ".log"), "ab")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             env=dict(os.environ, **(env or {})), start_new_session=True)
        self.items.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.items):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    log("%s did not stop in 15 s: killing it" % name)
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(5)
        self.items = []


def wait_health(url, timeout, want=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            r = requests.get(url + "/health", timeout=3)
            if r.status_code == 200 and (want is None or want(r.json())):
                return r.json()
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError("%s/health not ready in %s s" % (url, timeout))


class MariaDB:
    def __init__(self, work):
        self.env = {"SLUICE_MARIADB_DIR": os.path.join(work, "mariadb"),
                    "SLUICE_MARIADB_PORT": str(free_port()), "SLUICE_MARIADB_QUIET": "1"}
        self.settings = {}

    def cmd(self, *args, stdin=None, timeout=120):
        return subprocess.run([os.path.join(ROOT, "deploy/local/mariadb")] + list(args),
                              env=dict(os.environ, **self.env), stdin=stdin, timeout=timeout,
                              capture_output=True, text=True, check=True).stdout

    def start(self):
        for line in self.cmd("start").splitlines():
            if line.startswith("SLUICE_DB_") and "=" in line:
                k, v = line.split("=", 1)
                if k == "SLUICE_DB_PASSWORD_FILE":  # the generated password, kept 0600
                    with open(v) as f:
                        k, v = "SLUICE_DB_PASSWORD", f.read().strip()
                self.settings[k] = v

    def reset(self, schema):
        name = self.settings["SLUICE_DB_NAME"]
        self.cmd("sql", "-e", "DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s` CHARACTER SET utf8mb4"
                 % (name, name))
        if schema:
            with open(os.path.join(ROOT, "workers/db/migrations/001_initial.sql")) as f:
                self.cmd("sql", "-D", name, stdin=f)

    def stop(self):
        try:
            self.cmd("stop", timeout=60)
        except Exception as e:  # noqa: BLE001 - best effort at the end
            log("mariadb stop:", e)


class Peer:
    label = None

    def __init__(self, mode, args, procs, db):
        self.mode, self.args, self.procs, self.db = mode, args, procs, db
        self.label = "seed " + mode

    def start(self, port, processes=1):
        env = dict(self.db.settings, SEED_MODE=self.mode, SEED_TOKEN_DELAY_MS="20")
        self.procs.start("seed-%s-%d" % (self.mode, processes),
                         [PY, "-m", "uvicorn", "main:app", "--app-dir", PEER_DIR, "--host",
                          "127.0.0.1", "--port", str(port), "--workers", str(processes),
                          "--log-level", "warning", "--no-access-log", "--backlog", "4096"],
                         env=env)
        self.url = "http://127.0.0.1:%d" % port
        wait_health(self.url, 60)

    def reset_db(self):
        self.db.reset(schema=True)


class Sluice:
    def __init__(self, args, procs, db):
        self.args, self.procs, self.db = args, procs, db
        self.label = "Sluice"

    def bin(self, p):
        return os.path.join(self.args.build, p)

    def start(self, port, processes=1):
        fe, be, ein, eout = ("tcp://127.0.0.1:%d" % free_port() for _ in range(4))
        env = dict(self.db.settings)
        self.procs.start("broker", [self.bin("broker/sluice-broker"), "--frontend", fe, "--backend", be,
                                    "--events-in", ein, "--events-out", eout, "--log-level", "warn"])
        for n in (1, 2):
            self.procs.start("dbworker-%d" % n, [
                self.bin("workers/db/sluice-dbworker"), "--worker-name", "db-%d" % n, "--backend", be,
                "--events-in", ein, "--pool-size", str(self.args.sluice_pool), "--max-overflow", "0",
                "--argon2-opslimit", "1", "--argon2-memlimit-kib", "8", "--startup-wait-s", "30",
                "--log-level", "warn"], env=env)
        journal = tempfile.mkdtemp(prefix="journal-", dir=self.args.work)
        self.procs.start("streamworker", [
            self.bin("workers/stream/sluice-streamworker"), "--backend", be, "--frontend", fe,
            "--journal-dir", journal, "--provider", "echo", "--token-delay-ms", "20",
            "--max-streams", "5000", "--log-level", "warn"], env=env)
        for g in range(processes):
            self.procs.start("gateway-%d" % (g + 1), [
                self.bin("gateway/sluice-gateway"), "--host", "127.0.0.1", "--port", str(port),
                "--frontend", fe, "--events-out", eout, "--max-connections", "200000",
                "--ws-queue-max", "100000", "--log-level", "warn",
                # the fan-out holds up to 10,000 sockets of one user
                "--ws-max-per-user", "0", "--ws-max-per-device", "0"])
        self.url = "http://127.0.0.1:%d" % port
        wait_health(self.url, 60, lambda h: len(h.get("pools", [])) == 2 and
                    h.get("status") == "ok")

    def reset_db(self):
        self.db.reset(schema=False)  # the DB workers migrate it


# ---- helpers: accounts ----------------------------------------------------------------
def post(url, path, body, token=None, timeout=15):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    return requests.post(url + path, data=json.dumps(body), headers=h, timeout=timeout)


def make_user(url, name, devices):
    r = post(url, "/v1/users", {"username": name, "password": "password-1"})
    assert r.status_code in (201, 409), r.text

    def login(i):
        for _ in range(5):
            try:
                r = post(url, "/v1/sessions", {"username": name, "password": "password-1",
                                               "device_name": "d%d" % i}, timeout=30)
                if r.status_code == 201:
                    return r.json()["token"]
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError("login failed: %s" % name)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(login, range(devices)))


# ---- scenario: HTTP ------------------------------------------------------------------
GW_RE = re.compile(r"([\d.]+) req/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms; 2xx (\d+), "
                   r"503 (\d+) .*?other (\d+), later than deadline (\d+), reconnects (\d+)")


def gw_http(args, port, method, path, token, conns, seconds, body=None, deadline_ms=5000):
    cmd = [os.path.join(args.build, "tests/bench/gw_load"), "http", "--port", str(port), "--conns",
           str(conns), "--seconds", str(seconds), "--method", method, "--path", path, "--token",
           token, "--deadline-ms", str(deadline_ms)]
    if body:
        cmd += ["--body", body]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        return {"error": "gw_load timed out"}
    m = GW_RE.search(out)
    if not m:
        return {"error": out.strip()[:200] or "no output"}
    v = m.groups()
    return {"rps": float(v[0]), "p50": float(v[1]), "p99": float(v[2]), "max": float(v[3]),
            "ok": int(v[4]), "s503": int(v[5]), "other": int(v[6]), "late": int(v[7]),
            "reconnects": int(v[8])}


def scenario_http(args, sysm, port, writer, res):
    s = args.seconds
    res["post"] = gw_http(args, port, "POST", "/v1/clipboard", writer, args.conns, s,
                          body='{"content":"bench item"}')
    log(sysm.label, "POST", res["post"])
    res["get"] = gw_http(args, port, "GET", "/v1/clipboard?after=0&limit=20", writer, args.conns, s)
    log(sysm.label, "GET", res["get"])
    res["overload"] = gw_http(args, port, "POST", "/v1/clipboard", writer, args.overload, s,
                              body='{"content":"overload"}')
    log(sysm.label, "overload", res["overload"])


def scenario_curve(args, sysm, port, writer, res):
    """Ascending concurrency on one start of the system: a system that stalls at some
    concurrency shows it at that point and at every later one, as its users would."""
    curve = res.setdefault("curve", {})
    for c in args.curve:
        for key, method, path, body in (("post", "POST", "/v1/clipboard", '{"content":"curve"}'),
                                        ("get", "GET", "/v1/clipboard?after=0&limit=20", None)):
            r = gw_http(args, port, method, path, writer, c, args.curve_seconds, body=body)
            curve.setdefault(key, {})[c] = r
            log(sysm.label, "curve", method, c, r)


# ---- scenario: sockets held ---------------------------------------------------------------
def scenario_sockets(args, sysm, port, writer, fan_tokens_file, trigger, res):
    res["sockets"] = {}
    for n in args.sockets:
        if n > args.max_fds:
            res["sockets"][n] = {"skipped": "descriptor limit %d" % args.max_fds}
            continue
        step_timeout = 60 + n / 40.0
        cmd = [os.path.join(args.build, "tests/bench/gw_load"), "ws", "--port", str(port), "--conns",
               str(n), "--tokens", fan_tokens_file, "--hold-seconds", "3", "--fanout",
               str(args.fanout), "--trigger-token", trigger, "--sources", "8"]
        stop = threading.Event()
        wr = {"ok": 0, "other": 0, "late": 0, "p99": 0.0, "s503": 0, "errors": []}

        def writer_loop():
            while not stop.is_set():
                # 4 s slices: a slice without a single answer counts as a failure
                r = gw_http(args, port, "POST", "/v1/clipboard", writer, 4, 4,
                            body='{"content":"during sockets"}')
                if "error" in r:
                    wr["errors"].append(r["error"])
                    continue
                if r["ok"] + r["other"] + r["s503"] == 0:
                    wr["other"] += 1
                for k in ("ok", "other", "late", "s503"):
                    wr[k] += r[k]
                wr["p99"] = max(wr["p99"], r["p99"])

        t = threading.Thread(target=writer_loop)
        t.start()
        t0 = time.monotonic()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=step_timeout)
            text, timed_out = out.stdout + out.stderr, False
        except subprocess.TimeoutExpired as e:
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            timed_out = True
        stop.set()
        t.join(30)
        r = {"seconds": round(time.monotonic() - t0, 1), "timed_out": timed_out, "writer": wr}
        m = re.search(r"ws: (\d+) sockets open \((\d+) failed\) in ([\d.]+) s", text)
        if m:
            r["open"], r["failed"], r["open_s"] = int(m.group(1)), int(m.group(2)), float(m.group(3))
        m = re.search(r"fan-out to (\d+) sockets, (\d+) items: p50 ([\d.]+) ms, p99 ([\d.]+) ms", text)
        if m:
            r["notify_p50"], r["notify_p99"] = float(m.group(3)), float(m.group(4))
        m = re.search(r"round (\d+): only (\d+) of (\d+) sockets got the item", text)
        if m:
            r["fanout_short"] = "round %s: %s of %s" % m.groups()
        m = re.search(r"ws: (\d+) sockets were closed by the server", text)
        if m:
            r["closed_by_server"] = int(m.group(1))
        r["fail"] = bool(timed_out or r.get("failed", 1) or "fanout_short" in r or
                         "notify_p50" not in r or wr["other"] or wr["late"] or wr["s503"] or
                         r.get("closed_by_server"))
        res["sockets"][n] = r
        log(sysm.label, "sockets", n, r)
        # let the server notice the closed sockets before the next size
        try:
            wait_health(sysm.url, 120)
        except RuntimeError as e:
            r["after"] = str(e)
            log(sysm.label, "not healthy after the sockets:", e)
            break
        time.sleep(2)
        if r["fail"] and not args.keep_going:
            break


# ---- scenario: chat streams ---------------------------------------------------------------
async def one_stream(port, token, conv, words, timeout):
    body = json.dumps({"content": words, "stream": True}).encode()
    req = (b"POST /v1/chat/conversations/%s/messages HTTP/1.1\r\nHost: bench\r\n"
           b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (conv.encode(), token.encode(),
                                                                  len(body))) + body
    t0 = time.monotonic()
    writer = None
    try:
        async def run():
            nonlocal writer
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            if status >= 300:
                return "http %d" % status
            tail = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                tail = (tail + chunk)[-4096:]
                if b"event: done" in tail or b"event: error" in tail:
                    break
            if b"event: done" in tail or b'"status":"complete"' in tail:
                return "ok"
            if b"event: error" in tail:
                return "error event"
            return "cut"
        return await asyncio.wait_for(run(), timeout), time.monotonic() - t0
    except asyncio.TimeoutError:
        return "timeout", time.monotonic() - t0
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        return "conn: " + type(e).__name__, time.monotonic() - t0
    finally:
        if writer is not None:
            writer.close()


def scenario_chat(args, sysm, port, chat_token, writer, res):
    res["chat"] = {}
    words = " ".join("w%d" % i for i in range(args.words))
    for n in args.streams:
        # one conversation per stream, created beforehand
        def mk(_):
            for _ in range(3):
                try:
                    r = post(sysm.url, "/v1/chat/conversations", {}, token=chat_token, timeout=30)
                    if r.status_code == 201:
                        return r.json()["id"]
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            return None
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            convs = [c for c in ex.map(mk, range(n)) if c]
        if len(convs) < n:
            res["chat"][n] = {"error": "only %d of %d conversations created" % (len(convs), n),
                              "fail": True}
            break
        stop = threading.Event()
        probe = {"ok": 0, "failed": 0, "max_ms": 0.0}

        def prober():
            # gw_load (a process of its own, so the stream client's GIL never delays it):
            # one client POSTing back to back, in 3 s slices until the streams end; a
            # slice without a single answer counts as a failure (a request stuck > 3 s)
            while not stop.is_set():
                r = gw_http(args, port, "POST", "/v1/clipboard", writer, 1, 3,
                            body='{"content":"during chat"}')
                if "error" in r:
                    probe["failed"] += 1
                    continue
                if r["ok"] + r["other"] + r["s503"] == 0:
                    probe["failed"] += 1
                    probe["stuck"] = probe.get("stuck", 0) + 1
                probe["ok"] += r["ok"]
                probe["failed"] += r["other"] + r["s503"] + r["late"]
                for k in ("other", "s503", "late"):
                    probe[k] = probe.get(k, 0) + r[k]
                probe["max_ms"] = max(probe["max_ms"], r["max"])

        t = threading.Thread(target=prober)
        t.start()
        timeout = args.stream_timeout

        async def all_streams():
            return await asyncio.gather(*(one_stream(port, chat_token, c, words, timeout)
                                          for c in convs))
        t0 = time.monotonic()
        results = asyncio.run(all_streams())
        stop.set()
        t.join(10)
        outcomes = {}
        for o, _ in results:
            outcomes[o] = outcomes.get(o, 0) + 1
        durs = sorted(d for o, d in results if o == "ok")
        r = {"completed": outcomes.get("ok", 0), "failed": n - outcomes.get("ok", 0),
             "outcomes": outcomes, "seconds": round(time.monotonic() - t0, 1),
             "p50_s": round(durs[len(durs) // 2], 2) if durs else None,
             "max_s": round(durs[-1], 2) if durs else None, "probe": probe}
        r["fail"] = bool(r["failed"] or probe["failed"])
        res["chat"][n] = r
        log(sysm.label, "chat", n, r)
        try:
            wait_health(sysm.url, 90)
        except RuntimeError as e:
            r["after"] = str(e)
            break
        if r["fail"] and not args.keep_going:
            break


# ---- scenario: two server processes ---------------------------------------------------------
async def multi_run(ws_url, tokens, trigger, url, items):
    import websockets
    socks = []
    got = [0] * len(tokens)
    for tok in tokens:
        ws = await asyncio.wait_for(websockets.connect(ws_url + "/v1/sync/notify?token=" + tok,
                                                       max_size=1 << 20), 20)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert hello.get("type") == "hello", hello
        socks.append(ws)

    async def reader(i, ws):
        try:
            while True:
                m = json.loads(await ws.recv())
                if m.get("type") == "clipboard.item":
                    got[i] += 1
        except Exception:  # noqa: BLE001 - closed at the end
            pass
    tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(socks)]
    loop = asyncio.get_running_loop()
    statuses = []
    for k in range(items):
        r = await loop.run_in_executor(None, lambda: post(url, "/v1/clipboard",
                                                          {"content": "multi %d" % k}, trigger))
        statuses.append(r.status_code)
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)
    for ws in socks:
        await ws.close()
    for t in tasks:
        t.cancel()
    return got, statuses


def scenario_multi(args, sysm, port, res):
    tokens = make_user(sysm.url, "multi", args.multi_devices + 1)
    try:
        got, statuses = asyncio.run(asyncio.wait_for(
            multi_run("ws://127.0.0.1:%d" % port, tokens[1:], tokens[0], sysm.url, args.multi_items),
            120))
    except Exception as e:  # noqa: BLE001 - reported in the table
        res["multi"] = {"error": "%s: %s" % (type(e).__name__, e), "fail": True}
        log(sysm.label, "multi", res["multi"])
        return
    created = sum(1 for s in statuses if s == 201)
    r = {"devices": len(got), "items": created, "expected": len(got) * created,
         "delivered": sum(got), "complete_devices": sum(1 for g in got if g >= created)}
    r["fail"] = r["delivered"] < r["expected"] or created < args.multi_items
    res["multi"] = r
    log(sysm.label, "multi", r)


# ---- one system --------------------------------------------------------------------------
def pool_use(sysm):
    """The pools' checked_out and overflow as /health reports them (None when it does not
    answer in 10 s): whether a phase left connections checked out. Sluice's /health
    shows each DB worker's last heartbeat (one a second), so read it only after two
    more: at once it still shows the phase's own last requests at work."""
    time.sleep(2.5)
    try:
        h = requests.get(sysm.url + "/health", timeout=10).json()
        return sum(p.get("checked_out", 0) for p in h.get("pools", []))
    except (requests.RequestException, ValueError):
        return None


def run_system(args, sysm, db, port):
    """Each scenario on a freshly started system (the users stay in the database), so
    that a stall or a leak in one does not spill into the next."""
    res = {}
    sysm.reset_db()
    procs = sysm.procs
    accounts = {}

    def phase(name, fn):
        try:
            sysm.start(port, 2 if name == "multi" else 1)
            if not accounts:
                accounts["writer"] = make_user(sysm.url, "writer", 1)[0]
                need = min(max(args.sockets or [1]), 1000) + 1
                fan = make_user(sysm.url, "fan", need if "sockets" in args.scenarios else 2)
                accounts["fan"] = fan
                accounts["fan_file"] = os.path.join(args.work, "fan-%s.tokens" % sysm.label.replace(" ", "-"))
                with open(accounts["fan_file"], "w") as f:
                    f.write("\n".join(fan[1:]) + "\n")
                accounts["chat"] = make_user(sysm.url, "chatter", 1)[0]
            fn()
            res.setdefault("checked_out_after", {})[name] = pool_use(sysm)
        except Exception as e:  # noqa: BLE001 - one phase's failure must not end the run
            res.setdefault("errors", {})[name] = "%s: %s" % (type(e).__name__, e)
            log(sysm.label, name, "error:", res["errors"][name])
        finally:
            procs.stop_all()

    a = accounts
    if "http" in args.scenarios:
        phase("http", lambda: scenario_http(args, sysm, port, a["writer"], res))
    if "sockets" in args.scenarios:
        phase("sockets", lambda: scenario_sockets(args, sysm, port, a["writer"], a["fan_file"],
                                                  a["fan"][0], res))
    if "chat" in args.scenarios:
        phase("chat", lambda: scenario_chat(args, sysm, port, a["chat"], a["writer"], res))
    if "multi" in args.scenarios:
        phase("multi", lambda: scenario_multi(args, sysm, port, res))
    if "curve" in args.scenarios:
        phase("curve", lambda: scenario_curve(args, sysm, port, a["writer"], res))
    return res


# ---- the curve: its table and plots ------------------------------------------------------
def md_table(head, rows):
    """A Markdown table; a "|" inside a cell becomes "/"."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(out)


FEW = 50  # fewer 2xx answers in a phase than this: a stall, not a throughput or a latency


def curve_point(r):
    """(req/s, p50, p99) of a curve point with FEW or more 2xx answers, else None."""
    if not r or "error" in r or r.get("ok", 0) < FEW:
        return None
    return r["rps"], r["p50"], r["p99"]


def curve_table(args, results, labels):
    head = ["clients"] + ["%s %s" % (l, k.upper()) for l in labels for k in ("post", "get")]
    rows = []
    for c in args.curve:
        row = [str(c)]
        for l in labels:
            for k in ("post", "get"):
                r = results[l].get("curve", {}).get(k, {}).get(c)
                row.append(fmt_http(r) if r else "-")
        rows.append(row)
    return md_table(head, rows)


def curve_plots(args, results, labels):
    """Two PNGs in args.plots: throughput, and p50/p99 latency, against concurrency,
    one line per system and route (log scales: the systems differ by 10x and more).
    A point with fewer than FEW answers (a stall) is left out: a line ends there."""
    gp = shutil.which("gnuplot")
    if not gp:
        log("gnuplot is missing (deploy/install-deps bench installs it): no plots")
        return []
    os.makedirs(args.plots, exist_ok=True)
    series = []
    for l in labels:
        for k in ("post", "get"):
            pts = [(c, curve_point(results[l].get("curve", {}).get(k, {}).get(c))) for c in args.curve]
            name = os.path.join(args.work, "curve-%s-%s.dat" % (l.replace(" ", "-"), k))
            with open(name, "w") as f:
                for c, p in pts:
                    f.write("%d %s\n" % (c, "%.1f %.3f %.3f" % p if p else "NaN NaN NaN"))
            series.append((name, "%s %s" % (l, k.upper())))
    when = time.strftime("%Y-%m-%d %H:%M UTC")
    common = ('set terminal pngcairo size 900,560 font "sans,10"\n'
              'set logscale x 2\nset logscale y\nset grid\nset key outside right\n'
              'set xlabel "concurrent clients (keep-alive, one request in flight each)"\n'
              'set datafile missing "NaN"\n')
    tput = os.path.join(args.plots, "vs-seed-throughput.png")
    lat = os.path.join(args.plots, "vs-seed-latency.png")
    script = common + 'set output "%s"\nset ylabel "requests/s"\n' % tput
    script += ('set title "Throughput against concurrency (tests/bench/vs-seed, %s, %g s a point)\\n'
               'a line ends where the system stopped answering"\n' % (when, args.curve_seconds))
    script += "plot " + ", ".join('"%s" using 1:2 with linespoints title "%s"' % (f, t)
                                  for f, t in series) + "\n"
    script += 'set output "%s"\nset ylabel "latency, ms (solid p99, dashed p50)"\n' % lat
    script += ('set title "Latency against concurrency (tests/bench/vs-seed, %s)\\n'
               'a line ends where the system stopped answering"\n' % when)
    parts = []
    for i, (f, t) in enumerate(series):
        parts.append('"%s" using 1:4 with linespoints lc %d dt 1 title "%s p99"' % (f, i + 1, t))
        parts.append('"%s" using 1:3 with lines lc %d dt 2 notitle' % (f, i + 1))
    script += "plot " + ", ".join(parts) + "\n"
    r = subprocess.run([gp], input=script, text=True, capture_output=True, timeout=60)
    if r.returncode != 0:
        log("gnuplot failed: %s" % r.stderr.strip()[:300])
        return []
    return [tput, lat]


# ---- the table ------------------------------------------------------------------------------
def fmt_http(r):
    if not r:
        return "-"
    if "error" in r:
        return "error: " + r["error"][:40]
    if r.get("ok", 0) < FEW:
        return "stalled: %d answered in the phase" % r.get("ok", 0)
    bad = r["other"] + r["s503"]
    s = "%.0f/s p50 %.1f p99 %.1f ms" % (r["rps"], r["p50"], r["p99"])
    if bad or r["late"]:
        s += " (%d non-2xx, %d >5s)" % (bad, r["late"])
    return s


def fmt_sock(r):
    if not r:
        return "-"
    if "skipped" in r:
        return "skipped (" + r["skipped"] + ")"
    parts = []
    if "open" in r:
        parts.append("%d open/%d failed" % (r["open"], r["failed"]))
    if r.get("timed_out"):
        parts.append("step timed out")
    if "notify_p50" in r:
        parts.append("notify p50 %.0f p99 %.0f ms" % (r["notify_p50"], r["notify_p99"]))
    if "fanout_short" in r:
        parts.append("notify: " + r["fanout_short"])
    w = r["writer"]
    parts.append("writes %d ok/%d failed" % (w["ok"], w["other"] + w["s503"] + w["late"]))
    return ("FAIL: " if r["fail"] else "ok: ") + ", ".join(parts)


def fmt_chat(r):
    if not r:
        return "-"
    if "error" in r:
        return "error: " + r["error"]
    s = "%d done/%d failed" % (r["completed"], r["failed"])
    if r["failed"]:
        s += " (" + ", ".join("%s %d" % (k, v) for k, v in r["outcomes"].items() if k != "ok") + ")"
    if r["p50_s"] is not None:
        s += ", answer p50 %.1f s" % r["p50_s"]
    p = r["probe"]
    s += "; clipboard %d ok/%d failed" % (p["ok"], p["failed"])
    if p["failed"]:
        s += " (503: %d, other non-2xx: %d, >5 s: %d, none answered in a 3 s slice: %d)" % (
            p.get("s503", 0), p.get("other", 0), p.get("late", 0), p.get("stuck", 0))
    s += ", max %.0f ms" % p["max_ms"]
    return s


def fmt_multi(r):
    if not r:
        return "-"
    if "error" in r:
        return "error: " + r["error"][:60]
    return "%d of %d delivered; %d of %d devices got all %d" % (
        r["delivered"], r["expected"], r["complete_devices"], r["devices"], r["items"])


def not_run(d):
    failed = [n for n in sorted(d) if d[n].get("fail")]
    return "not run (failed at %d; --keep-going runs it)" % failed[0] if failed else "-"


def first_failure(d):
    for n in sorted(d):
        if d[n].get("fail"):
            return str(n)
    return "none of " + ",".join(str(n) for n in sorted(d)) if d else "-"


def ratio(a, b, key, inverse=False):
    try:
        x, y = a[key], b[key]
        if inverse:
            x, y = y, x
        if not y:
            return "seed fixed: 0/s" if not inverse else "-"
        return "%.1fx" % (x / y)
    except (KeyError, TypeError):
        return "-"


def table(args, results, labels):
    rows = []
    head = ["scenario"] + labels
    sl = results.get("Sluice")
    fx = results.get("seed fixed")
    with_ratio = sl is not None and fx is not None
    if with_ratio:
        head.append("Sluice / seed fixed")
    if "http" in args.scenarios:
        for key, name in (("post", "POST /v1/clipboard, %d clients" % args.conns),
                          ("get", "GET /v1/clipboard?limit=20, %d clients" % args.conns),
                          ("overload", "POST, %d clients (overload)" % args.overload)):
            row = [name] + [fmt_http(results[l].get(key)) for l in labels]
            if with_ratio:
                a, b = sl.get(key) or {}, fx.get(key) or {}
                if b.get("ok", 0) < FEW:
                    row.append("seed fixed answered %s requests: no ratio" % b.get("ok", "no"))
                else:
                    row.append("throughput %s, p99 %s lower" % (ratio(a, b, "rps"),
                                                                ratio(a, b, "p99", True)))
            rows.append(row)
    if "sockets" in args.scenarios:
        for n in args.sockets:
            row = ["%d notify sockets + writes" % n] + [
                fmt_sock(results[l].get("sockets", {}).get(n)) if n in results[l].get("sockets", {})
                else not_run(results[l].get("sockets", {})) for l in labels]
            if with_ratio:
                row.append("")
            rows.append(row)
        row = ["sockets: first failing count"] + [first_failure(results[l].get("sockets", {}))
                                                   for l in labels]
        if with_ratio:
            row.append("")
        rows.append(row)
    if "chat" in args.scenarios:
        for n in args.streams:
            row = ["%d chat streams (%d words)" % (n, args.words)] + [
                fmt_chat(results[l].get("chat", {}).get(n)) if n in results[l].get("chat", {})
                else not_run(results[l].get("chat", {})) for l in labels]
            if with_ratio:
                row.append("")
            rows.append(row)
    if "multi" in args.scenarios:
        row = ["2 processes: %d devices x %d items" % (args.multi_devices, args.multi_items)] + [
            fmt_multi(results[l].get("multi")) for l in labels]
        if with_ratio:
            row.append("")
        rows.append(row)
    row = ["pool checked_out after http/sockets/chat"] + [
        "/".join(str(results[l].get("checked_out_after", {}).get(k, "-"))
                 for k in ("http", "sockets", "chat")) for l in labels]
    rows.append(row + ([""] if with_ratio else []))
    for l in labels:
        for phase_, err in results[l].get("errors", {}).items():
            rows.append(["error: %s, %s" % (l, phase_)] + [err[:120] if x == l else "" for x in labels] +
                        ([""] if with_ratio else []))
    return md_table(head, rows)


def main():
    ap = argparse.ArgumentParser(
        prog="tests/bench/vs-seed",
        description="Sluice side by side with the seed FastAPI application (buggy and fixed), "
                    "same port, same MariaDB, one table. Figures from a busy 2-core machine "
                    "are indicative: read the ratios.")
    ap.add_argument("--quick", action="store_true", help="a run of a few minutes: small sizes, short phases")
    ap.add_argument("--systems", default="buggy,fixed,sluice",
                    help="which systems, in order (buggy, fixed, sluice; default all)")
    ap.add_argument("--scenarios", default="http,sockets,chat,multi,curve",
                    help="which scenarios (http, sockets, chat, multi, curve; default all)")
    ap.add_argument("--curve", help="client concurrencies of the curve scenario "
                    "(default 1,4,16,64,240; quick 1,4,16,64)")
    ap.add_argument("--curve-seconds", type=float, help="seconds per curve point (default 5, quick 3)")
    ap.add_argument("--plots", default=os.path.join(ROOT, "docs", "img"),
                    help="where the curve's PNGs go (default docs/img)")
    ap.add_argument("--seconds", type=float, help="seconds per HTTP phase (default 10, quick 4)")
    ap.add_argument("--conns", type=int, default=16, help="HTTP client concurrency (default 16)")
    ap.add_argument("--overload", type=int, default=240,
                    help="overload concurrency (default 240: 8x the fixed seed's 30 connections)")
    ap.add_argument("--sockets", help="notify socket counts (default 10,30,100,1000,10000; quick 10,30,100,1000)")
    ap.add_argument("--fanout", type=int, default=3, help="items sent to the held sockets (default 3)")
    ap.add_argument("--streams", help="concurrent chat streams (default 10,50,100,1000; quick 10,50,100)")
    ap.add_argument("--words", type=int, help="words per echo answer, 20 ms each (default 200, quick 100)")
    ap.add_argument("--stream-timeout", type=float, default=120, help="seconds a stream may take (default 120)")
    ap.add_argument("--multi-devices", type=int, default=20, help="devices in the two-process test")
    ap.add_argument("--multi-items", type=int, default=10, help="items in the two-process test")
    ap.add_argument("--sluice-pool", type=int, default=4,
                    help="pool_size of each of Sluice's two DB workers (default 4: 8 connections)")
    ap.add_argument("--keep-going", action="store_true",
                    help="try the larger sizes after a system failed one (slow: a failing buggy "
                         "seed blocks its event loop 3 s per socket)")
    ap.add_argument("--port", type=int, default=0, help="HTTP port for every system (default: a free one)")
    ap.add_argument("--build", default=os.environ.get("SLUICE_BUILD_DIR", os.path.join(ROOT, "build-vs-seed")))
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    q = args.quick
    args.seconds = args.seconds or (4 if q else 10)
    args.sockets = [int(x) for x in (args.sockets or ("10,30,100,1000" if q else "10,30,100,1000,10000")).split(",") if x]
    args.streams = [int(x) for x in (args.streams or ("10,50,100" if q else "10,50,100,1000")).split(",") if x]
    args.words = args.words or (100 if q else 200)
    args.curve = [int(x) for x in (args.curve or ("1,4,16,64" if q else "1,4,16,64,240")).split(",") if x]
    args.curve_seconds = args.curve_seconds or (3 if q else 5)
    args.scenarios = args.scenarios.split(",")
    args.build = os.path.abspath(args.build)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except ValueError:
        pass
    args.max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1000
    args.work = tempfile.mkdtemp(prefix="vs-seed.", dir=args.build)
    port = args.port or free_port()
    log("work dir %s, port %d, descriptor limit %d" % (args.work, port, args.max_fds + 1000))
    db = MariaDB(args.work)
    procs = Procs(args.work)
    results, labels = {}, []
    started = time.time()
    try:
        db.start()
        for name in args.systems.split(","):
            sysm = Sluice(args, procs, db) if name == "sluice" else Peer(name, args, procs, db)
            labels.append(sysm.label)
            log("=== %s" % sysm.label)
            results[sysm.label] = run_system(args, sysm, db, port)
    finally:
        procs.stop_all()
        db.stop()
        shutil.rmtree(db.env["SLUICE_MARIADB_DIR"], ignore_errors=True)  # logs stay
    load = open("/proc/loadavg").read().split()[:3]
    print()
    print("vs-seed, %s, %d cores, load average %s; %.0f s. Figures from a shared, busy machine "
          "are indicative: compare the systems within this run (ratios), not across runs."
          % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), os.cpu_count(),
             " ".join(load), time.time() - started))
    print("Sluice: 1 gateway (2 in the two-process row), broker, 2 DB workers x pool %d (no overflow), "
          "stream worker (echo). Seed: uvicorn, 1 process (2 in the two-process row); buggy pool "
          "20+5/3 s (chat 5+10/30 s), fixed 20+10/30 s (chat 20+30/60 s)." % args.sluice_pool)
    print()
    print(table(args, results, labels))
    if "curve" in args.scenarios:
        print()
        print("Throughput and latency against concurrency (%g s a point):" % args.curve_seconds)
        print()
        print(curve_table(args, results, labels))
        for png in curve_plots(args, results, labels):
            print("plot: %s" % os.path.relpath(png, ROOT))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "results": results}, f,
                      indent=1, default=str)
    logs = args.work
    log("logs in %s" % logs)


if __name__ == "__main__":
    main()
