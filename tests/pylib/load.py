"""A steady mixed load from the clients' side, and the checks of the fault suite
(tests/faults/). Used with FaultStack (tests/pylib/faultstack.py):

    load = Load(stack, db)              # users and devices made here
    load.start()                        # writers, a reader, notify sockets, chats
    ... a fault ...
    load.stop()
    report = load.report("name", fault_start, fault_end, recovered_at)
    problems = load.check(...)          # [] when every client-side promise held

What runs:
- one writer thread per user: POST /v1/clipboard with a fresh Idempotency-Key, the
  key as content; a write answered 503/504 or cut off is repeated with the same key
  (after Retry-After, capped), as a well-behaved client does;
- one reader thread: GET /v1/clipboard?after=..&limit=20 round the users;
- one notify WebSocket per user, on a second device of that user: it records the
  seq of every clipboard.item and reconnects with after=<last seq> when closed;
- chat threads: POST /v1/chat/conversations/{id}/messages with stream false.

Every request is recorded (kind, status, latency, start, end, Retry-After). A
request that gets no answer within its deadline plus MARGIN_S is recorded as a hang
(status 0); a refused or reset connection as status -1.
"""
import asyncio
import json
import threading
import time
import uuid

import requests
import websockets

MARGIN_S = 3.0           # "answered within its deadline plus a margin"
WRITE_PAUSE_S = 0.03     # between one writer's requests
READ_PAUSE_S = 0.05
CHAT_PAUSE_S = 0.1
RETRY_PAUSE_CAP_S = 0.5  # Retry-After is honoured up to this (keeps the test short)


class Result:
    __slots__ = ("kind", "user", "status", "start", "end", "retry_after", "code", "note")

    def __init__(self, kind, user, status, start, end, retry_after=None, code=None, note=None):
        self.kind = kind
        self.user = user
        self.status = status
        self.start = start
        self.end = end
        self.retry_after = retry_after
        self.code = code
        self.note = note

    @property
    def latency(self):
        return self.end - self.start


class LoadUser:
    def __init__(self, writer, listener, tag):
        self.writer = writer        # system.Device that writes
        self.listener = listener    # system.Device whose WebSocket listens
        self.tag = tag
        self.acked = {}             # idem key -> item (the 2xx body)
        self.attempted = set()      # every key sent at least once
        self.seen = set()           # seqs received on the notify socket
        self.ws_opens = 0
        self.ws_closes = []         # close codes
        self.ws_gaps = 0            # holes in seq seen live (then filled by a replay)
        self.ws_dups = 0            # items received twice
        self.conversation = None
        self.chats_acked = []       # assistant message ids answered 201


