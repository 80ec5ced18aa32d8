#!/usr/bin/python3
"""The attack of issue 16, section 4, for tests/bench/abuse: WebSockets of one
device that never read, and large posts from another device of the same user.
Before the fix, 50 sockets and 20 posts of 1 MB took the gateway from 46 MiB to
881 MiB; the growth was linear in both.

Beside the attack, a well-behaved device of the same user keeps a WebSocket that
reads everything (items lost = posts it did not get), and another user (the
bystander) makes GET requests (p50/p99 during the attack against idle). Not the
watcher's own GETs: GET /v1/clipboard/latest answers it the attacker's 1 MB item
during the attack and 404 before, so that ratio measured the item's size (about
4x at p50 on its own), not what the attack does to others.

As a library (the stack is the caller's; nothing here is run by ctest):

    import abuse_ws
    r = abuse_ws.attack(gateway_url, gateway_pid, attacker_token, writer_token,
                        watcher_token, sockets=50, posts=20, item_bytes=1000000,
                        bystander_token=other_users_token)
    r["rss_peak_mib"], r["items_lost"], r["p99_ratio"], ...

From the command line it starts its own private MariaDB and stack from the build
(SLUICE_BUILD_DIR, as the tests do) and prints one table row:

    SLUICE_BUILD_DIR=$PWD/build/test PYTHONPATH=tests/pylib \\
        /usr/bin/python3 tests/bench/abuse_ws.py [--sockets 50] [--posts 20] \\
        [--item-bytes 1000000] [--gateway ws_queue_max_bytes=1048576 ...]
"""
import argparse
import json
import os
import re
import socket
import sys
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))

import requests  # noqa: E402

import procstat  # noqa: E402
from wsraw import RawWS, Refused  # noqa: E402


def _counters(url):
    text = requests.get(url + "/metrics", timeout=10).text
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r'sluice_gateway_events_total\{reason="([^"]+)"\} (\d+)', text)}


def _pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


class _Latency(threading.Thread):
    """GET /v1/clipboard/latest in a loop: one well-behaved client's latencies (ms)."""

    def __init__(self, url, token):
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.samples = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        s = requests.Session()
        h = {"Authorization": "Bearer " + self.token}
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                r = s.get(self.url + "/v1/clipboard/latest", headers=h, timeout=10)
                ok = r.status_code in (200, 404)
            except requests.RequestException:
                ok = False
            if ok:
                self.samples.append((time.monotonic() - t) * 1000.0)
            else:
                self.errors += 1
            time.sleep(0.01)


class _Watcher(threading.Thread):
    """A WebSocket of the user's third device that reads everything: the seqs it got."""

    def __init__(self, port, token):
        super().__init__(daemon=True)
        self.ws = RawWS(port, "/v1/sync/notify?token=" + token)
        self.seqs = []
        self.closed = None
        self.stop = threading.Event()

    def run(self):
        self.ws.sock.settimeout(0.2)
        while not self.stop.is_set():
            f = self.ws._frame()
            if f is None:
                try:
                    chunk = self.ws.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed = "eof"
                    return
                self.ws.buf += chunk
                continue
            op, payload = f
            if op == 0x8:
                self.closed = payload[:2].hex()
                return
            if op == 0x1:
                msg = json.loads(payload)
                if msg.get("type") == "clipboard.item":
                    self.seqs.append(msg["item"]["seq"])


def _rss_sampler(pid, peak, stop):
    while not stop.is_set():
        rss = procstat.rss_kib(pid)
        if rss:
            peak[0] = max(peak[0], rss)
        time.sleep(0.02)


