"""Every db op through a real broker and a real MariaDB: results, errors, isolation
between users, input checking, idempotent replay and events."""
import re

import pytest

from conftest import auth_of, gather, make_user, recv_event, wait_subscribed

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BIG = 2 ** 63  # one above the largest id


@pytest.fixture
def env(stack):
    stack.start_worker()
    c = stack.client()
    stack.wait_ready(c)
    return stack, c


def count(stack, table, where="1"):
    return int(stack.db.scalar("SELECT COUNT(*) FROM `%s`.%s WHERE %s"
                               % (stack.database, table, where)))


def test_accounts_sessions_and_tokens(env):
    stack, c = env
    r = c.call("user.create", {"username": "alice", "password": "correct horse"})
    assert r["status"] == 201, r
    assert r["data"]["username"] == "alice" and isinstance(r["data"]["id"], int)
    assert RFC3339.match(r["data"]["created_at"])
    # taken, also in another case
    for name in ("alice", "ALICE"):
        r = c.call("user.create", {"username": name, "password": "correct horse"})
        assert r["status"] == 409 and r["error"]["code"] == "conflict", r
    # passwords are Argon2id hashes
    stored = stack.db.scalar("SELECT password_hash FROM `%s`.users WHERE username='alice'"
                             % stack.database)
    assert stored.startswith("$argon2id$")

    s = c.call("session.create", {"username": "alice", "password": "correct horse",
                                  "device_name": "phone"})
    assert s["status"] == 201, s
    token = s["data"]["token"]
    assert len(token) >= 43 and re.match(r"^[A-Za-z0-9_-]+$", token)
    # tokens are stored only as SHA-256
    assert count(stack, "devices", "token_hash = UNHEX(SHA2('%s', 256))" % token) == 1

    wrong = c.call("session.create", {"username": "alice", "password": "wrong password",
                                      "device_name": "x"})
    nouser = c.call("session.create", {"username": "nobody", "password": "wrong password",
                                       "device_name": "x"})
    assert wrong["status"] == nouser["status"] == 401
    assert wrong["error"] == nouser["error"]

    v = c.call("auth.verify", {"token": token})
    assert v == {"status": 200, "data": {"user_id": s["data"]["user_id"],
                                         "device_id": s["data"]["device_id"]}}
    assert c.call("auth.verify", {"token": "nope"})["status"] == 401


def test_devices(env):
    stack, c = env
    u = make_user(c, device="laptop")
    second = c.call("session.create", {"username": u["username"], "password": "password-1",
                                       "device_name": "phone"})["data"]
    other = make_user(c)
    a = auth_of(u)

    r = c.call("device.list", auth=a)
    assert r["status"] == 200
    devs = r["data"]["devices"]
    assert [d["name"] for d in devs] == ["laptop", "phone"]
    assert devs[0]["is_active"] is False and devs[0]["last_seen_at"] is None
    assert RFC3339.match(devs[0]["created_at"])

    r = c.call("device.set_active", {"device_id": second["device_id"], "active": True}, auth=a)
    assert r == {"status": 204}
    d = [d for d in c.call("device.list", auth=a)["data"]["devices"]
         if d["id"] == second["device_id"]][0]
    assert d["is_active"] is True and RFC3339.match(d["last_seen_at"])

    # another user's device is 404, exactly as a missing one
    for op, args in (("device.set_active", {"device_id": second["device_id"], "active": False}),
                     ("device.revoke", {"device_id": second["device_id"]})):
        assert c.call(op, args, auth=auth_of(other))["status"] == 404
    assert c.call("device.revoke", {"device_id": 999999}, auth=a)["status"] == 404

    sub = stack.subscriber("user/%d/" % u["user_id"])
    wait_subscribed(stack, c, a, sub)
    r = c.call("device.revoke", {"device_id": second["device_id"]}, auth=a)
    assert r == {"status": 204}
    topic, ev = recv_event(sub)
    assert topic == "user/%d/" % u["user_id"]
    assert ev == {"type": "device.revoked", "device_id": second["device_id"]}
    assert c.call("auth.verify", {"token": second["token"]})["status"] == 401
    assert c.call("auth.verify", {"token": u["token"]})["status"] == 200
    assert [d["name"] for d in c.call("device.list", auth=a)["data"]["devices"]] == ["laptop"]
    assert c.call("device.revoke", {"device_id": second["device_id"]}, auth=a)["status"] == 404


