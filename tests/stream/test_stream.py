"""sluice-streamworker against a real broker, real DB workers and MariaDB: echo
streams, checkpoints, cancellation, bad requests, SIGTERM."""
import signal

import smp
from conftest import (auth_of, begin_stream, generate, make_user, messages, new_conversation,
                      start_streamworker, wait_message, wait_service)

WORDS = "the quick brown fox jumps over the lazy dog".split()


def deltas_of(partials):
    return [p["data"]["text"] for p in partials if p["data"]["event"] == "delta"]


def test_echo_stream_end_to_end(chat):
    c = chat.client
    start_streamworker(chat.stack, token_delay_ms=5)
    wait_service(c, "chat")
    content = "  ".join(WORDS) + "\n"
    rid = generate(c, chat.user, chat.conversation, content)
    reply = c.wait_reply(rid, timeout=20)
    assert reply["status"] == 200, reply
    first = c.partials[0]["data"]
    assert first["event"] == "message"
    assert first["user_message"]["content"] == content
    assert first["user_message"]["role"] == "user"
    aid = first["assistant_message_id"]
    # one delta per word, in order: the first bare, the others after one space
    assert deltas_of(c.partials[1:]) == [WORDS[0]] + [" " + w for w in WORDS[1:]]
    assert all(p["data"]["event"] == "delta" for p in c.partials[1:])
    data = reply["data"]
    assert data["user_message"] == first["user_message"]
    msg = data["assistant_message"]
    assert msg["id"] == aid and msg["status"] == "complete" and msg["role"] == "assistant"
    assert msg["content"] == " ".join(WORDS)
    stored = {m["id"]: m for m in messages(c, chat.user, chat.conversation)}
    assert stored[aid]["status"] == "complete" and stored[aid]["content"] == " ".join(WORDS)
    assert stored[first["user_message"]["id"]]["content"] == content


def test_checkpoints_visible_while_streaming(chat):
    c = chat.client
    start_streamworker(chat.stack, token_delay_ms=40, checkpoint_ms=100)
    wait_service(c, "chat")
    words = ["w%d" % i for i in range(40)]
    rid, aid = begin_stream(c, chat.user, chat.conversation, " ".join(words))
    # a reader sees the row streaming with part of the text, long before the end
    watcher = smp.Client(chat.stack.frontend)
    try:
        m = wait_message(watcher, chat.user, chat.conversation, aid,
                         lambda m: m["status"] == "streaming" and len(m["content"]) > 0)
        assert " ".join(words).startswith(m["content"])
        assert m["content"] != " ".join(words)
    finally:
        watcher.close()
    reply = c.wait_reply(rid, timeout=20)
    assert reply["status"] == 200 and reply["data"]["assistant_message"]["content"] == " ".join(words)