def attack(url, pid, attacker_token, writer_token, watcher_token, sockets=50, posts=20,
           item_bytes=1000000, rcvbuf=4096, idle_s=2.0, settle_s=2.0, bystander_token=None):
    """Runs the attack against the gateway at url (process pid) and returns what
    the abuse table shows: what was sent, the legitimate client's latencies idle
    and during the attack, the gateway's RSS before and at its peak, sockets held
    and refused, closes by reason, and items lost. The legitimate GETs are
    bystander_token's (another user's) when given, else the watcher's."""
    port = urlparse(url).port
    before = _counters(url)
    # the legitimate client, idle
    lat = _Latency(url, bystander_token or watcher_token)
    lat.start()
    time.sleep(idle_s)
    idle = list(lat.samples)
    lat.samples.clear()
    watcher = _Watcher(port, watcher_token)
    watcher.start()
    held, refused = [], {}
    for _ in range(sockets):
        try:
            held.append(RawWS(port, "/v1/sync/notify?token=" + attacker_token, rcvbuf=rcvbuf))
        except Refused as e:
            refused[e.status] = refused.get(e.status, 0) + 1
    time.sleep(1.0)  # hellos written: the sockets are live
    base = procstat.rss_kib(pid)
    peak = [base]
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(pid, peak, stop), daemon=True)
    sampler.start()
    created, post_errors = [], 0
    t0 = time.monotonic()
    try:
        s = requests.Session()
        h = {"Authorization": "Bearer " + writer_token, "Content-Type": "application/json"}
        for i in range(posts):
            body = json.dumps({"content": ("%x" % (i % 16)) * item_bytes})
            r = s.post(url + "/v1/clipboard", data=body, headers=h, timeout=60)
            if r.status_code == 201:
                created.append(r.json()["seq"])
            else:
                post_errors += 1
        attack_s = time.monotonic() - t0
        end = time.monotonic() + 30
        while time.monotonic() < end and not set(created) <= set(watcher.seqs):
            time.sleep(0.1)
        time.sleep(settle_s)
    finally:
        stop.set()
        sampler.join()
        lat.stop.set()
        lat.join()
        watcher.stop.set()
        watcher.join()
        watcher.ws.close()
        for w in held:
            w.close()
    during = lat.samples
    after = _counters(url)
    closes = {k: after.get(k, 0) - before.get(k, 0) for k in after
              if k.startswith(("ws_", "sse_")) and after.get(k, 0) != before.get(k, 0)}
    res = {
        "sent": "%d WebSockets of one device that never read, %d posts of %d bytes from "
                "another device" % (sockets, posts, item_bytes),
        "attack_s": round(attack_s, 1),
        "idle_p50_ms": _pct(idle, 50), "idle_p99_ms": _pct(idle, 99),
        "attack_p50_ms": _pct(during, 50), "attack_p99_ms": _pct(during, 99),
        "legit_errors": lat.errors,
        "rss_base_mib": round(base / 1024.0, 1), "rss_peak_mib": round(peak[0] / 1024.0, 1),
        "sockets_held": len(held), "sockets_refused": refused,
        "closes": closes, "post_errors": post_errors,
        "items_lost": len(set(created) - set(watcher.seqs)),
        "watcher_closed": watcher.closed,
    }
    if res["idle_p50_ms"] and res["attack_p50_ms"]:
        res["p50_ratio"] = round(res["attack_p50_ms"] / res["idle_p50_ms"], 2)
        res["p99_ratio"] = round(res["attack_p99_ms"] / res["idle_p99_ms"], 2)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=50)
    ap.add_argument("--posts", type=int, default=20)
    ap.add_argument("--item-bytes", type=int, default=1000000)
    ap.add_argument("--gateway", nargs="*", default=[],
                    help="settings of the attacked gateway, name=value")
    args = ap.parse_args()
    from mariadb import MariaDB
    from system import Gateway, Stack
    db = MariaDB()
    db.start()
    stack = Stack(db)
    gw = None
    try:
        stack.start()
        settings = dict(kv.split("=", 1) for kv in args.gateway)
        # the attacked gateway is a second one, so its settings are the caller's
        # and its RSS is only this attack's
        gw = Gateway(stack, **settings)
        attacker = stack.user()
        writer = stack.device(attacker, "writer")
        watcher = stack.device(attacker, "watcher")
        bystander = stack.user()
        stack.create(bystander, "a small item")
        r = attack(gw.url, gw.proc.pid, attacker.token, writer.token, watcher.token,
                   sockets=args.sockets, posts=args.posts, item_bytes=args.item_bytes,
                   bystander_token=bystander.token)
        print(json.dumps(r, indent=2))
        print("| attack | p50 x idle | p99 x idle | gateway RSS peak | sockets held | "
              "items lost |")
        print("|---|---|---|---|---|---|")
        print("| %s | %s | %s | %.0f MiB (from %.0f) | %d | %d |" % (
            r["sent"], r.get("p50_ratio"), r.get("p99_ratio"), r["rss_peak_mib"],
            r["rss_base_mib"], r["sockets_held"], r["items_lost"]))
    finally:
        if gw:
            gw.stop()
        stack.stop()
        db.destroy()


if __name__ == "__main__":
    main()
