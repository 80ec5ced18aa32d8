"""Chat answers through the gateway (docs/api.md, "Chat"): Server-Sent Events for
"stream": true, 201 JSON for "stream": false, CANCEL when the client goes away,
an `error` event when the stream worker dies, the drain on SIGTERM, and 500
streams open at once over pools of 2 connections while clipboard requests keep
succeeding.

The SSE text is read from raw sockets and parsed strictly: the head exactly as
api.md has it, then blocks of exactly `event: NAME` and `data: JSON`, each ended
by a blank line (or a `: keep-alive` comment), nothing else.
"""
import concurrent.futures
import contextlib
import json
import re
import selectors
import signal
import socket
import threading
import time

import requests

from system import Gateway

DIGITS = re.compile(r"^\d+$")
EVENTS = {"message", "delta", "done", "error"}


# ---- a strict SSE reader ----------------------------------------------------------------

def request_bytes(dev, conv_id, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    head = ("POST /v1/chat/conversations/%s/messages HTTP/1.1\r\nHost: sluice\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (conv_id, dev.token, len(data)))
    return head.encode() + data


def parse_head(raw):
    head, rest = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        assert name.lower() not in headers, "header %s twice" % name
        headers[name.lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def parse_block(block):
    """One block between blank lines: ("comment", None) or (event, data)."""
    text = block.decode("utf-8")
    if text.startswith(":"):
        assert text == ": keep-alive", text
        return "comment", None
    lines = text.split("\n")
    assert len(lines) == 2, "an event is two lines: %r" % text
    assert lines[0].startswith("event: ") and lines[1].startswith("data: "), text
    name = lines[0][len("event: "):]
    assert name in EVENTS, name
    return name, json.loads(lines[1][len("data: "):])


def check_sse_head(status, headers):
    assert status == 200, (status, headers)
    assert headers["content-type"] == "text/event-stream", headers
    assert "content-length" not in headers and "transfer-encoding" not in headers, headers
    assert headers["cache-control"] == "no-store"
    assert headers["connection"] == "close"
    assert headers.get("x-request-id")


def parse_stream(raw):
    """A whole response: (status, headers, events without comments, comments)."""
    status, headers, rest = parse_head(raw)
    if status != 200:
        return status, headers, json.loads(rest), 0
    check_sse_head(status, headers)
    assert rest.endswith(b"\n\n"), "the stream ended inside an event: %r" % rest[-200:]
    events, comments = [], 0
    for block in rest[:-2].split(b"\n\n"):
        name, data = parse_block(block)
        if name == "comment":
            comments += 1
        else:
            events.append((name, data))
    return status, headers, events, comments


class Stream:
    """One POST .../messages on its own connection, read as it arrives."""

    def __init__(self, gateway_port, dev, conv_id, body, timeout=30, head=True):
        self.sock = socket.create_connection(("127.0.0.1", gateway_port), timeout=timeout)
        self.sock.sendall(request_bytes(dev, conv_id, body))
        self.buf = b""
        self.ended = False
        self.comments = 0
        if not head:  # the caller does not wait for the answer
            return
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), "closed before the response head: %r" % self.buf
        self.status, self.headers, self.buf = parse_head(self.buf)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.ended = True
            return False
        self.buf += chunk
        return True

    def json(self):
        n = int(self.headers["content-length"])
        while len(self.buf) < n:
            assert self._fill(), "closed inside the body"
        return json.loads(self.buf[:n])

    def next(self):
        """The next event (name, data), comments skipped; None once the server
        closed the connection after a whole event."""
        while True:
            while b"\n\n" not in self.buf:
                if not self._fill():
                    assert self.buf == b"", "the stream ended inside an event: %r" % self.buf
                    return None
            block, self.buf = self.buf.split(b"\n\n", 1)
            name, data = parse_block(block)
            if name == "comment":
                self.comments += 1
                continue
            return name, data

    def rest(self):
        out = []
        while True:
            e = self.next()
            if e is None:
                return out
            out.append(e)

    def close(self):
        self.sock.close()


def echo_of(content):
    return " ".join(content.split())


def check_answer(events, content, dev, conv_id):
    """The stream of a complete answer: message, deltas, done; returns the message."""
    names = [n for n, _ in events]
    assert names[0] == "message" and names[-1] == "done", names
    assert set(names[1:-1]) <= {"delta"}, names
    first = events[0][1]
    assert set(first) == {"user_message", "assistant_message_id"}, first
    user = first["user_message"]
    assert DIGITS.match(first["assistant_message_id"])
    assert DIGITS.match(user["id"]) and user["role"] == "user" and user["content"] == content
    assert user["status"] == "complete"
    for _, d in events[1:-1]:
        assert set(d) == {"text"} and isinstance(d["text"], str), d
    deltas = "".join(d["text"] for _, d in events[1:-1])
    assert deltas == echo_of(content)
    done = events[-1][1]
    assert set(done) == {"message"}, done
    m = done["message"]
    assert m["id"] == first["assistant_message_id"]
    assert m["role"] == "assistant" and m["status"] == "complete" and m["content"] == deltas
    return m


# ---- helpers ----------------------------------------------------------------------------

def conversation(stack, dev, title="t"):
    r = stack.post("/v1/chat/conversations", {"title": title}, token=dev.token)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def messages(stack, dev, conv_id):
    """Every message, oldest first: pages until the server says there is no more."""
    out, after = [], 0
    while True:
        r = stack.get("/v1/chat/conversations/%s/messages?after=%s" % (conv_id, after),
                      token=dev.token)
        assert r.status_code == 200, r.text
        out += r.json()["messages"]
        after = r.json()["next_after"]
        if not r.json()["more"]:
            return out


def wait_for(what, probe, timeout=20.0):
    """Polls probe() until it returns something true; fails with its last value."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < end, "%s never happened; last: %r" % (what, value)
        time.sleep(0.05)


def assistant(stack, dev, conv_id, message_id):
    for m in messages(stack, dev, conv_id):
        if m["id"] == message_id:
            return m
    return None


def chat_workers(stack):
    r = requests.get(stack.url + "/health", timeout=5).json()
    return r["services"].get("chat", {}).get("workers", 0)


def replace_streamworker(stack, **settings):
    if stack.streamworker is not None and stack.streamworker.alive():
        stack.streamworker.stop()
    s = {"journal_dir": stack.chat_settings["journal_dir"]}
    s.update(settings)
    stack.start_streamworker(**s)
    wait_for("a live chat worker", lambda: chat_workers(stack) == 1)


@contextlib.contextmanager
def slow_streamworker(stack, **settings):
    """The stack's stream worker replaced by a slower one, and a fast one put back."""
    s = {"token_delay_ms": 250, "checkpoint_ms": 100}
    s.update(settings)
    replace_streamworker(stack, **s)
    try:
        yield stack.streamworker
    finally:
        replace_streamworker(stack)


WORDS = " ".join("w%02d" % i for i in range(30))  # 30 deltas: 7.5 s at 250 ms


# ---- the tests --------------------------------------------------------------------------

def test_stream_end_to_end(chat_stack):
    ann = chat_stack.user()
    conv = conversation(chat_stack, ann)
    content = "  the quick\tbrown fox\n"
    s = Stream(chat_stack.gateway.port, ann, conv, {"content": content})  # stream defaults to true
    check_sse_head(s.status, s.headers)
    events = s.rest()
    m = check_answer(events, content, ann, conv)
    assert [d["text"] for n, d in events if n == "delta"] == ["the", " quick", " brown", " fox"]
    stored = messages(chat_stack, ann, conv)
    assert [(x["role"], x["status"], x["content"]) for x in stored] == [
        ("user", "complete", content), ("assistant", "complete", "the quick brown fox")]
    assert stored[1]["id"] == m["id"] and stored[0]["id"] == events[0][1]["user_message"]["id"]
    # a second answer in the same conversation, explicitly streamed
    s2 = Stream(chat_stack.gateway.port, ann, conv, {"content": "again", "stream": True})
    check_answer(s2.rest(), "again", ann, conv)
    assert len(messages(chat_stack, ann, conv)) == 4


def test_stream_false_is_201(chat_stack):
    ann = chat_stack.user()
    conv = conversation(chat_stack, ann)
    r = chat_stack.post("/v1/chat/conversations/%s/messages" % conv,
                        {"content": "hello there", "stream": False}, token=ann.token)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"user_message", "assistant_message"}
    u, a = body["user_message"], body["assistant_message"]
    assert DIGITS.match(u["id"]) and DIGITS.match(a["id"])
    assert u["content"] == "hello there" and a["content"] == "hello there"
    assert a["status"] == "complete" and a["role"] == "assistant"
    assert [x["id"] for x in messages(chat_stack, ann, conv)] == [u["id"], a["id"]]


def test_bad_bodies_are_400_and_store_nothing(chat_stack):
    ann = chat_stack.user()
    other = chat_stack.user()
    conv = conversation(chat_stack, ann)
    path = "/v1/chat/conversations/%s/messages" % conv
    for body in [{"content": ""}, {"content": 5}, {}, {"content": "x", "stream": "yes"},
                 {"content": "x", "stream": 1}, {"content": "x", "model": "gpt"},
                 {"content": "x\u0000"}]:
        r = chat_stack.post(path, body, token=ann.token)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["error"]["code"] == "bad_request"
    for raw in [b"{", b"[]", b"{\"content\":\"a\",\"content\":\"b\"}", b"\xff"]:
        r = chat_stack.post(path, raw=raw, token=ann.token)
        assert r.status_code == 400, (raw, r.text)
    for bad in ["abc", "-1", "0x1", "99999999999999999999"]:
        r = chat_stack.post("/v1/chat/conversations/%s/messages" % bad, {"content": "x"},
                            token=ann.token)
        assert r.status_code == 400, (bad, r.text)
    # another user's conversation: 404 as plain JSON before any event
    s = Stream(chat_stack.gateway.port, other, conv, {"content": "mine?"})
    assert s.status == 404 and s.headers["content-type"] == "application/json"
    assert s.json()["error"]["code"] == "not_found"
    r = chat_stack.post(path, {"content": "x"})
    assert r.status_code == 401
    assert messages(chat_stack, ann, conv) == []


def test_no_chat_worker_is_503(chat_stack):
    ann = chat_stack.user()
    conv = conversation(chat_stack, ann)
    chat_stack.streamworker.stop()
    wait_for("chat gone", lambda: chat_workers(chat_stack) == 0)
    try:
        for stream in (True, False):
            s = Stream(chat_stack.gateway.port, ann, conv, {"content": "x", "stream": stream})
            assert s.status == 503, s.status
            assert s.headers["content-type"] == "application/json"
            assert int(s.headers["retry-after"]) >= 1
            assert s.json()["error"]["code"] == "unavailable"
        assert messages(chat_stack, ann, conv) == []
    finally:
        replace_streamworker(chat_stack)


def test_slow_streams(chat_stack):
    """Checkpoints, a client that goes away (streaming or waiting for the whole
    answer), a stream worker killed mid-stream: one slow stream worker for all."""
    ann = chat_stack.user()
    with slow_streamworker(chat_stack) as worker:
        # checkpoints: the text so far is stored while the answer streams
        conv = conversation(chat_stack, ann)
        s = Stream(chat_stack.gateway.port, ann, conv, {"content": WORDS})
        name, first = s.next()
        assert name == "message"
        mid = first["assistant_message_id"]
        for _ in range(3):
            assert s.next()[0] == "delta"
        seen = wait_for("a checkpoint", lambda: (lambda m: m if m and m["content"] else None)(
            assistant(chat_stack, ann, conv, mid)))
        assert seen["status"] == "streaming", seen
        assert WORDS.startswith(seen["content"]) and seen["content"] != WORDS
        rest = s.rest()
        assert rest[-1][0] == "done" and rest[-1][1]["message"]["content"] == WORDS
        assert assistant(chat_stack, ann, conv, mid)["status"] == "complete"

        # the client goes away: the gateway sends CANCEL, the worker stores what it had
        conv = conversation(chat_stack, ann)
        s = Stream(chat_stack.gateway.port, ann, conv, {"content": WORDS})
        mid = s.next()[1]["assistant_message_id"]
        text = "".join(s.next()[1]["text"] for _ in range(2))
        s.close()
        m = wait_for("cancelled", lambda: (lambda m: m if m["status"] != "streaming" else None)(
            assistant(chat_stack, ann, conv, mid)))
        assert m["status"] == "cancelled", m
        assert m["content"].startswith(text) and WORDS.startswith(m["content"])
        assert m["content"] != WORDS

        # the same for "stream": false: a client that gives up waiting cancels too
        conv = conversation(chat_stack, ann)
        s = Stream(chat_stack.gateway.port, ann, conv, {"content": WORDS, "stream": False},
                   head=False)
        row = wait_for("the answer started", lambda: (lambda ms: ms[1] if len(ms) == 2 and ms[1][
            "content"] else None)(messages(chat_stack, ann, conv)))
        s.close()
        m = wait_for("cancelled", lambda: (lambda m: m if m["status"] != "streaming" else None)(
            assistant(chat_stack, ann, conv, row["id"])))
        assert m["status"] == "cancelled" and WORDS.startswith(m["content"]), m
        assert m["content"] != WORDS

        # the stream worker is killed: the client gets an error event, then the end;
        # the next stream worker adopts the journal and stores the message failed
        conv = conversation(chat_stack, ann)
        s = Stream(chat_stack.gateway.port, ann, conv, {"content": WORDS})
        mid = s.next()[1]["assistant_message_id"]
        assert s.next()[0] == "delta"
        worker.kill()
        rest = s.rest()
        assert [n for n, _ in rest[:-1]] == ["delta"] * (len(rest) - 1), rest
        name, data = rest[-1]
        assert name == "error" and set(data) == {"error"}, rest[-1]
        assert data["error"]["code"] == "worker_lost" and data["error"]["message"]
        assert assistant(chat_stack, ann, conv, mid)["status"] == "streaming"
        replace_streamworker(chat_stack, token_delay_ms=250, checkpoint_ms=100)
        m = wait_for("failed", lambda: (lambda m: m if m["status"] != "streaming" else None)(
            assistant(chat_stack, ann, conv, mid)))
        assert m["status"] == "failed" and WORDS.startswith(m["content"]), m


def test_sigterm_drains_streams(chat_stack):
    """A stopping gateway lets a short answer finish, ends a long one with an error
    event (the answer itself goes on and is stored), and exits 0."""
    ann = chat_stack.user()
    with slow_streamworker(chat_stack):
        gw = Gateway(chat_stack, drain_ms=1500, sse_keepalive_s=1)
        try:
            short_conv, long_conv = conversation(chat_stack, ann), conversation(chat_stack, ann)
            short = Stream(gw.port, ann, short_conv, {"content": "two words"})
            long = Stream(gw.port, ann, long_conv, {"content": WORDS})
            assert short.next()[0] == "message"
            long_id = long.next()[1]["assistant_message_id"]
            gw.proc.signal(signal.SIGTERM)
            rest = short.rest()
            assert [n for n, _ in rest] == ["delta", "delta", "done"], rest
            rest = long.rest()
            assert [n for n, _ in rest[:-1]] == ["delta"] * (len(rest) - 1)
            assert rest[-1][0] == "error" and rest[-1][1]["error"]["code"] == "unavailable"
            # it says where the answer can be read back
            assert "/v1/chat/conversations/%s/messages" % long_conv in rest[-1][1]["error"]["message"]
        finally:
            gw.stop()  # asserts exit status 0
        m = wait_for("the long answer stored", lambda: (
            lambda m: m if m["status"] != "streaming" else None)(
                assistant(chat_stack, ann, long_conv, long_id)), timeout=30)
        assert m["status"] == "complete" and m["content"] == WORDS


def test_sigterm_answers_requests_still_waiting(chat_stack):
    """A "stream": false answer still running when the drain ends gets a 503 with
    Retry-After, never a connection closed without a response."""
    ann = chat_stack.user()
    with slow_streamworker(chat_stack):
        gw = Gateway(chat_stack, drain_ms=1000)
        try:
            conv = conversation(chat_stack, ann)
            waiting = Stream(gw.port, ann, conv, {"content": WORDS, "stream": False},
                             head=False)
            wait_for("the answer started", lambda: len(messages(chat_stack, ann, conv)) == 2
                     or None)
            gw.proc.signal(signal.SIGTERM)
            while b"\r\n\r\n" not in waiting.buf:
                assert waiting._fill(), "closed without a response: %r" % waiting.buf
            waiting.status, waiting.headers, waiting.buf = parse_head(waiting.buf)
            assert waiting.status == 503 and "retry-after" in waiting.headers, waiting.headers
            assert waiting.json()["error"]["code"] == "unavailable"
        finally:
            gw.stop()  # asserts exit status 0


def test_deadline_ends_stream_with_timeout(chat_stack):
    """chat_deadline_ms covers the whole answer: past it the stream ends with an
    error event `timeout`, and the message is stored failed with its text so far."""
    ann = chat_stack.user()
    with slow_streamworker(chat_stack):
        gw = Gateway(chat_stack, chat_deadline_ms=2500)
        try:
            conv = conversation(chat_stack, ann)
            s = Stream(gw.port, ann, conv, {"content": WORDS})
            mid = s.next()[1]["assistant_message_id"]
            rest = s.rest()
            assert [n for n, _ in rest[:-1]] == ["delta"] * (len(rest) - 1), rest
            assert rest[-1][0] == "error" and rest[-1][1]["error"]["code"] == "timeout", rest[-1]
        finally:
            gw.stop()
        m = wait_for("failed", lambda: (lambda m: m if m["status"] != "streaming" else None)(
            assistant(chat_stack, ann, conv, mid)))
        assert m["status"] == "failed" and WORDS.startswith(m["content"]), m
        assert m["content"] != WORDS


def test_keepalive_comments_on_a_silent_stream(chat_stack):
    """A stream silent for sse_keepalive_s gets `: keep-alive` comment lines between
    its events; the events themselves are unchanged."""
    ann = chat_stack.user()
    with slow_streamworker(chat_stack, token_delay_ms=1500):
        gw = Gateway(chat_stack, sse_keepalive_s=1)
        try:
            conv = conversation(chat_stack, ann)
            s = Stream(gw.port, ann, conv, {"content": "slow answer"})
            check_sse_head(s.status, s.headers)
            check_answer([s.next()] + s.rest(), "slow answer", ann, conv)
            assert s.comments >= 1
        finally:
            gw.stop()


def test_500_streams_while_clipboard_requests_pass(chat_stack):
    """The seed's second failure, shown not to happen: 500 answers stream at once
    (each for a few seconds) through DB workers with pools of 2 connections (4 in
    all), and clipboard writes and reads keep succeeding meanwhile, because a stream
    holds no connection between its begin, checkpoints and finish."""
    n = 500
    ann = chat_stack.user()
    writer = chat_stack.device(ann, "writer")
    convs = [conversation(chat_stack, ann) for _ in range(10)]
    content = " ".join("t%d" % i for i in range(30))
    stop = threading.Event()
    health = []

    def clipboard_work(i):
        s = requests.Session()
        statuses = []
        j = 0
        while not stop.is_set() or j < 3:
            r = s.post(chat_stack.url + "/v1/clipboard", json={"content": "c%d-%d" % (i, j)},
                       headers=writer.auth, timeout=15)
            statuses.append(r.status_code)
            r = s.get(chat_stack.url + "/v1/clipboard?limit=5", headers=writer.auth, timeout=15)
            statuses.append(r.status_code)
            health.append(s.get(chat_stack.url + "/health", timeout=15).json())
            j += 1
        return statuses

    with slow_streamworker(chat_stack, token_delay_ms=100, checkpoint_ms=1000):
        sel = selectors.DefaultSelector()
        raw = {}
        for i in range(n):
            sock = socket.create_connection(("127.0.0.1", chat_stack.gateway.port), timeout=10)
            sock.sendall(request_bytes(ann, convs[i % len(convs)], {"content": content}))
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
            raw[i] = b""
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            workers = [ex.submit(clipboard_work, i) for i in range(4)]
            try:
                open_ = n
                end = time.monotonic() + 60
                while open_:
                    assert time.monotonic() < end, "%d streams never ended" % open_
                    for key, _ in sel.select(timeout=1):
                        chunk = key.fileobj.recv(65536)
                        if chunk:
                            raw[key.data] += chunk
                        else:
                            sel.unregister(key.fileobj)
                            key.fileobj.close()
                            open_ -= 1
            finally:
                stop.set()
            statuses = [x for w in workers for x in w.result()]
        sel.close()
    assert statuses and set(statuses) == {200, 201}, {s: statuses.count(s) for s in statuses}
    ids = set()
    for i in range(n):
        status, _, events, _ = parse_stream(raw[i])
        assert status == 200, (i, events)
        m = check_answer(events, content, ann, convs[i % len(convs)])
        ids.add(m["id"])
    assert len(ids) == n
    # more streams were open at once than the database has connections, and no
    # pool ever went past its 2 connections
    most = max(h["gateway"]["streams"] for h in health)
    assert most > 4, "at most %d streams seen open at once" % most
    for h in health:
        assert h["status"] == "ok", h
        for p in h["pools"]:
            assert p["checked_out"] <= p["pool_size"] == 2 and p["overflow"] == 0, p
    stored = [m for c in convs for m in messages(chat_stack, ann, c)]
    assert len(stored) == 2 * n
    assert all(m["status"] == "complete" for m in stored)
    metrics = requests.get(chat_stack.url + "/metrics", timeout=5).text
    assert "sluice_gateway_active_streams 0\n" in metrics


def sse_events(text):
    """(name, data) of each event of a whole SSE body, comments left out."""
    out = []
    for block in text.split("\n\n"):
        if block.strip() and not block.startswith(":"):
            name, data = parse_block(block.encode())
            out.append((name, data))
    return out


def test_idempotency_key_replays_the_answer(chat_stack):
    """A retried POST with the same Idempotency-Key gets the first answer back (the
    same messages; streamed, as `message` then `done`) and nothing is generated or
    stored again; while the first answer is still streaming, a retry is 409; a key
    already used for another write is 409 too."""
    ann = chat_stack.user()
    conv = conversation(chat_stack, ann)
    path = "/v1/chat/conversations/%s/messages" % conv
    key = {"Idempotency-Key": "chat-once-1"}
    r1 = chat_stack.post(path, {"content": "say it once", "stream": False}, token=ann.token,
                         headers=key)
    assert r1.status_code == 201, r1.text
    first = r1.json()
    r2 = chat_stack.post(path, {"content": "say it once", "stream": False}, token=ann.token,
                         headers=key)
    assert r2.status_code == 201, r2.text
    again = r2.json()
    assert again["user_message"] == first["user_message"]
    for field in ("id", "content", "status", "role"):
        assert again["assistant_message"][field] == first["assistant_message"][field], field
    r3 = requests.post(chat_stack.url + path, json={"content": "say it once"}, timeout=20,
                       headers=dict(key, Authorization="Bearer " + ann.token))
    assert r3.status_code == 200 and r3.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r3.text)
    assert [n for n, _ in events] == ["message", "done"], events
    assert events[0][1]["assistant_message_id"] == first["assistant_message"]["id"]
    assert events[1][1]["message"]["content"] == "say it once"
    assert len(messages(chat_stack, ann, conv)) == 2  # nothing generated again

    # a key already used for a clipboard write: 409, nothing stored
    clip = {"Idempotency-Key": "used-by-clipboard"}
    assert chat_stack.post("/v1/clipboard", {"content": "c"}, token=ann.token,
                           headers=clip).status_code == 201
    r = chat_stack.post(path, {"content": "x", "stream": False}, token=ann.token, headers=clip)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    assert len(messages(chat_stack, ann, conv)) == 2

    # the first request still streaming: a retry is 409 and leaves it alone
    with slow_streamworker(chat_stack):
        slow = {"Idempotency-Key": "chat-slow-1"}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(requests.post, chat_stack.url + path, timeout=60,
                                  json={"content": WORDS, "stream": False},
                                  headers=dict(slow, Authorization="Bearer " + ann.token))
            wait_for("the first answer streaming", lambda: any(
                m["status"] == "streaming" for m in messages(chat_stack, ann, conv)))
            r = chat_stack.post(path, {"content": WORDS, "stream": False}, token=ann.token,
                                headers=slow)
            assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
            done = running.result(timeout=60)
        assert done.status_code == 201 and done.json()["assistant_message"]["content"] == WORDS
    r = chat_stack.post(path, {"content": WORDS, "stream": False}, token=ann.token, headers=slow)
    assert r.status_code == 201 and r.json()["assistant_message"]["id"] == \
        done.json()["assistant_message"]["id"]
    assert len(messages(chat_stack, ann, conv)) == 4
