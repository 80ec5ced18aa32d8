"""The whole system for the fault suite: system.Stack's processes (broker, two DB
workers with a pool of 2 and no overflow, a stream worker with echo, a gateway),
started the same way, plus what a fault test needs: its own database, processes
that can be killed and started again on the same endpoints, and a list of every
process ever started (for their logs).

    s = FaultStack(db, "f_abc"); s.start()
    s.workers[0].kill(); s.start_dbworker()
    s.broker.kill(); s.start_broker()
    s.stop()                            # SIGTERM to the live ones, clean exits asserted
"""
import tempfile
import time

import requests

import procs
from system import FAST_HASH, Gateway, Stack, flags

CHAT_DEADLINE_MS = 20000


class FaultStack(Stack):
    def __init__(self, db, database, worker_settings=None, gateway_settings=None,
                 log_level=None):
        super().__init__(db, chat=True)
        self.log_level = log_level  # for every process; None: their default
        self.database = database
        self.worker_settings = dict(worker_settings or {})
        self.gateway_settings = dict(gateway_settings or {})
        self.journal_dir = tempfile.mkdtemp(prefix="fault-journal-")
        self.all_procs = []
        self.broker = None

    def start(self):
        self.start_broker()
        for _ in range(2):
            self.start_dbworker()
        self.start_streamworker()
        g = {"header_timeout_ms": 1500, "route_deadlines": "chat.generate=%d" % CHAT_DEADLINE_MS}
        if self.log_level:
            g["log_level"] = self.log_level
        g.update(self.gateway_settings)
        self.gateway = Gateway(self, **g)
        self.all_procs.append(self.gateway.proc)
        self.url = self.gateway.url
        self.ws_url = self.gateway.ws_url
        self.wait_healthy()

    def start_broker(self):
        self.broker = procs.Proc([procs.binary("broker"), "--frontend", self.frontend,
                                  "--backend", self.backend, "--events-in", self.events_in,
                                  "--events-out", self.events_out] +
                                 (["--log-level", self.log_level] if self.log_level else []),
                                 name="broker")
        self.broker.wait_log("listening")
        self.all_procs.append(self.broker)
        return self.broker

    def start_dbworker(self, wait=True, **settings):
        s = dict(self.db.settings(self.database))
        s.update({"backend": self.backend, "events_in": self.events_in, "pool_size": 2,
                  "max_overflow": 0, "startup_wait_s": 30})
        s.update(FAST_HASH)
        if self.log_level:
            s["log_level"] = self.log_level
        s.update(self.worker_settings)
        s.update(settings)
        w = procs.Proc([procs.binary("dbworker")] + flags(s), name="dbworker")
        self.all_procs.append(w)
        self.workers.append(w)
        if wait:
            w.wait_log("serving", timeout=40)
        return w

    def start_streamworker(self, **settings):
        s = {"journal_dir": self.journal_dir, "journal_scan_ms": 500}
        if self.log_level:
            s["log_level"] = self.log_level
        s.update(settings)
        w = super().start_streamworker(**s)
        self.all_procs.append(w)
        return w

    def live_workers(self):
        return [w for w in self.workers if w.alive()]

    def health(self):
        try:
            r = requests.get(self.url + "/health", timeout=5)
            return r.status_code, r.json()
        except (requests.exceptions.RequestException, ValueError):
            return None, None

    def wait_healthy(self, pools=2, timeout=30.0):
        """Until /health is 200 `ok` with `pools` DB workers (the chat service too)."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            code, body = self.health()
            last = body
            if code == 200 and body.get("status") == "ok" and len(body.get("pools", [])) == pools:
                return body
            time.sleep(0.1)
        raise AssertionError("stack never became healthy: %r" % (last,))

    def stop(self):
        errors = []
        ps = [self.gateway.proc] if getattr(self, "gateway", None) else []
        if self.streamworker is not None:
            ps.append(self.streamworker)
        ps += self.workers
        if self.broker is not None:
            ps.append(self.broker)
        for p in ps:
            try:
                p.finish(timeout=20)
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))

    def logs(self):
        """(name, text) of every process this stack ever started."""
        return [(p.name, p.log()) for p in self.all_procs]
