"""Sluice on nine hosts (network namespaces, see netlab.py), for the multi-host test.

    host  address     process
    db    10.77.0.2   MariaDB (deploy/local/mariadb, listening on 10.77.0.2:3306)
    b1    10.77.0.11  sluice-broker
    b2    10.77.0.12  sluice-broker
    dbw1  10.77.0.21  sluice-dbworker, pool_size 3
    dbw2  10.77.0.22  sluice-dbworker, pool_size 2
    dbw3  10.77.0.23  sluice-dbworker, pool_size 1      (max_overflow 0 everywhere)
    sw    10.77.0.31  sluice-streamworker (echo provider)
    gw1   10.77.0.41  sluice-gateway :8080
    gw2   10.77.0.42  sluice-gateway :8080
    (switch) 10.77.0.1  the bridge; the test's own sockets (HTTP, WebSocket)

Every program gets both brokers' endpoints, comma-separated.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import requests

import mariadb
import netlab
import procs
import system

POOLS = {"dbw1": 3, "dbw2": 2, "dbw3": 1}
DEADLINE_MS = 6000  # the gateways' SMP deadline (every route)
GRACE_MS = 1000     # the gateway fails a call whose broker never answers at deadline + this


class NetMariaDB(mariadb.MariaDB):
    """The private MariaDB of tests/pylib/mariadb.py, started on the db host and
    listening on its address. The admin CLI goes over the unix socket, which is a
    file and so reachable from any network namespace."""

    def __init__(self, lab, host):
        base = os.path.join(procs.BUILD_DIR, "test-mariadb")
        os.makedirs(base, exist_ok=True)
        super().__init__(directory=tempfile.mkdtemp(prefix="mh-", dir=base), port=3306)
        self._owns_dir = True
        self.lab = lab
        self.netns_host = host
        self.host = lab.hosts[host]

    def _env(self):
        env = super()._env()
        env["SLUICE_MARIADB_BIND"] = self.host
        return env

    def _script(self, command, check=True):
        r = subprocess.run(self.lab.run(self.netns_host) + [mariadb.SCRIPT, command],
                           env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError("deploy/local/mariadb %s failed (%d): %s%s" % (
                command, r.returncode, r.stdout.decode(), r.stderr.decode()))
        return r

    def allow_subnet(self):
        """The script grants the application user on localhost only; the DB
        workers come from the other hosts of the subnet."""
        who = "'%s'@'%s.%%'" % (self.user, netlab.SUBNET)
        self.sql("CREATE USER IF NOT EXISTS %s IDENTIFIED BY '%s'; "
                 "GRANT ALL PRIVILEGES ON `%s`.* TO %s" % (who, self.password, self.database, who))

    def connections_by_host(self):
        """{client address: connections of the application user}, from the processlist."""
        rows = self.sql("SELECT SUBSTRING_INDEX(host, ':', 1), COUNT(*) FROM "
                        "information_schema.processlist WHERE user = '%s' GROUP BY 1" % self.user)
        return {r[0]: int(r[1]) for r in rows}


class Cluster:
    def __init__(self):
        self.lab = netlab.Lab()
        self.procs = {}
        self.db = None
        self.log_dir = tempfile.mkdtemp(prefix="multihost-logs-")
        self.journal = tempfile.mkdtemp(prefix="multihost-journal-")
        self.entered = False

    # ---- life -----------------------------------------------------------------------
    def start(self):
        lab = self.lab.create()
        for name, index in [("db", 2), ("b1", 11), ("b2", 12), ("dbw1", 21), ("dbw2", 22),
                            ("dbw3", 23), ("sw", 31), ("gw1", 41), ("gw2", 42)]:
            lab.host(name, index)
        h = lab.hosts
        ports = {"frontend": 5550, "backend": 5551, "events_in": 5552, "events_out": 5553}
        self.endpoints = {k: ",".join("tcp://%s:%d" % (h[b], p) for b in ("b1", "b2"))
                          for k, p in ports.items()}

        self.db = NetMariaDB(lab, "db")
        self.db.start()
        self.db.allow_subnet()

        for b in ("b1", "b2"):
            self.spawn(b, "broker", {k: "tcp://%s:%d" % (h[b], p) for k, p in ports.items()})
        for b in ("b1", "b2"):
            self.procs[b].wait_log("listening")

        for w, size in POOLS.items():
            s = {"backend": self.endpoints["backend"], "events_in": self.endpoints["events_in"],
                 "worker_name": w, "db_host": h["db"], "db_port": 3306,
                 "db_user": self.db.user, "db_password": self.db.password,
                 "db_name": self.db.database, "pool_size": size, "max_overflow": 0,
                 "startup_wait_s": 30}
            s.update(system.FAST_HASH)
            self.spawn(w, "dbworker", s)
        for w in POOLS:
            self.procs[w].wait_log("serving", timeout=60)

        self.spawn("sw", "streamworker", {
            "backend": self.endpoints["backend"], "frontend": self.endpoints["frontend"],
            "worker_name": "sw", "journal_dir": self.journal, "journal_scan_ms": 200,
            "token_delay_ms": 5})
        self.procs["sw"].wait_log("serving", timeout=20)

        for g in ("gw1", "gw2"):
            self.spawn(g, "gateway", {
                "host": h[g], "port": 8080, "frontend": self.endpoints["frontend"],
                "events_out": self.endpoints["events_out"], "deadline_ms": DEADLINE_MS,
                "auth_cache_ms": 600000, "subscribe_settle_ms": 100, "static_dir": ""})
        for g in ("gw1", "gw2"):
            self.procs[g].wait_log("listening")

        self.lab.enter()
        self.entered = True
        self.gw = {g: Gateway(h[g]) for g in ("gw1", "gw2")}
        for g in self.gw.values():
            g.wait_healthy(len(POOLS))
        return self

    def spawn(self, host, program, settings):
        p = procs.Proc(self.lab.run(host) + [procs.binary(program)] + system.flags(settings),
                       name="%s-%s" % (host, program), log_dir=self.log_dir)
        self.procs[host] = p
        return p

    def stop(self, keep_logs=False):
        """SIGTERM in reverse order, each asserted to exit 0 (except those the test
        killed); then MariaDB, the namespaces and the folders."""
        errors = []
        try:
            if self.entered:
                self.lab.leave()
            for name in ("gw1", "gw2", "sw", "dbw1", "dbw2", "dbw3", "b1", "b2"):
                p = self.procs.get(name)
                if p is None or getattr(p, "killed", False):
                    continue
                try:
                    p.stop(timeout=30)
                except AssertionError as e:
                    errors.append(str(e))
            if self.db is not None:
                try:
                    self.db.destroy()
                except Exception as e:  # noqa: BLE001 - reported below, cleanup goes on
                    errors.append("mariadb: %s" % e)
        finally:
            for p in self.procs.values():
                if p.alive():
                    p.kill()
            self.lab.destroy()
            shutil.rmtree(self.journal, ignore_errors=True)
        if errors:
            raise AssertionError("%s\n(process logs kept in %s)" % ("\n".join(errors), self.log_dir))
        if not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def logs(self):
        return "\n".join("---- %s\n%s" % (n, p.log()[-3000:]) for n, p in self.procs.items())


class Gateway:
    """HTTP and WebSocket helpers for one gateway (from the switch host)."""

    def __init__(self, addr):
        self.url = "http://%s:8080" % addr
        self.ws_url = "ws://%s:8080" % addr

    def request(self, method, path, body=None, token=None, headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = json.dumps(body).encode() if body is not None else None
        # a fresh connection per call: a request never waits behind another one
        return requests.request(method, self.url + path, data=data, headers=h, timeout=30)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def health(self):
        return requests.get(self.url + "/health", timeout=10)

    def wait_healthy(self, pools, timeout=30):
        end = time.monotonic() + timeout
        while True:
            try:
                r = self.health()
                if r.status_code == 200 and len(r.json().get("pools", [])) == pools:
                    return r.json()
                last = r.text
            except requests.RequestException as e:
                last = str(e)
            assert time.monotonic() < end, "%s never became healthy: %s" % (self.url, last)
            time.sleep(0.1)

    def user(self):
        name = "u" + uuid.uuid4().hex[:12]
        password = "password-" + uuid.uuid4().hex[:6]
        r = self.post("/v1/users", {"username": name, "password": password})
        assert r.status_code == 201, r.text
        return self.login(name, password)

    def login(self, username, password, device="laptop"):
        r = self.post("/v1/sessions", {"username": username, "password": password,
                                       "device_name": device})
        assert r.status_code == 201, r.text
        d = r.json()
        return system.Device(username, password, d["user_id"], d["device_id"], d["token"])
