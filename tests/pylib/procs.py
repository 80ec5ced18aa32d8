"""Start and stop Sluice processes for tests: free ports, logs kept per process,
and a stop that insists on a clean exit (SIGTERM must drain and exit 0)."""
import os
import signal
import socket
import subprocess
import tempfile
import time

BUILD_DIR = os.environ.get("SLUICE_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE_DIR = os.environ.get("SLUICE_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

BINARIES = {
    "broker": "broker/sluice-broker",
    "dbworker": "workers/db/sluice-dbworker",
    "streamworker": "workers/stream/sluice-streamworker",
    "gateway": "gateway/sluice-gateway",
}


def binary(name):
    """Path of a built binary by short name (broker, dbworker, gateway, ...)."""
    return os.path.join(BUILD_DIR, BINARIES.get(name, name))


_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago. Taken below the kernel's
    ephemeral range (32768 and up here), so that no outgoing connection of another
    process (a client of MariaDB, a DEALER) can take it as its source port between
    now and the bind of whoever asked; never the same port twice in one run."""
    import random
    for _ in range(1000):
        port = random.randrange(10000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free TCP port found in 10000-31999")


def tcp(port):
    return "tcp://127.0.0.1:%d" % port


def wait_port(port, timeout=10.0):
    """Wait until something accepts TCP connections on port."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listening on port %d after %.1fs" % (port, timeout))


# what AddressSanitizer, LeakSanitizer and UBSan print when they find something
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error: ")


class Proc:
    """A child process with its stderr/stdout in a log file.

    Proc(args, env=None, name=None) starts it. stop() sends SIGTERM and asserts a
    clean exit (status 0) within timeout; kill() sends SIGKILL. log() returns what
    it wrote so far (for assertions and for failure messages)."""

    def __init__(self, args, env=None, name=None, log_dir=None):
        self.args = [str(a) for a in args]
        self.name = name or os.path.basename(self.args[0])
        full_env = dict(os.environ)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        log_dir = log_dir or os.environ.get("SLUICE_TEST_LOG_DIR") or tempfile.gettempdir()
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, "%s-%d-%d.log" % (self.name, os.getpid(), id(self)))
        self._log = open(self.log_path, "wb")
        self.killed = False  # kill() was called: its exit status is the test's doing
        self.popen = subprocess.Popen(self.args, env=full_env, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def finish(self, timeout=15.0):
        """The end of a test's process: one the test killed (kill()) is reaped; any
        other must exit 0 on SIGTERM with no sanitizer report, including one that
        already died on its own (so a crash is never passed over)."""
        if self.killed:
            self.kill()
            return None
        return self.stop(timeout=timeout)

    def stop(self, timeout=15.0, check=True):
        """SIGTERM, wait, and (check=True) assert exit status 0 and no sanitizer
        report in the log."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            self._log.close()
            raise AssertionError("%s did not exit within %.0fs of SIGTERM; log:\n%s"
                                 % (self.name, timeout, self.log()[-4000:]))
        self._log.close()
        if check and rc != 0:
            raise AssertionError("%s exited with %d after SIGTERM; log:\n%s"
                                 % (self.name, rc, self.log()[-4000:]))
        if check:
            log = self.log()
            for mark in SANITIZER_MARKS:
                if mark in log:
                    at = log.index(mark)
                    raise AssertionError("%s: sanitizer report in its log:\n%s"
                                         % (self.name, log[max(0, at - 200):at + 3000]))
        return rc

    def kill(self):
        self.killed = True
        if self.alive():
            self.popen.kill()
        self.popen.wait()
        self._log.close()

    def wait_log(self, text, timeout=10.0):
        """Wait until the process has logged text; fail with the log otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return
            if not self.alive():
                break
            time.sleep(0.02)
        raise AssertionError("%s never logged %r; log:\n%s" % (self.name, text, self.log()[-4000:]))