class Load:
    def __init__(self, stack, db, users=3, chats=2, deadline_s=5.0, chat_deadline_s=20.0,
                 notify=True):
        self.stack = stack
        self.db = db
        self.deadline_s = deadline_s
        self.chat_deadline_s = chat_deadline_s
        self.notify = notify
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.users = []
        for i in range(users):
            w = stack.user("writer")
            lst = stack.device(w, "listener")
            self.users.append(LoadUser(w, lst, "%s-%d" % (uuid.uuid4().hex[:6], i)))
        for u in self.users[:chats]:
            r = stack.post("/v1/chat/conversations", {"title": "load"}, token=u.writer.token)
            assert r.status_code == 201, r.text
            u.conversation = r.json()["id"]
        self._ws_loop = None
        self._ws_ready = threading.Event()

    # ---- recording ------------------------------------------------------------
    def _record(self, res):
        with self._lock:
            self.results.append(res)

    def _call(self, session, kind, user, method, path, body=None, token=None, headers=None,
              deadline_s=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = json.dumps(body).encode() if body is not None else None
        timeout = (deadline_s or self.deadline_s) + MARGIN_S
        start = time.monotonic()
        try:
            r = session.request(method, self.stack.url + path, data=data, headers=h,
                                timeout=timeout)
        except requests.exceptions.Timeout as e:
            self._record(Result(kind, user, 0, start, time.monotonic(), note=str(e)[:200]))
            return None
        except requests.exceptions.RequestException as e:
            self._record(Result(kind, user, -1, start, time.monotonic(), note=str(e)[:200]))
            return None
        end = time.monotonic()
        code = None
        if r.status_code >= 400:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
        ra = r.headers.get("Retry-After")
        self._record(Result(kind, user, r.status_code, start, end, ra, code,
                            r.text[:200] if r.status_code >= 400 else None))
        return r

    def _pause_after(self, r, default):
        if r is not None and r.status_code == 503:
            try:
                wait = min(float(r.headers.get("Retry-After", "1")), RETRY_PAUSE_CAP_S)
            except ValueError:
                wait = RETRY_PAUSE_CAP_S
        elif r is None or r.status_code >= 500:
            wait = 0.1
        else:
            wait = default
        self._stop.wait(wait)

    # ---- the load ------------------------------------------------------------
    def _writer(self, u):
        s = requests.Session()
        n = 0
        key = None
        while not self._stop.is_set():
            if key is None:
                n += 1
                key = "%s-%d" % (u.tag, n)
            u.attempted.add(key)
            r = self._call(s, "write", u.tag, "POST", "/v1/clipboard", {"content": key},
                           token=u.writer.token, headers={"Idempotency-Key": key})
            if r is not None and r.status_code == 201:
                u.acked[key] = r.json()
                key = None
            elif r is not None and 400 <= r.status_code < 500:
                key = None  # recorded; a 4xx is a failure the check reports
            self._pause_after(r, WRITE_PAUSE_S)

    def _reader(self):
        s = requests.Session()
        i = 0
        while not self._stop.is_set():
            u = self.users[i % len(self.users)]
            i += 1
            after = max(0, len(u.acked) - 10)
            r = self._call(s, "list", u.tag, "GET", "/v1/clipboard?after=%d&limit=20" % after,
                           token=u.writer.token)
            self._pause_after(r, READ_PAUSE_S)

    def _chat(self, u):
        s = requests.Session()
        while not self._stop.is_set():
            r = self._call(s, "chat", u.tag, "POST",
                           "/v1/chat/conversations/%s/messages" % u.conversation,
                           {"content": "pools never run dry here", "stream": False},
                           token=u.writer.token, deadline_s=self.chat_deadline_s)
            if r is not None and r.status_code == 201:
                u.chats_acked.append(r.json()["assistant_message"]["id"])
            self._pause_after(r, CHAT_PAUSE_S)

    async def _listen(self, u):
        """A notify client as api.md describes one: it keeps the last seq it has
        without a hole; on a close, or on an item whose seq skips one (an event lost
        on the way: PUB/SUB is at most once), it reconnects with after=<that seq> so
        the replay fills the hole. The user is new: it starts at after=0."""
        last = 0
        while not self._ws_drain.is_set() or not self._ws_drained(u):
            if self._ws_give_up.is_set():
                return
            q = "token=" + u.listener.token
            if last is not None:
                q += "&after=%d" % last
            try:
                async with websockets.connect(self.stack.ws_url + "/v1/sync/notify?" + q,
                                              open_timeout=self.deadline_s + MARGIN_S,
                                              max_size=8 << 20) as ws:
                    u.ws_opens += 1
                    while True:
                        try:
                            msg = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                        except asyncio.TimeoutError:
                            if (self._ws_drain.is_set() and self._ws_drained(u)) or \
                                    self._ws_give_up.is_set():
                                return
                            continue
                        if msg.get("type") == "hello" and last is None:
                            last = msg["seq"]
                        elif msg.get("type") == "clipboard.item":
                            seq = msg["item"]["seq"]
                            if seq in u.seen:
                                u.ws_dups += 1
                            u.seen.add(seq)
                            if last is None or seq == last + 1:
                                last = seq
                            elif seq > last + 1:
                                u.ws_gaps += 1
                                break  # reconnect with after=last: the replay fills it
            except websockets.exceptions.ConnectionClosed as e:
                u.ws_closes.append(e.code)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
                u.ws_closes.append(type(e).__name__)
            await asyncio.sleep(0.2)

    def _ws_drained(self, u):
        want = {item["seq"] for item in u.acked.values()}
        return want <= u.seen or self._ws_give_up.is_set()

    def _ws_main(self):
        async def main():
            await asyncio.gather(*(self._listen(u) for u in self.users))
        asyncio.run(main())

    def start(self):
        self._ws_give_up = threading.Event()
        self._ws_drain = threading.Event()  # set once the last writes were made
        self.t0 = time.monotonic()
        for u in self.users:
            self._threads.append(threading.Thread(target=self._writer, args=(u,), daemon=True))
            if u.conversation:
                self._threads.append(threading.Thread(target=self._chat, args=(u,), daemon=True))
        self._threads.append(threading.Thread(target=self._reader, daemon=True))
        self._ws_thread = None
        if self.notify:
            self._ws_thread = threading.Thread(target=self._ws_main, daemon=True)
            self._ws_thread.start()
        for t in self._threads:
            t.start()

    def stop(self, ws_wait_s=10.0, final_write=True):
        """Stops the HTTP load (each thread finishes its request in progress), then
        gives the notify sockets ws_wait_s to receive every acknowledged item."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.chat_deadline_s + MARGIN_S + 5)
            assert not t.is_alive(), "a load thread hung"
        if self._ws_thread is not None and final_write:
            # PUB/SUB is at most once: an event lost with a killed process shows as
            # a hole in seq only when a later item arrives. A last item per user,
            # written once the system is back, is that later item.
            s = requests.Session()
            for u in self.users:
                key = "%s-final" % u.tag
                u.attempted.add(key)
                r = self._call(s, "write", u.tag, "POST", "/v1/clipboard", {"content": key},
                               token=u.writer.token, headers={"Idempotency-Key": key})
                if r is not None and r.status_code == 201:
                    u.acked[key] = r.json()
        self._ws_drain.set()
        if self._ws_thread is not None:
            self._ws_thread.join(timeout=ws_wait_s)
            self._ws_give_up.set()
            self._ws_thread.join(timeout=10)

    # ---- looking at the results -------------------------------------------------
    def since(self, t):
        with self._lock:
            return [r for r in self.results if r.start >= t]

    def wait_normal(self, since, window_s=1.5, timeout_s=30.0, kinds=("write", "list")):
        """Waits until every request of the last window_s seconds (started after
        since) succeeded, with at least one of each kind; returns the start time of
        that window (the system served normally from then on) or None."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            now = time.monotonic()
            w0 = max(since, now - window_s)
            if now - since >= window_s:
                rs = [r for r in self.since(w0) if r.end <= now]
                bad = [r for r in self.since(since) if r.end > w0 - 0.001 and
                       not 200 <= r.status < 300]
                if not bad and all(any(r.kind == k and 200 <= r.status < 300 for r in rs)
                                   for k in kinds):
                    # recovered when the last failure ended (or at since)
                    fails = [r.end for r in self.since(since) if not 200 <= r.status < 300]
                    return max(fails) if fails else since
            time.sleep(0.1)
        return None

    def db_counts(self, database):
        """{content: count} of every load write in the database, read as root."""
        tags = [u.tag for u in self.users]
        rows = self.db.sql("SELECT content, COUNT(*) FROM clipboard_items WHERE " +
                           " OR ".join("content LIKE '%s-%%'" % t for t in tags) +
                           " GROUP BY content", database)
        return {r[0]: int(r[1]) for r in rows}

    def check(self, name, database, fault_start, fault_end, recovered_at, allowed_5xx=True,
              check_ws=True):
        """Every client-side promise; returns (table row dict, [problems])."""
        problems = []
        rs = list(self.results)
        counts = self.db_counts(database)
        acked = {k: v for u in self.users for k, v in u.acked.items()}
        attempted = set().union(*(u.attempted for u in self.users))
        found_once = sum(1 for k in acked if counts.get(k) == 1)
        missing = [k for k in acked if counts.get(k, 0) == 0]
        dup = [k for k, c in counts.items() if c > 1]
        stray = [k for k in counts if k not in attempted]
        if missing:
            problems.append("%d acknowledged writes missing from the database: %s"
                            % (len(missing), missing[:5]))
        if dup:
            problems.append("writes stored more than once: %s" % dup[:5])
        if stray:
            problems.append("rows nobody wrote: %s" % stray[:5])
        for r in rs:
            limit = (self.chat_deadline_s if r.kind == "chat" else self.deadline_s) + MARGIN_S
            if r.status == 0 or r.latency > limit:
                problems.append("%s not answered within its deadline plus %.0fs: %.1fs (%s)"
                                % (r.kind, MARGIN_S, r.latency, r.note))
            elif r.status == -1:
                problems.append("%s connection failed: %s" % (r.kind, r.note))
            elif r.status in (500, 502) or (r.status >= 500 and not allowed_5xx):
                problems.append("%s answered %d %s: %s" % (r.kind, r.status, r.code, r.note))
            elif 400 <= r.status < 500:
                problems.append("%s answered %d %s: %s" % (r.kind, r.status, r.code, r.note))
            if r.status == 503 and r.retry_after is None:
                problems.append("503 without Retry-After (%s)" % r.kind)
        # the notify sockets saw every acknowledged item (live or by replay)
        ws_missing = 0
        if self.notify:
            for u in self.users:
                want = {item["seq"] for item in u.acked.values()}
                ws_missing += len(want - u.seen)
                if want - u.seen and check_ws:
                    problems.append("notify socket of %s: acknowledged seqs %s never arrived "
                                    "(highest acked %d, highest seen %d, opens %d, closes %s)"
                                    % (u.tag, sorted(want - u.seen)[:10], max(want),
                                       max(u.seen, default=0), u.ws_opens, u.ws_closes[:5]))
        row = {
            "scenario": name,
            "requests": len(rs),
            "2xx": sum(1 for r in rs if 200 <= r.status < 300),
            "4xx": sum(1 for r in rs if 400 <= r.status < 500),
            "5xx": sum(1 for r in rs if r.status >= 500),
            "503": sum(1 for r in rs if r.status == 503),
            "504": sum(1 for r in rs if r.status == 504),
            "hang/cut": sum(1 for r in rs if r.status <= 0),
            "max_lat_s": max((r.latency for r in rs if r.kind != "chat"), default=0.0),
            "max_5xx_lat_s": max((r.latency for r in rs if r.status >= 500), default=0.0),
            "chat_max_s": max((r.latency for r in rs if r.kind == "chat"), default=0.0),
            "acked": len(acked),
            "found_once": found_once,
            "ws_missing": ws_missing,
            "ws_gaps": sum(u.ws_gaps for u in self.users),
            "ws_dups": sum(u.ws_dups for u in self.users),
            "recovery_s": (None if recovered_at is None else max(0.0, recovered_at - fault_end)),
            "fault_s": fault_end - fault_start,
        }
        return row, problems


COLUMNS = [("scenario", "%-26s"), ("requests", "%8s"), ("2xx", "%6s"), ("4xx", "%4s"),
           ("5xx", "%4s"), ("503", "%4s"), ("504", "%4s"), ("hang/cut", "%8s"),
           ("max_lat_s", "%9s"), ("max_5xx_lat_s", "%13s"), ("chat_max_s", "%10s"),
           ("acked", "%6s"), ("found_once", "%10s"), ("ws_missing", "%10s"),
           ("ws_gaps", "%7s"), ("ws_dups", "%7s"),
           ("recovery_s", "%10s")]


def fmt_row(row):
    out = []
    for k, f in COLUMNS:
        v = row.get(k)
        if isinstance(v, float):
            v = "%.2f" % v
        elif v is None:
            v = "-"
        out.append(f % v)
    return " ".join(out)


def table(rows):
    head = " ".join(f % k for k, f in COLUMNS)
    return "\n".join([head] + [fmt_row(r) for r in rows])
