"""Isolation between users across every route of docs/api.md (issue 7, security):
user B's token on user A's ids is 404 (exactly as a missing id), never A's data,
and changes nothing of A's. Table-driven: one row per route."""
import asyncio

import pytest

from system import ws_open, ws_quiet, ws_recv

# (name, method, path, body, expected status for B). {item}, {device}, {conv} are A's.
ROUTES = [
    ("delete A's device", "DELETE", "/v1/devices/{device}", None, 404),
    ("delete A's item", "DELETE", "/v1/clipboard/{item}", None, 404),
    ("list A's messages", "GET", "/v1/chat/conversations/{conv}/messages", None, 404),
    ("post to A's conversation", "POST", "/v1/chat/conversations/{conv}/messages",
     {"content": "let me in", "stream": False}, 404),
    ("stream into A's conversation", "POST", "/v1/chat/conversations/{conv}/messages",
     {"content": "let me in", "stream": True}, 404),
    # routes without ids: B gets B's own (empty) data, never A's
    ("list devices", "GET", "/v1/devices", None, 200),
    ("list clipboard", "GET", "/v1/clipboard?after=0&limit=500", None, 200),
    ("latest item", "GET", "/v1/clipboard/latest", None, 404),
    ("list conversations", "GET", "/v1/chat/conversations", None, 200),
]


@pytest.fixture
def two_users(make_stack):
    s = make_stack()
    a = s.user("a-laptop")
    b = s.user("b-laptop")
    item = s.post("/v1/clipboard", {"content": "A-SECRET-ITEM"}, token=a.token).json()
    conv = s.post("/v1/chat/conversations", {"title": "A-SECRET-TITLE"}, token=a.token).json()
    r = s.post("/v1/chat/conversations/%s/messages" % conv["id"],
               {"content": "A-SECRET-QUESTION", "stream": False}, token=a.token)
    assert r.status_code == 201, r.text
    ids = {"item": item["id"], "device": a.device_id, "conv": conv["id"]}
    return s, a, b, ids


def snapshot(s, a, ids):
    """Everything A can see, to compare before and after B's attempts."""
    return {
        "devices": s.get("/v1/devices", token=a.token).json(),
        "clipboard": s.get("/v1/clipboard?after=0", token=a.token).json(),
        "conversations": s.get("/v1/chat/conversations", token=a.token).json(),
        "messages": s.get("/v1/chat/conversations/%s/messages" % ids["conv"],
                          token=a.token).json(),
    }


def test_user_b_never_reaches_user_a(two_users):
    s, a, b, ids = two_users
    before = snapshot(s, a, ids)
    a_ids = {str(v) for v in ids.values()}
    failures = []
    for name, method, path, body, want in ROUTES:
        r = s.request(method, path.format(**ids), body, token=b.token)
        text = r.text
        if r.status_code != want:
            failures.append("%s: %s %s -> %d (want %d): %s" % (name, method, path,
                                                                r.status_code, want, text[:200]))
        if "A-SECRET" in text:
            failures.append("%s: A's data in B's answer: %s" % (name, text[:200]))
        if want == 404:
            # exactly the answer for an id that does not exist
            missing = s.request(method, path.format(item="999999999", device="999999999",
                                                    conv="999999999"), body, token=b.token)
            if (missing.status_code, missing.json().get("error", {}).get("code")) != \
                    (r.status_code, r.json().get("error", {}).get("code")):
                failures.append("%s: another user's id answers differently from a missing "
                                "one: %d vs %d" % (name, r.status_code, missing.status_code))
        elif r.status_code == 200:
            # B's own lists hold none of A's ids
            data = r.json()
            for key in ("devices", "items", "conversations"):
                for obj in data.get(key, []):
                    if obj.get("id") in a_ids and key != "devices":
                        failures.append("%s: lists A's %s %s" % (name, key, obj["id"]))
            if "devices" in data and any(d["id"] == a.device_id for d in data["devices"]):
                failures.append("%s: lists A's device" % name)
    assert not failures, "\n".join(failures)
    # nothing of A's changed, and A's token still works
    assert snapshot(s, a, ids) == before


def test_notify_socket_only_carries_its_own_user(two_users):
    s, a, b, ids = two_users

    async def flow():
        wb = await ws_open(s, b, after=0)
        hello = await ws_recv(wb)
        assert hello["type"] == "hello" and hello["user_id"] == b.user_id
        assert await ws_quiet(wb, 0.3)  # A's item is not replayed to B
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: s.post("/v1/clipboard", {"content": "A-SECRET-LIVE"}, token=a.token))
        assert r.status_code == 201
        # B's own write arrives after A's: if A's were delivered it would come first
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: s.post("/v1/clipboard", {"content": "b-own"},
                                 token=s.device(b, "b-phone").token))
        assert r.status_code == 201
        got = await ws_recv(wb)
        assert got["type"] == "clipboard.item" and got["item"]["content"] == "b-own", got
        await wb.close()

    asyncio.run(asyncio.wait_for(flow(), 30))