def test_clipboard(env):
    stack, c = env
    u, other = make_user(c), make_user(c)
    a = auth_of(u)
    assert c.call("clipboard.latest", auth=a)["status"] == 404
    sub = stack.subscriber("user/%d/" % u["user_id"])
    wait_subscribed(stack, c, a, sub)  # creates probe items
    first_seq = c.call("clipboard.latest", auth=a)["data"]["seq"]

    items = []
    for i in range(5):
        r = c.call("clipboard.create", {"content": "item %d \u00e9\U0001F600" % i,
                                        "content_type": "text/markdown" if i % 2 else None},
                   auth=a)
        assert r["status"] == 201, r
        items.append(r["data"])
        _, ev = recv_event(sub)
        assert ev == {"type": "clipboard.item", "item": r["data"],
                      "source_device_id": u["device_id"]}
    assert [i["seq"] for i in items] == list(range(first_seq + 1, first_seq + 6))
    assert items[0]["content_type"] == "text/plain" and items[1]["content_type"] == "text/markdown"
    assert items[0]["source_device_id"] == u["device_id"]
    assert RFC3339.match(items[0]["created_at"])

    r = c.call("clipboard.list", {"after": first_seq, "limit": 3}, auth=a)
    assert r["status"] == 200
    assert r["data"]["items"] == items[:3]
    assert r["data"]["next_after"] == items[2]["seq"] and r["data"]["more"] is True
    r = c.call("clipboard.list", {"after": r["data"]["next_after"]}, auth=a)
    assert r["data"]["items"] == items[3:] and r["data"]["more"] is False
    r = c.call("clipboard.list", {"after": items[-1]["seq"]}, auth=a)
    assert r["data"] == {"items": [], "next_after": items[-1]["seq"], "more": False}
    assert c.call("clipboard.latest", auth=a)["data"] == items[-1]

    # isolation: the other user sees nothing and cannot delete
    assert c.call("clipboard.list", auth=auth_of(other))["data"]["items"] == []
    assert c.call("clipboard.delete", {"id": items[0]["id"]}, auth=auth_of(other))["status"] == 404
    # the other user's seq starts at 1
    r = c.call("clipboard.create", {"content": "mine"}, auth=auth_of(other))
    assert r["data"]["seq"] == 1

    r = c.call("clipboard.delete", {"id": items[-1]["id"]}, auth=a)
    assert r == {"status": 204}
    _, ev = recv_event(sub)
    assert ev == {"type": "clipboard.deleted", "id": items[-1]["id"]}
    assert c.call("clipboard.delete", {"id": items[-1]["id"]}, auth=a)["status"] == 404
    assert c.call("clipboard.latest", auth=a)["data"] == items[-2]
    # seq only grows: a delete does not hand out its seq again
    r = c.call("clipboard.create", {"content": "after delete"}, auth=a)
    assert r["data"]["seq"] == items[-1]["seq"] + 1


