"""deploy/local/run survives what the product survives (issue 16, section 6).

The command is run as a user runs it (with an isolated var folder and free ports, and
the binaries of this build), a steady write load goes through its gateway, and each
kind of process it started is killed with SIGKILL in turn: the broker, a DB worker,
the stream worker, the gateway and MariaDB. After each kill:

- the dead process is started again (a new pid in var/run/NAME.pid, ready again) and
  run says why it died;
- the stack serves again: a write is acknowledged (201) after the kill;
- at the end every write that was acknowledged (201) is in the list, read page by
  page until next_after stops advancing;
- SIGTERM still stops everything and run exits 0.

A second test makes a process die at every start (its port taken) and checks that
run gives up, says so, and stops everything else; a third that Ctrl-C (SIGINT to the
whole process group) stops everything.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

import procs

RUN = os.path.join(procs.SOURCE_DIR, "deploy", "local", "run")
# generous: under ASan on two busy cores a restart (MariaDB's crash recovery, the
# DB workers' reconnect backoff) takes seconds; measured figures are printed
SERVE_AGAIN_S = 45


def free_port_run(n):
    """The first of n consecutive free TCP ports (the broker takes base..base+3)."""
    for _ in range(200):
        base = procs.free_port()
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no %d consecutive free ports" % n)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive: run reaps its children, so a zombie is not ours to wait
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalRun:
    """deploy/local/run in a private var folder, on free ports."""

    def __init__(self, **extra_env):
        base = os.path.join(procs.BUILD_DIR, "test-local-run")
        os.makedirs(base, exist_ok=True)
        self.var = tempfile.mkdtemp(prefix="var-", dir=base)
        self.http_port = procs.free_port()
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.env = dict(os.environ)
        self.env.update({
            "SLUICE_VAR_DIR": self.var,
            "SLUICE_HTTP_PORT": str(self.http_port),
            "SLUICE_BASE_PORT": str(free_port_run(4)),
            "SLUICE_MARIADB_PORT": str(procs.free_port()),
            "SLUICE_BUILD": os.path.abspath(procs.BUILD_DIR),
            "SLUICE_NO_BUILD": "1",
            "SLUICE_PROVIDER": "echo",
        })
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.env.update(extra_env)
        self.out_path = os.path.join(self.var, "run.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([RUN], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_running(self, timeout=240):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "Sluice is running" in self.output():
                return
            assert self.proc.poll() is None, "run exited:\n" + self.output()
            time.sleep(0.2)
        raise AssertionError("run did not start in %ds:\n%s" % (timeout, self.output()))

    def pid(self, name):
        path = (os.path.join(self.var, "mariadb", "mariadbd.pid") if name == "mariadb"
                else os.path.join(self.var, "run", name + ".pid"))
        try:
            with open(path) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def log(self, name):
        path = (os.path.join(self.var, "mariadb", "mariadbd.log") if name == "mariadb"
                else os.path.join(self.var, "log", name + ".log"))
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def all_pids(self):
        pids = {}
        for f in os.listdir(os.path.join(self.var, "run")):
            if f.endswith(".pid"):
                pids[f[:-4]] = self.pid(f[:-4])
        pids["mariadb"] = self.pid("mariadb")
        return pids

    def terminate(self, timeout=120):
        """SIGTERM to run (as Ctrl-C's sibling); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError("run did not stop in %ds:\n%s" % (timeout, self.output()))

    def cleanup(self):
        """Whatever a failed test left running: run's process group, and MariaDB
        (which runs in its own session)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        leftover = [p for p in self.all_pids().values() if p and alive(p)]
        for p in leftover:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.out.close()
        shutil.rmtree(self.var, ignore_errors=True)
        return leftover


class Writers:
    """Threads posting clipboard items as fast as they are answered; every 201 is
    remembered with the time it came back."""

    def __init__(self, url, token, threads=3):
        self.url, self.token = url, token
        self.acked = {}          # id -> content
        self.acked_at = []       # monotonic times of 201s
        self.failures = 0
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, n):
        s = requests.Session()
        s.headers["Authorization"] = "Bearer " + self.token
        i = 0
        while not self.stop_flag.is_set():
            i += 1
            content = "w%d-%d" % (n, i)
            try:
                r = s.post(self.url + "/v1/clipboard", json={"content": content}, timeout=20)
            except requests.RequestException:
                with self.lock:
                    self.failures += 1
                s.close()
                time.sleep(0.05)
                continue
            if r.status_code == 201:
                with self.lock:
                    self.acked[r.json()["id"]] = content
                    self.acked_at.append(time.monotonic())
            else:
                with self.lock:
                    self.failures += 1
                time.sleep(0.05)

    def acked_since(self, t):
        with self.lock:
            return sum(1 for a in self.acked_at if a > t)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def login(url):
    r = requests.post(url + "/v1/users", json={"username": "ann", "password": "correct-horse"},
                      timeout=60)
    assert r.status_code == 201, r.text
    r = requests.post(url + "/v1/sessions", json={"username": "ann", "password": "correct-horse",
                                                  "device_name": "laptop"}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def list_all(url, token):
    """Every item, page by page; the list ends only when next_after stops advancing
    (a short page is not the end: pages are cut by bytes too)."""
    items, after = {}, 0
    while True:
        r = requests.get(url + "/v1/clipboard", params={"after": after, "limit": 100},
                         headers={"Authorization": "Bearer " + token}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        for it in body["items"]:
            items[it["id"]] = it["content"]
        if body["next_after"] == after:
            return items
        after = body["next_after"]


def chat_answers(url, token):
    try:
        r = requests.post(url + "/v1/chat/conversations", json={},
                          headers={"Authorization": "Bearer " + token}, timeout=20)
        if r.status_code != 201:
            return False
        r = requests.post(url + "/v1/chat/conversations/%s/messages" % r.json()["id"],
                          json={"content": "still there", "stream": False},
                          headers={"Authorization": "Bearer " + token}, timeout=30)
        return r.status_code == 201
    except requests.RequestException:
        return False


def ready_again(stack, name, old_pid, ready_lines_before):
    """A new pid in the pid file, alive, and one more ready line in its log."""
    if name == "mariadb":
        pid = stack.pid(name)
        return pid and pid != old_pid and alive(pid)
    word = "listening" if name in ("broker",) or name.startswith("gateway") else "serving"
    pid = stack.pid(name)
    return (pid and pid != old_pid and alive(pid)
            and stack.log(name).count(word) > ready_lines_before)


def ready_lines(stack, name):
    if name == "mariadb":
        return 0
    word = "listening" if name in ("broker",) or name.startswith("gateway") else "serving"
    return stack.log(name).count(word)


@pytest.fixture
def stack():
    stacks = []

    def make(**env):
        s = LocalRun(**env)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        left = s.cleanup()
        assert not left, "processes left running after the test: %s" % left


KILLS = ["broker", "dbworker-1", "streamworker", "gateway-1", "mariadb"]


def test_kill_each_process_under_write_load(stack):
    s = stack()
    s.wait_running()
    token = login(s.url)
    writers = Writers(s.url, token)
    figures = []
    try:
        end = time.monotonic() + 60
        while writers.acked_since(0) < 20:
            assert time.monotonic() < end, "no writes acknowledged before any kill"
            time.sleep(0.1)
        for name in KILLS:
            old = s.pid(name)
            assert old and alive(old), "%s is not running (pid file %r)" % (name, old)
            before = ready_lines(s, name)
            t0 = time.monotonic()
            os.kill(old, signal.SIGKILL)
            # the stack must serve again: a new write acknowledged after the kill ...
            served = restarted = None
            while time.monotonic() - t0 < SERVE_AGAIN_S:
                now = time.monotonic()
                if served is None and writers.acked_since(t0 + 0.2) > 0:
                    served = now - t0
                if restarted is None and ready_again(s, name, old, before):
                    restarted = now - t0
                if served is not None and restarted is not None:
                    break
                assert s.proc.poll() is None, "run exited after %s was killed:\n%s" % (
                    name, s.output())
                time.sleep(0.1)
            assert restarted is not None, "%s was not started again in %ds:\n%s" % (
                name, SERVE_AGAIN_S, s.output())
            assert served is not None, "no write acknowledged within %ds of killing %s:\n%s" % (
                SERVE_AGAIN_S, name, s.output())
            if name == "streamworker":
                end = time.monotonic() + SERVE_AGAIN_S
                while not chat_answers(s.url, token):
                    assert time.monotonic() < end, "chat does not answer after the restart"
                    time.sleep(0.5)
            # ... and the others kept running (none of them was restarted)
            figures.append((name, served, restarted))
            # let a few writes through before the next kill
            t1 = time.monotonic()
            while writers.acked_since(t1) < 5:
                assert time.monotonic() - t1 < SERVE_AGAIN_S, "writes stopped after %s" % name
                time.sleep(0.1)
    finally:
        writers.stop()
    for name, served, restarted in figures:
        print("killed %-12s served again after %.1fs, restarted and ready after %.1fs"
              % (name, served, restarted))

    out = s.output()
    for name in KILLS[:-1]:
        assert re.search(r"%s \(pid \d+\) was killed by signal 9 \(KILL\)" % name, out), out
    assert re.search(r"mariadb \(pid \d+\) died", out), out

    items = list_all(s.url, token)
    lost = {i: c for i, c in writers.acked.items() if items.get(i) != c}
    print("acknowledged writes: %d, failed or refused attempts: %d"
          % (len(writers.acked), writers.failures))
    assert not lost, "acknowledged writes missing after the kills: %s" % sorted(lost)[:20]

    pids = s.all_pids()
    assert s.terminate() == 0, s.output()
    still = {n: p for n, p in pids.items() if p and alive(p)}
    assert not still, "still running after SIGTERM: %s" % still
    out = s.output()
    assert "stopped; logs are in" in out, out
    # every process (the restarted ones too) exited 0 on SIGTERM: run names any other
    assert not re.search(r"exited with \d+ \(see", out), out
    for name in os.listdir(os.path.join(s.var, "log")):
        text = open(os.path.join(s.var, "log", name), errors="replace").read()
        assert "Sanitizer" not in text and "runtime error:" not in text, (name, text[-3000:])


def test_gives_up_on_a_process_that_keeps_dying_at_start(stack):
    """The gateway's port is taken while it is down: every start fails. run says
    so after a few tries, stops the others and exits non-zero."""
    s = stack()
    s.wait_running()
    pids = s.all_pids()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        end = time.monotonic() + 60
        while True:
            gw = s.pid("gateway-1")
            if gw and alive(gw):
                os.kill(gw, signal.SIGKILL)
            try:
                blocker.bind(("127.0.0.1", s.http_port))
                blocker.listen(1)
                break
            except OSError:
                assert time.monotonic() < end, "could not take the gateway's port"
                time.sleep(0.01)
        try:
            rc = s.proc.wait(180)
        except subprocess.TimeoutExpired:
            raise AssertionError("run did not give up:\n" + s.output())
    finally:
        blocker.close()
    out = s.output()
    assert rc != 0, out
    assert re.search(r"gateway-1 keeps dying at start", out), out
    assert "giving up" in out, out
    still = {n: p for n, p in pids.items() if p and alive(p)}
    assert not still, "still running after run gave up: %s\n%s" % (still, out)


def test_ctrl_c_stops_everything(stack):
    """Ctrl-C in a terminal is SIGINT to the whole foreground process group: run and
    every process it started at once. run stops them all (none is taken for dead and
    started again), then MariaDB, and exits 0."""
    s = stack()
    s.wait_running()
    pids = s.all_pids()
    os.killpg(s.proc.pid, signal.SIGINT)
    try:
        rc = s.proc.wait(120)
    except subprocess.TimeoutExpired:
        raise AssertionError("run did not stop on SIGINT:\n" + s.output())
    out = s.output()
    assert rc == 0, out
    assert "starting it again" not in out, out
    assert "mariadb stopped" in out, out
    still = {n: p for n, p in pids.items() if p and alive(p)}
    assert not still, "still running after Ctrl-C: %s\n%s" % (still, out)
