"""Fixtures for the stream worker tests: the DB worker tests' stack (one private
MariaDB per session, a fresh database and a real broker per test, real
sluice-dbworker processes), plus sluice-streamworker processes and a fake
OpenAI-compatible server.

The stack is the one tests/db/conftest.py defines, loaded from there (not copied),
so both suites start the system the same way.
"""
import importlib.util
import json
import os
import select
import socket
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import procs
import smp

_spec = importlib.util.spec_from_file_location(
    "sluice_db_conftest", os.path.join(procs.SOURCE_DIR, "tests", "db", "conftest.py"))
_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_db)

# the db suite's fixtures, re-exported so pytest finds them here
mariadb = _db.mariadb
stack = _db.stack
make_user = _db.make_user
auth_of = _db.auth_of
flags = _db.flags

STREAMWORKER = procs.binary("streamworker")


def start_streamworker(stack, wait=True, journal_dir=None, env=None, **settings):
    """A sluice-streamworker attached to the stack's broker (echo provider unless
    told otherwise). Its journal folder defaults to one per test."""
    if journal_dir is None:
        journal_dir = getattr(stack, "journal_dir", None)
        if journal_dir is None:
            journal_dir = tempfile.mkdtemp(prefix="stream-journal-")
            stack.journal_dir = journal_dir
    s = {"backend": stack.backend, "frontend": stack.frontend, "journal_dir": journal_dir,
         "journal_scan_ms": 200}
    s.update(settings)
    w = procs.Proc([STREAMWORKER] + flags(s), name="streamworker", env=env)
    stack.workers.append(w)
    if wait:
        w.wait_log("serving", timeout=15)
    return w


def wait_service(client, name, timeout=10.0):
    """Until the broker lists service name as live."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.request("sys", {"op": "services", "args": {}}, deadline_ms=1000)
        if r.get("status") == 200 and name in (r.get("data") or []):
            return
        time.sleep(0.05)
    raise AssertionError("service %s never became live" % name)


def new_conversation(client, user, title="t"):
    r = client.call("chat.conversation.create", {"title": title}, auth=auth_of(user))
    assert r["status"] == 201, r
    return r["data"]["id"]


def generate(client, user, conversation_id, content, deadline_ms=60000):
    """Sends chat.generate; returns the request id (read the answer with wait_reply)."""
    return client.send("chat", {"op": "chat.generate", "auth": auth_of(user),
                                "args": {"conversation_id": conversation_id,
                                         "content": content}},
                       deadline_ms=deadline_ms)


def begin_stream(client, user, conversation_id, content, deadline_ms=60000):
    """Sends chat.generate and reads its first PARTIAL, which must be the message
    event; returns (request id, assistant message id)."""
    rid = generate(client, user, conversation_id, content, deadline_ms)
    cmd, r, body = client.recv(timeout=10)
    assert cmd == smp.PARTIAL and r == rid and body["data"]["event"] == "message", body
    return rid, body["data"]["assistant_message_id"]


def messages(client, user, conversation_id):
    """Every message, oldest first: pages until the worker says there is no more."""
    out, after = [], 0
    while True:
        r = client.call("chat.message.list", {"conversation_id": conversation_id,
                                              "after": after}, auth=auth_of(user))
        assert r["status"] == 200, r
        out += r["data"]["messages"]
        after = r["data"]["next_after"]
        if not r["data"]["more"]:
            return out


def wait_message(client, user, conversation_id, message_id, pred, timeout=15.0):
    """Polls chat.message.list until message_id satisfies pred; returns it."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        for m in messages(client, user, conversation_id):
            if m["id"] == message_id:
                last = m
                if pred(m):
                    return m
        time.sleep(0.05)
    raise AssertionError("message %s never matched; last seen %r" % (message_id, last))


@pytest.fixture
def chat(stack):
    """A stack with one DB worker (pool 2, no overflow) and a client with a user and
    a conversation; the test starts the stream workers it wants."""
    stack.start_worker(pool_size=2, max_overflow=0)
    c = stack.client()
    stack.wait_ready(c)
    user = make_user(c)
    conv = new_conversation(c, user)

    class Chat:
        pass

    ch = Chat()
    ch.stack, ch.client, ch.user, ch.conversation = stack, c, user, conv
    return ch