def test_chat(env):
    stack, c = env
    u, other = make_user(c), make_user(c)
    a = auth_of(u)
    c1 = c.call("chat.conversation.create", {"title": "first"}, auth=a)
    assert c1["status"] == 201 and c1["data"]["title"] == "first"
    c2 = c.call("chat.conversation.create", {}, auth=a)
    assert c2["status"] == 201 and c2["data"]["title"] is None
    r = c.call("chat.conversation.list", auth=a)
    assert [x["id"] for x in r["data"]["conversations"]] == [c2["data"]["id"], c1["data"]["id"]]
    assert c.call("chat.conversation.list", auth=auth_of(other))["data"]["conversations"] == []

    cid = c1["data"]["id"]
    assert c.call("chat.message.list", {"conversation_id": cid}, auth=a)["data"] == {
        "messages": [], "next_after": 0, "more": False}
    b = c.call("chat.message.begin", {"conversation_id": cid, "content": "hi there"}, auth=a)
    assert b["status"] == 201, b
    um, am = b["data"]["user_message"], b["data"]["assistant_message"]
    assert (um["role"], um["content"], um["status"]) == ("user", "hi there", "complete")
    assert (am["role"], am["content"], am["status"]) == ("assistant", "", "streaming")

    r = c.call("chat.message.checkpoint", {"message_id": am["id"], "content": "hi"}, auth=a)
    assert r == {"status": 204}
    msgs = c.call("chat.message.list", {"conversation_id": cid}, auth=a)["data"]["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in msgs] == [
        ("user", "hi there", "complete"), ("assistant", "hi", "streaming")]
    # paged both ways: one at a time oldest first, newest first below an id
    r = c.call("chat.message.list", {"conversation_id": cid, "limit": 1}, auth=a)["data"]
    assert r == {"messages": msgs[:1], "next_after": msgs[0]["id"], "more": True}
    r = c.call("chat.message.list", {"conversation_id": cid, "after": r["next_after"]},
               auth=a)["data"]
    assert r["messages"] == msgs[1:] and r["more"] is False
    r = c.call("chat.message.list", {"conversation_id": cid, "before": am["id"]}, auth=a)
    assert r["data"]["messages"] == msgs[:1] and r["data"]["more"] is False
    assert r["data"]["next_before"] == r["data"]["messages"][0]["id"]

    # not the user's: 404 everywhere
    oa = auth_of(other)
    assert c.call("chat.message.list", {"conversation_id": cid}, auth=oa)["status"] == 404
    assert c.call("chat.message.begin", {"conversation_id": cid, "content": "x"},
                  auth=oa)["status"] == 404
    assert c.call("chat.message.checkpoint", {"message_id": am["id"], "content": "x"},
                  auth=oa)["status"] == 404
    assert c.call("chat.message.checkpoint", {"message_id": um["id"], "content": "x"},
                  auth=a)["status"] == 404  # a user message is not streaming text

    f = c.call("chat.message.finish", {"message_id": am["id"], "content": "hi there",
                                       "status": "complete"}, auth=a)
    assert f["status"] == 200, f
    assert f["data"]["message"]["status"] == "complete"
    assert f["data"]["message"]["content"] == "hi there"
    assert f["data"]["message"]["id"] == am["id"]
    # finished: no more checkpoints or finishes
    r = c.call("chat.message.checkpoint", {"message_id": am["id"], "content": "late"}, auth=a)
    assert r["status"] == 409, r
    r = c.call("chat.message.finish", {"message_id": am["id"], "content": "x",
                                       "status": "failed"}, auth=a)
    assert r["status"] == 409
    b2 = c.call("chat.message.begin", {"conversation_id": cid, "content": "again"}, auth=a)
    f2 = c.call("chat.message.finish", {"message_id": b2["data"]["assistant_message"]["id"],
                                        "content": "", "status": "failed", "error": "provider down"},
                auth=a)
    assert f2["data"]["message"]["status"] == "failed"
    assert f2["data"]["message"]["error"] == "provider down"
    assert c.call("chat.message.finish", {"message_id": am["id"], "content": "x",
                                          "status": "done"}, auth=a)["status"] == 400

    # a nonce is stored with the assistant row, echoed, and finds the row again
    b3 = c.call("chat.message.begin", {"conversation_id": cid, "content": "n", "nonce": 2 ** 62},
                auth=a)
    assert b3["status"] == 201 and b3["data"]["nonce"] == 2 ** 62, b3
    found = c.call("chat.message.find", {"conversation_id": cid, "nonce": 2 ** 62}, auth=a)
    assert found["status"] == 200, found
    assert found["data"]["message"]["id"] == b3["data"]["assistant_message"]["id"]
    assert found["data"]["message"]["status"] == "streaming"
    assert c.call("chat.message.find", {"conversation_id": cid, "nonce": 7},
                  auth=a)["status"] == 404
    assert c.call("chat.message.find", {"conversation_id": cid, "nonce": 2 ** 62},
                  auth=oa)["status"] == 404  # not the user's
    for bad in ({"conversation_id": cid}, {"conversation_id": cid, "nonce": 0},
                {"conversation_id": cid, "nonce": "x"}):
        assert c.call("chat.message.find", bad, auth=a)["status"] == 400, bad
    assert c.call("chat.message.begin", {"conversation_id": cid, "content": "n", "nonce": -1},
                  auth=a)["status"] == 400


BAD_INPUTS = [
    ("user.create", {"username": "ab", "password": "password-1"}),
    ("user.create", {"username": "bad name!", "password": "password-1"}),
    ("user.create", {"username": "x" * 65, "password": "password-1"}),
    ("user.create", {"username": "okname", "password": "short"}),
    ("user.create", {"username": "okname", "password": 12345678}),
    ("user.create", {"username": "okname"}),
    ("user.create", {"username": "okname", "password": b"\xff\xfe not utf-8 bytes"}),
    ("session.create", {"username": "okname", "password": "password-1"}),
    ("session.create", {"username": "okname", "password": "password-1", "device_name": ""}),
    ("auth.verify", {}),
    ("auth.verify", {"token": 7}),
    ("device.revoke", {"device_id": -1}),
    ("device.revoke", {"device_id": BIG}),
    ("device.revoke", {"device_id": "12ab"}),
    ("device.revoke", {"device_id": "99999999999999999999"}),
    ("device.set_active", {"device_id": 1, "active": "yes"}),
    ("device.set_active", {"device_id": 1}),
    ("clipboard.create", {}),
    ("clipboard.create", {"content": 5}),
    ("clipboard.create", {"content": "x", "content_type": ""}),
    ("clipboard.create", {"content": "x", "content_type": "a\nb"}),
    ("clipboard.list", {"after": -1}),
    ("clipboard.list", {"after": BIG}),
    ("clipboard.list", {"limit": 0}),
    ("clipboard.list", {"limit": 501}),
    ("clipboard.list", {"limit": "ten"}),
    ("clipboard.delete", {"id": 0}),
    ("clipboard.delete", {"id": 1.5}),
    ("chat.conversation.create", {"title": ["x"]}),
    ("chat.conversation.create", {"title": "x" * 256}),
    ("chat.message.list", {}),
    ("chat.message.list", {"conversation_id": 1, "after": -1}),
    ("chat.message.list", {"conversation_id": 1, "after": 1, "before": 5}),
    ("chat.message.list", {"conversation_id": 1, "limit": 1001}),
    ("chat.message.list", {"conversation_id": 1, "max_bytes": 0}),
    ("chat.message.begin", {"conversation_id": 1, "content": ""}),
    ("chat.message.checkpoint", {"message_id": BIG, "content": "x"}),
    ("chat.message.finish", {"message_id": 1, "content": "x", "status": 3}),
]


