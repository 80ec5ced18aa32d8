"""A stream worker killed mid-stream, and many streams on a tiny DB pool: the
seed's failure (a streamed answer holding a pooled session) shown not to happen."""
import threading
import time

import smp
from conftest import (auth_of, begin_stream, generate, messages, start_streamworker,
                      wait_message, wait_service)


def test_killed_worker_message_ends_failed(chat):
    """The broker answers the client worker_lost; a surviving stream worker finds the
    dead one's journal (its flock is gone) and finishes the message as failed."""
    c = chat.client
    doomed = start_streamworker(chat.stack, token_delay_ms=50, checkpoint_ms=100,
                                worker_name="doomed")
    wait_service(c, "chat")
    words = ["k%d" % i for i in range(300)]
    rid, aid = begin_stream(c, chat.user, chat.conversation, " ".join(words))
    # wait until a checkpoint stored some text, then start a second worker (which
    # must not touch the live worker's journal), then kill the first
    watcher = smp.Client(chat.stack.frontend)
    try:
        wait_message(watcher, chat.user, chat.conversation, aid,
                     lambda m: m["status"] == "streaming" and m["content"])
        survivor = start_streamworker(chat.stack, worker_name="survivor")
        time.sleep(0.5)  # a few journal scans by the survivor while the first lives
        m = {x["id"]: x for x in messages(watcher, chat.user, chat.conversation)}[aid]
        assert m["status"] == "streaming", m
        doomed.kill()
        reply = c.wait_reply(rid, timeout=15)
        assert reply["status"] == 503 and reply["error"]["code"] == "worker_lost", reply
        m = wait_message(watcher, chat.user, chat.conversation, aid,
                         lambda m: m["status"] != "streaming", timeout=15)
        assert m["status"] == "failed" and m["error"].startswith("worker_lost:"), m
        assert " ".join(words).startswith(m["content"]) and m["content"]
        survivor.wait_log("finished as failed")
    finally:
        watcher.close()


def test_restarted_worker_recovers_its_own_journal(chat):
    """With no other stream worker alive, the next one started adopts the journal."""
    c = chat.client
    w = start_streamworker(chat.stack, token_delay_ms=50, checkpoint_ms=100)
    wait_service(c, "chat")
    rid, aid = begin_stream(c, chat.user, chat.conversation, " ".join(["r"] * 300))
    c.recv(timeout=10)  # a first delta
    w.kill()
    start_streamworker(chat.stack)
    m = wait_message(c, chat.user, chat.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "failed" and m["error"].startswith("worker_lost:")
    assert c.wait_reply(rid, timeout=15)["status"] == 503


def test_many_streams_small_pool_clipboard_keeps_working(chat, mariadb):
    """250 concurrent echo streams through one stream worker, one DB worker with a
    pool of 2 (no overflow); clipboard writes and reads from another client keep
    succeeding the whole time, and the database never sees more than 2 connections."""
    stack = chat.stack
    n, words = 250, 60
    start_streamworker(stack, token_delay_ms=20, checkpoint_ms=300, max_streams=n + 10)
    c = chat.client
    wait_service(c, "chat")
    convs = []
    for i in range(10):
        r = c.call("chat.conversation.create", {"title": "load %d" % i}, auth=auth_of(chat.user))
        convs.append(r["data"]["id"])

    stop = threading.Event()
    clip = {"ok": 0, "bad": [], "max_s": 0.0}
    conns = {"max": 0, "samples": 0}

    def clipboard_loop():
        cl = smp.Client(stack.frontend)
        try:
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                r = cl.call("clipboard.create", {"content": "item %d" % i,
                                                  "content_type": "text/plain"},
                            auth=auth_of(chat.user))
                r2 = cl.call("clipboard.latest", {}, auth=auth_of(chat.user))
                clip["max_s"] = max(clip["max_s"], time.monotonic() - t)
                if r["status"] == 201 and r2["status"] == 200:
                    clip["ok"] += 1
                else:
                    clip["bad"].append((r, r2))
                i += 1
        finally:
            cl.close()

    def connection_sampler():
        while not stop.is_set():
            conns["max"] = max(conns["max"], len(mariadb.connection_ids(database=stack.database)))
            conns["samples"] += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=clipboard_loop), threading.Thread(target=connection_sampler)]
    for t in threads:
        t.start()
    try:
        texts = {}
        rids = {}
        for i in range(n):
            content = " ".join("s%dw%d" % (i, j) for j in range(words))
            rid = generate(c, chat.user, convs[i % len(convs)], content)
            rids[rid] = content
            texts[rid] = []
        replies = {}
        end = time.monotonic() + 60
        while len(replies) < n and time.monotonic() < end:
            cmd, rid, body = c.recv(timeout=30)
            if cmd == smp.PARTIAL:
                if body["data"]["event"] == "delta":
                    texts[rid].append(body["data"]["text"])
            else:
                replies[rid] = body
        # let the clipboard loop run a little past the streams too
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(replies) == n
    bad = [r for r in replies.values() if r["status"] != 200]
    assert not bad, bad[:3]
    for rid, content in rids.items():
        assert "".join(texts[rid]) == content
        assert replies[rid]["data"]["assistant_message"]["content"] == content
    assert clip["ok"] > 10 and not clip["bad"], clip["bad"][:3]
    assert conns["samples"] > 5 and conns["max"] <= 2, conns
    # every answer is stored complete
    complete = 0
    for conv in convs:
        for m in messages(c, chat.user, conv):
            if m["role"] == "assistant":
                assert m["status"] == "complete", m
                complete += 1
    assert complete == n
    print("clipboard round trips during the streams: %d, slowest %.3f s; max DB connections %d"
          % (clip["ok"], clip["max_s"], conns["max"]))


