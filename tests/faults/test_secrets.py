"""Tokens and passwords never appear in any process's log (issue 7, security).

A small full flow through the gateway - users, sessions (and a wrong password),
clipboard writes with Idempotency-Key, lists, deletes, notify WebSockets (token in
the query string and in the header, a refused token), chat answers streamed and not,
a device revoked - with every process at log level debug, then every log of every
process (broker, DB workers, stream worker, gateway) is searched for every token and
password the flow used, whole and by a 12-character piece."""
import asyncio
import json
import secrets

import requests
import websockets

from system import ws_open, ws_recv


def test_no_token_or_password_in_any_log(make_stack):
    s = make_stack(log_level="debug")
    ann = s.user("laptop")
    phone = s.device(ann, "phone")
    bob = s.user("desk")
    wrong_password = "wrong-" + secrets.token_hex(8)
    bad_token = secrets.token_urlsafe(32)

    r = s.post("/v1/sessions", {"username": ann.username, "password": wrong_password,
                                "device_name": "x"})
    assert r.status_code == 401
    r = s.post("/v1/sessions", {"username": "nobody" + secrets.token_hex(4),
                                "password": wrong_password, "device_name": "x"})
    assert r.status_code == 401
    assert s.get("/v1/devices", token=bad_token).status_code == 401

    async def ws_flow():
        ws = await ws_open(s, phone, after=0)
        assert (await ws_recv(ws))["type"] == "hello"
        hdr = await websockets.connect(s.ws_url + "/v1/sync/notify",
                                       extra_headers={"Authorization": "Bearer " + ann.token})
        assert (await ws_recv(hdr))["type"] == "hello"
        try:
            await websockets.connect(s.ws_url + "/v1/sync/notify?token=" + bad_token)
            raise AssertionError("a bad token opened a socket")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 401
        item = await asyncio.get_running_loop().run_in_executor(
            None, lambda: s.post("/v1/clipboard", {"content": "hello"}, token=ann.token,
                                 headers={"Idempotency-Key": "k-" + secrets.token_hex(4)}).json())
        got = await ws_recv(ws)
        assert got["type"] == "clipboard.item" and got["item"]["id"] == item["id"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await ws_recv(ws))["type"] == "pong"
        await ws.close()
        await hdr.close()
        return item

    item = asyncio.run(asyncio.wait_for(ws_flow(), 30))
    assert s.get("/v1/clipboard?after=0", token=ann.token).status_code == 200
    assert s.get("/v1/clipboard/latest", token=ann.token).status_code == 200
    assert s.delete("/v1/clipboard/%s" % item["id"], token=ann.token).status_code == 204
    conv = s.post("/v1/chat/conversations", {"title": "t"}, token=bob.token).json()
    for stream in (False, True):
        r = s.post("/v1/chat/conversations/%s/messages" % conv["id"],
                   {"content": "say something", "stream": stream}, token=bob.token)
        assert r.status_code in (200, 201), r.text
    assert s.get("/v1/chat/conversations/%s/messages" % conv["id"],
                 token=bob.token).status_code == 200
    assert s.delete("/v1/devices/%s" % phone.device_id, token=ann.token).status_code == 204
    assert s.get("/v1/devices", token=phone.token).status_code == 401
    assert requests.get(s.url + "/metrics", timeout=5).status_code == 200

    s.stop()  # every process writes its last lines
    secrets_used = {
        "ann password": ann.password, "bob password": bob.password,
        "wrong password": wrong_password,
        "ann token": ann.token, "phone token": phone.token, "bob token": bob.token,
        "refused token": bad_token,
    }
    logs = s.logs()
    assert {name for name, _ in logs} >= {"broker", "dbworker", "streamworker", "gateway"}
    assert sum(len(text) for _, text in logs) > 1000, "the processes logged almost nothing"
    leaks = []
    for what, value in secrets_used.items():
        pieces = {value} | {value[i:i + 12] for i in range(0, len(value) - 11, 6)}
        for name, text in logs:
            for piece in pieces:
                if piece in text:
                    line = next(l for l in text.splitlines() if piece in l)
                    leaks.append("%s appears in the %s log: %s" % (what, name, line[:300]))
                    break
    assert not leaks, "\n".join(leaks)