def test_bad_input_is_400_and_writes_nothing(env):
    stack, c = env
    u = make_user(c)
    before = {t: count(stack, t) for t in ("users", "devices", "clipboard_items",
                                           "conversations", "messages", "idempotency_keys")}
    for op, args in BAD_INPUTS:
        r = c.call(op, args, auth=auth_of(u), idem="k-" + op)
        assert r["status"] == 400, (op, args, r)
        assert r["error"]["code"] == "bad_request" and r["error"]["message"], r
    after = {t: count(stack, t) for t in before}
    assert after == before
    # unknown op, missing auth, oversize content
    assert c.call("no.such.op")["status"] == 400
    assert c.call("clipboard.list")["status"] == 401
    assert c.call("clipboard.list", auth={"user_id": "1"})["status"] == 401
    r = c.call("clipboard.create", {"content": "x" * (1024 * 1024 + 1)}, auth=auth_of(u))
    assert r["status"] == 413 and r["error"]["code"] == "payload_too_large"
    assert c.call("db.ping") == {"status": 200, "data": {}}


def test_idempotent_replay(stack):
    stack.start_worker()
    stack.start_worker()  # the replay may land on either worker
    c = stack.client()
    stack.wait_ready(c)
    u, other = make_user(c), make_user(c)
    a = auth_of(u)
    first = c.call("clipboard.create", {"content": "once"}, auth=a, idem="key-1")
    assert first["status"] == 201
    for _ in range(6):
        again = c.call("clipboard.create", {"content": "once"}, auth=a, idem="key-1")
        assert again == first
    assert count(stack, "clipboard_items", "user_id = %d" % u["user_id"]) == 1
    # the same key by another user is another write
    r = c.call("clipboard.create", {"content": "once"}, auth=auth_of(other), idem="key-1")
    assert r["status"] == 201 and r["data"]["id"] != first["data"]["id"]
    # the same key for another op is refused, not replayed
    r = c.call("clipboard.delete", {"id": first["data"]["id"]}, auth=a, idem="key-1")
    assert r["status"] == 409, r
    # deletes and chat writes replay too
    d1 = c.call("clipboard.delete", {"id": first["data"]["id"]}, auth=a, idem="key-2")
    d2 = c.call("clipboard.delete", {"id": first["data"]["id"]}, auth=a, idem="key-2")
    assert d1 == d2 == {"status": 204}
    conv = c.call("chat.conversation.create", {"title": "t"}, auth=a, idem="key-3")
    assert c.call("chat.conversation.create", {"title": "t"}, auth=a, idem="key-3") == conv
    assert count(stack, "conversations", "user_id = %d" % u["user_id"]) == 1
    # a failed write (404) stores nothing: the same key can be used again
    assert c.call("clipboard.delete", {"id": 424242}, auth=a, idem="key-4")["status"] == 404
    r = c.call("clipboard.create", {"content": "later"}, auth=a, idem="key-4")
    assert r["status"] == 201


def test_concurrent_replays_write_once(stack):
    """Many copies of one keyed write in flight at once, on two workers: one row."""
    stack.start_worker()
    stack.start_worker()
    c = stack.client()
    stack.wait_ready(c)
    u = make_user(c)
    rids = [c.send("db", {"op": "clipboard.create", "args": {"content": "dup"},
                          "auth": auth_of(u), "idem": "same", "idempotent": True})
            for _ in range(20)]
    replies = gather(c, rids)
    assert all(r["status"] == 201 for r in replies), replies
    assert all(r == replies[0] for r in replies)
    assert count(stack, "clipboard_items", "user_id = %d" % u["user_id"]) == 1