# ---------------------------------------------------------------- fake provider

class FakeOpenAI:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 whose behaviour is
    chosen by the last user message: "mode:<name> ...". Requests are recorded, and
    so is a client (libcurl) that closes a stream before its end: .hangups holds the
    number of words each such stream had sent, and .hung_up is set at the first."""

    SLOW_WORDS = 300

    def __init__(self):
        self.requests = []
        self.release = threading.Event()  # lets a stalled answer end
        self.hangups = []
        self.hung_up = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body})
                last = body["messages"][-1]["content"] if body.get("messages") else ""
                mode = last.split()[0][5:] if last.startswith("mode:") else "ok"
                getattr(fake, "_" + mode.replace("-", "_"))(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = "http://127.0.0.1:%d/v1" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- helpers
    @staticmethod
    def _start_stream(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()

    @staticmethod
    def _event(h, data):
        h.wfile.write(("data: %s\n\n" % data).encode())
        h.wfile.flush()

    @staticmethod
    def _chunk(text=None, finish=None):
        delta = {} if text is None else {"content": text}
        return json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "fake",
                           "choices": [{"index": 0, "delta": delta,
                                        "finish_reason": finish}]})

    def _error(self, h, status, message):
        data = json.dumps({"error": {"message": message, "type": "fake"}}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)

    # -- modes
    def _ok(self, h, body):
        """Answers "Hello, world!" in three chunks, split awkwardly across writes."""
        self._start_stream(h)
        self._event(h, json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"},
                                                "finish_reason": None}]}))
        for piece in ["Hello", ", wor", "ld!"]:
            raw = ("data: %s\r\n\r\n" % self._chunk(piece)).encode()
            h.wfile.write(raw[:7])
            h.wfile.flush()
            time.sleep(0.01)
            h.wfile.write(raw[7:])
            h.wfile.flush()
        h.wfile.write(b": keep-alive comment\n\n")
        self._event(h, self._chunk(None, "stop"))
        self._event(h, "[DONE]")

    @staticmethod
    def _peer_closed(h, wait_s):
        """Waits up to wait_s for the client to send something; True when what it
        sent is the end of the connection (it closed it)."""
        ready, _, _ = select.select([h.connection], [], [], wait_s)
        if not ready:
            return False
        try:
            return h.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _slow(self, h, body):
        """Words 100 ms apart, up to SLOW_WORDS (30 s of them): a stream that only
        ends early if the client hangs up, which is recorded (see .hangups)."""
        self._start_stream(h)
        for i in range(self.SLOW_WORDS):
            try:
                self._event(h, self._chunk(("w%d" % i) if i == 0 else (" w%d" % i)))
            except OSError:  # reset by the client between the checks
                closed = True
            else:
                closed = self._peer_closed(h, 0.1)
            if closed:
                self.hangups.append(i + 1)
                self.hung_up.set()
                h.close_connection = True
                return
        self._event(h, "[DONE]")

    def _stall(self, h, body):
        """Two words, then silence until released."""
        self._start_stream(h)
        self._event(h, self._chunk("partial"))
        self._event(h, self._chunk(" answer"))
        self.release.wait(30)

    def _malformed(self, h, body):
        self._start_stream(h)
        self._event(h, self._chunk("before"))
        self._event(h, "{this is not json")
        self._event(h, self._chunk(" after"))
        self._event(h, "[DONE]")

    def _cut(self, h, body):
        """Ends the body (and the connection) without [DONE]."""
        self._start_stream(h)
        self._event(h, self._chunk("cut"))
        h.wfile.write(b"data: {\"choi")
        h.wfile.flush()
        h.close_connection = True

    def _stream_error(self, h, body):
        self._start_stream(h)
        self._event(h, self._chunk("so far"))
        self._event(h, json.dumps({"error": {"message": "model overloaded"}}))

    def _http500(self, h, body):
        self._error(h, 500, "internal failure of the fake")

    def _http429(self, h, body):
        self._error(h, 429, "Rate limit reached for requests")

    def _json200(self, h, body):
        data = b'{"choices":[{"message":{"content":"not streamed"}}]}'
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def fake_openai():
    f = FakeOpenAI()
    yield f
    f.close()


def unique():
    return uuid.uuid4().hex[:8]