def test_db_worker_restart_mid_stream_answer_still_complete(chat):
    """The only DB worker stops while an answer streams and comes back after the
    answer ended: checkpoints fail meanwhile, the finish waits and retries, and the
    answer is stored complete; the requester gets it."""
    c = chat.client
    start_streamworker(chat.stack, token_delay_ms=30, checkpoint_ms=50)
    wait_service(c, "chat")
    words = ["p%d" % i for i in range(12)]
    rid, aid = begin_stream(c, chat.user, chat.conversation, " ".join(words))
    chat.stack.workers[0].stop(timeout=20)
    got = []
    while len(got) < len(words):
        cmd, _, body = c.recv(timeout=10)
        assert cmd == smp.PARTIAL, body
        got.append(body["data"]["text"])
    time.sleep(0.5)  # the finish is refused (no db worker) and retried meanwhile
    chat.stack.start_worker(pool_size=2, max_overflow=0)
    reply = c.wait_reply(rid, timeout=30)
    assert reply["status"] == 200, reply
    assert reply["data"]["assistant_message"]["content"] == " ".join(words)
    m = wait_message(c, chat.user, chat.conversation, aid, lambda m: m["status"] != "streaming")
    assert m["status"] == "complete" and m["content"] == " ".join(words)


def wait_for_table_lock(mariadb, database, timeout=10.0):
    """Until a statement of database waits for a table lock (the begin reached the
    DB worker and waits there)."""
    end = time.monotonic() + timeout
    while not any("metadata lock" in (row[0] or "") for row in mariadb.sql(
            "SELECT state FROM information_schema.processlist WHERE db = '%s'" % database)):
        assert time.monotonic() < end, "the begin never reached the locked table"
        time.sleep(0.05)


def test_broker_killed_with_a_begin_in_flight(chat, mariadb):
    """The broker dies while a chat.message.begin sits in the DB worker (the
    messages table is locked, so the begin waits there). The begin commits after
    the broker is gone, so its reply is lost. The stream worker's connection to the
    broker drops, it answers its begin 503 broker_lost locally at once, and tries
    the begin again with the same idempotency key through the restarted broker. The
    stored result comes back, and the answer is streamed and finished. Nothing is
    left `streaming` and no second pair of rows appears."""
    stack = chat.stack
    w = start_streamworker(stack, token_delay_ms=10, checkpoint_ms=100)
    wait_service(chat.client, "chat")
    content = "lost begin words"
    lock = mariadb.cli(stack.database)
    try:
        lock.run("LOCK TABLES messages WRITE;")
        generate(chat.client, chat.user, chat.conversation, content)
        wait_for_table_lock(mariadb, stack.database)
        stack.broker.kill()
        time.sleep(0.5)
        stack.start_broker()
        time.sleep(1.5)  # retries meet the new broker (no DB worker yet, then the lock)
    finally:
        lock.run("UNLOCK TABLES;")
        lock.close()
    c = stack.client()
    stack.wait_ready(c, timeout=15)
    rows = None
    end = time.monotonic() + 20
    while time.monotonic() < end:
        rows = mariadb.sql("SELECT role, status, content FROM messages WHERE conversation_id = %d"
                           " ORDER BY id" % int(chat.conversation), stack.database)
        if rows and all(r[1] != "streaming" for r in rows):
            break
        time.sleep(0.2)
    assert rows == [["user", "complete", content], ["assistant", "complete", content]], rows
    w.wait_log("lost the connection to the broker", timeout=1)
    w.wait_log("trying again with the same key", timeout=1)


def test_worker_killed_with_a_begin_in_flight(chat, mariadb):
    """The stream worker dies while its chat.message.begin waits in the DB worker
    (the messages table is locked). The begin commits afterwards, with no actor to
    finish the row. The begin was journaled as in flight (by its nonce) before it
    was sent, so the next stream worker adopts the journal, finds the row by the
    nonce once it exists (chat.message.find) and finishes it `failed`."""
    stack = chat.stack
    doomed = start_streamworker(stack, token_delay_ms=10, worker_name="doomed")
    wait_service(chat.client, "chat")
    lock = mariadb.cli(stack.database)
    try:
        lock.run("LOCK TABLES messages WRITE;")
        generate(chat.client, chat.user, chat.conversation, "never streamed")
        wait_for_table_lock(mariadb, stack.database)
        doomed.kill()
        survivor = start_streamworker(stack, worker_name="survivor")
        time.sleep(1.0)  # a few scans: the begin has not committed, the row is not there
    finally:
        lock.run("UNLOCK TABLES;")
        lock.close()
    rows = None
    end = time.monotonic() + 15
    while time.monotonic() < end:
        rows = mariadb.sql("SELECT role, status, error FROM messages WHERE conversation_id = %d"
                           " ORDER BY id" % int(chat.conversation), stack.database)
        if len(rows) == 2 and rows[1][1] != "streaming":
            break
        time.sleep(0.2)
    assert len(rows) == 2 and rows[0][:2] == ["user", "complete"], rows
    assert rows[1][:2] == ["assistant", "failed"] and rows[1][2].startswith("worker_lost:"), rows
    survivor.wait_log("finished as failed", timeout=1)
