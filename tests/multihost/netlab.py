"""Hosts on one machine for the multi-host test: Linux network namespaces joined by
veth pairs to a bridge, all under one unique name prefix.

    lab = Lab()                      # prefix mh<pid>-, nothing created yet
    lab.create()                     # the switch namespace with bridge br0 (10.77.0.1)
    ip = lab.host("b1", 11)          # namespace mh<pid>-b1, eth0 = 10.77.0.11/24
    Proc(lab.run("b1") + [binary, ...])  # a process on that host
    lab.cut("b1") / lab.restore("b1")    # ip link set <b1's bridge port> down / up
    lab.enter()                      # this thread's new sockets live on the switch host
    requests.get("http://10.77.0.41:8080/health"); lab.leave()
    lab.destroy()                    # every namespace, hence every veth and the bridge

Nothing is created in the root namespace: the bridge and the host side of every veth
live in the switch namespace, so deleting the namespaces removes everything. The
switch namespace doubles as the client host (the test's own sockets), entered with
setns(2) for the calling thread (and threads it starts afterwards).

Namespaces of earlier runs whose process is gone (a killed test) are removed by
sweep(), with the processes still running inside them (ours: only this test starts
processes there).
"""
import ctypes
import os
import re
import signal
import subprocess
import time

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s failed: %s" % (" ".join(args), r.stderr.decode().strip()))
    return r


def unavailable_reason():
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); running as uid %d" % os.geteuid()
    name = "mhprobe%d" % os.getpid()
    r = _ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return "ip netns add failed: %s" % r.stderr.decode().strip()
    try:
        r = _ip("-n", name, "link", "add", "br0", "type", "bridge", check=False)
        if r.returncode != 0:
            return "cannot create a bridge in a namespace: %s" % r.stderr.decode().strip()
    finally:
        _ip("netns", "del", name, check=False)
    return None


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def _namespaces():
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.decode().splitlines() if line.strip()]


def _kill_inside(ns):
    r = _ip("netns", "pids", ns, check=False)
    for pid in r.stdout.decode().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep():
    """Removes namespaces left by runs of this test whose process is gone."""
    for ns in _namespaces():
        m = re.match(r"^mh(\d+)-", ns)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and os.path.exists("/proc/%d" % pid):
            continue  # a run in progress (the other build's, perhaps)
        _kill_inside(ns)
        _ip("netns", "del", ns, check=False)


class Lab:
    def __init__(self):
        self.prefix = "mh%d-" % os.getpid()
        self.switch = self.prefix + "switch"
        self.hosts = {}  # short name -> address
        self.created = []

    def ns(self, name):
        return self.prefix + name

    def create(self):
        sweep()
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "addr", "add", SUBNET + ".1/24", "dev", "br0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def host(self, name, index):
        """A new host: namespace, a veth whose other end is port p-<name> of the
        bridge; returns its address."""
        ns = self.ns(name)
        port = "p-" + name
        _ip("netns", "add", ns)
        self.created.append(ns)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        addr = "%s.%d" % (SUBNET, index)
        _ip("-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[name] = addr
        return addr

    def run(self, name):
        """The command prefix that runs a program on host name (ip netns exec execs
        it: the pid is the program's own, so signals reach it)."""
        return ["ip", "netns", "exec", self.ns(name)]

    def cut(self, name):
        """Takes host name's link down at the bridge: no FIN, no RST, nothing; its
        peers see silence, as with a pulled cable."""
        _ip("-n", self.switch, "link", "set", "p-" + name, "down")

    def restore(self, name):
        _ip("-n", self.switch, "link", "set", "p-" + name, "up")

    def enter(self):
        """Moves this thread to the switch host until leave()."""
        self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        _setns("/run/netns/" + self.switch)

    def leave(self):
        fd = getattr(self, "_home_fd", None)
        if fd is None:
            return
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns back: %s" % os.strerror(err))
        os.close(fd)
        self._home_fd = None

    def destroy(self):
        """Kills whatever still runs inside, deletes every namespace (and with them
        every veth and the bridge). Safe to call twice."""
        self.leave()
        for ns in reversed(self.created):
            _kill_inside(ns)
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        self.created = []
        left = [ns for ns in _namespaces() if ns.startswith(self.prefix)]
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            for ns in left:
                _ip("netns", "del", ns, check=False)
            left = [ns for ns in _namespaces() if ns.startswith(self.prefix)]
        if left:
            raise RuntimeError("namespaces left behind: %s" % left)