def test_cancel_keeps_partial_text(chat):
    c = chat.client
    start_streamworker(chat.stack, token_delay_ms=50)
    wait_service(c, "chat")
    words = ["c%d" % i for i in range(200)]
    rid = generate(c, chat.user, chat.conversation, " ".join(words))
    seen = []
    aid = None
    while len(seen) < 5:
        cmd, r, body = c.recv(timeout=10)
        assert r == rid and cmd == smp.PARTIAL
        if body["data"]["event"] == "message":
            aid = body["data"]["assistant_message_id"]
        else:
            seen.append(body["data"]["text"])
    c.cancel(rid)
    reply = c.wait_reply(rid, timeout=10)
    assert reply["status"] == 499 and reply["error"]["code"] == "cancelled", reply
    m = wait_message(c, chat.user, chat.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "cancelled"
    assert m["content"].startswith("".join(seen)) and len(m["content"]) < len(" ".join(words))


def test_bad_requests_get_clear_errors(chat):
    c = chat.client
    start_streamworker(chat.stack)
    wait_service(c, "chat")
    other = make_user(c)
    others_conv = new_conversation(c, other)

    def ask(body):
        return c.request("chat", body, deadline_ms=5000)

    base = {"op": "chat.generate", "auth": auth_of(chat.user),
            "args": {"conversation_id": chat.conversation, "content": "hi"}}
    r = ask(dict(base, auth=None))
    assert r["status"] == 401 and r["error"]["code"] == "unauthorized"
    r = ask(dict(base, op="chat.nope"))
    assert r["status"] == 400 and "chat.generate" in r["error"]["message"]
    for args in ({"conversation_id": "12", "content": "x"}, {"conversation_id": -1, "content": "x"},
                 {"conversation_id": chat.conversation}, {"conversation_id": chat.conversation,
                                                          "content": ""},
                 {"conversation_id": chat.conversation, "content": 5}):
        r = ask(dict(base, args=args))
        assert r["status"] == 400 and r["error"]["code"] == "bad_request", (args, r)
    # another user's conversation looks exactly like a missing one
    r = ask(dict(base, args={"conversation_id": others_conv, "content": "x"}))
    assert r["status"] == 404 and r["error"]["code"] == "not_found", r
    r = ask(dict(base, args={"conversation_id": 10 ** 15, "content": "x"}))
    assert r["status"] == 404, r
    # and the worker still serves
    r = ask(base)
    assert r["status"] == 200 and r["data"]["assistant_message"]["content"] == "hi"


def test_deadline_fails_the_stream(chat):
    """The deadline passes mid-stream: 504, and the message is stored failed with
    what it had. Order, not time, says it was mid-stream: the message event and a
    first delta came before the 504 (the 4 s deadline is far inside the 20 s the
    answer would take, and far past what starting it takes on a busy machine)."""
    c = chat.client
    start_streamworker(chat.stack, token_delay_ms=100)
    wait_service(c, "chat")
    words = " ".join(["d"] * 200)
    rid, aid = begin_stream(c, chat.user, chat.conversation, words, deadline_ms=4000)
    cmd, r, body = c.recv(timeout=10)
    assert cmd == smp.PARTIAL and r == rid and body["data"]["event"] == "delta", body
    reply = c.wait_reply(rid, timeout=20)
    assert reply["status"] == 504 and reply["error"]["code"] == "timeout", reply
    m = wait_message(c, chat.user, chat.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "failed" and m["error"].startswith("timeout:"), m
    assert words.startswith(m["content"]) and m["content"] != words, m


def test_sigterm_lets_running_streams_complete(chat):
    c = chat.client
    w = start_streamworker(chat.stack, token_delay_ms=30, shutdown_grace_ms=10000)
    wait_service(c, "chat")
    words = ["s%d" % i for i in range(20)]
    rid, _ = begin_stream(c, chat.user, chat.conversation, " ".join(words))
    w.signal(signal.SIGTERM)
    reply = c.wait_reply(rid, timeout=15)
    assert reply["status"] == 200 and reply["data"]["assistant_message"]["content"] == " ".join(words)
    assert w.popen.wait(timeout=10) == 0
    assert "drained" in w.log()


def test_sigterm_grace_over_stores_failed(chat):
    c = chat.client
    w = start_streamworker(chat.stack, token_delay_ms=50, shutdown_grace_ms=300)
    wait_service(c, "chat")
    rid = generate(c, chat.user, chat.conversation, " ".join(["g"] * 400))
    seen = 0
    aid = None
    while seen < 3:
        cmd, _, body = c.recv(timeout=10)
        if body["data"]["event"] == "message":
            aid = body["data"]["assistant_message_id"]
        else:
            seen += 1
    w.signal(signal.SIGTERM)
    reply = c.wait_reply(rid, timeout=15)
    assert reply["status"] == 503 and reply["error"]["code"] == "worker_shutdown", reply
    assert w.popen.wait(timeout=10) == 0
    m = wait_message(c, chat.user, chat.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "failed" and m["error"].startswith("worker_shutdown:")
    assert m["content"].startswith("g g g")
