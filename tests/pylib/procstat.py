"""Resident memory and open file descriptors of running processes, sampled once a
second from /proc, for the soak test (tests/soak/).

    mon = Sampler()
    mon.watch("gateway", stack.gateway.proc)    # any object with .pid and .alive()
    mon.start()                                 # a thread: one sample a second
    ...
    mon.stop()
    mon.series("gateway")                       # [(t, rss_kib, fds), ...]
    procstat.rss_kib(pid), procstat.fds(pid)    # one reading, now

A name may be watched again with a new process (a DB worker killed and started
again): each process gets its own series, under "name#2", "name#3", ...
"""
import os
import threading
import time


def rss_kib(pid):
    """VmRSS of pid in KiB, or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def fds(pid):
    """How many file descriptors pid has open, or None when it is gone."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


class Sampler:
    def __init__(self, period_s=1.0):
        self.period_s = period_s
        self._lock = threading.Lock()
        self._procs = {}    # series name -> proc
        self._series = {}   # series name -> [(t, rss_kib, fds)]
        self._gen = {}      # name -> how many processes watched under it
        self._stop = threading.Event()
        self._thread = None
        self.t0 = time.monotonic()

    def watch(self, name, proc):
        """Samples proc from now on; returns the series name it is kept under."""
        with self._lock:
            n = self._gen.get(name, 0) + 1
            self._gen[name] = n
            key = name if n == 1 else "%s#%d" % (name, n)
            self._procs[key] = proc
            self._series[key] = []
        self.sample_one(key)
        return key

    def sample_one(self, key):
        proc = self._procs[key]
        if not proc.alive():
            return None
        r, f = rss_kib(proc.pid), fds(proc.pid)
        if r is None or f is None:
            return None
        row = (time.monotonic() - self.t0, r, f)
        with self._lock:
            self._series[key].append(row)
        return row

    def _run(self):
        while not self._stop.wait(self.period_s):
            with self._lock:
                keys = list(self._procs)
            for k in keys:
                self.sample_one(k)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def names(self):
        with self._lock:
            return list(self._series)

    def series(self, key):
        with self._lock:
            return list(self._series[key])

    def now(self):
        return time.monotonic() - self.t0
