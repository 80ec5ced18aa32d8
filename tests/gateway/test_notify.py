"""/v1/sync/notify (and /sync/notify): authentication at the upgrade, hello, replay,
the replay/live seam under concurrent writes, fan-out to the user's other devices
only, revocation, ping/pong, errors and limits."""
import asyncio
import threading
import time

import pytest
import requests
import websockets

from system import raw_http, run, ws_open, ws_quiet, ws_recv


def wait_for(predicate, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def upgrade_status(stack, query="", headers=None):
    """The status of a refused upgrade (and that no socket opened)."""
    async def go():
        try:
            ws = await ws_open(stack, path="/v1/sync/notify" + query, headers=headers)
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
        await ws.close()
        return 101
    return run(go())


def test_bad_tokens_refused_with_401(stack):
    ann = stack.user()
    assert upgrade_status(stack, "?token=nonsense") == 401
    assert upgrade_status(stack, "") == 401
    assert upgrade_status(stack, "?token=bad%20token") == 401
    assert upgrade_status(stack, headers={"Authorization": "Bearer wrong"}) == 401
    assert upgrade_status(stack, "?token=%s&after=-5" % ann.token) == 400
    assert upgrade_status(stack, "?token=%s&after=x" % ann.token) == 400
    # the refusal is a real HTTP response with the usual error body
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    out = raw_http(stack.gateway.port, (
        "GET /v1/sync/notify?token=nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
        "X-Request-Id: ws-401\r\n\r\n" % key).encode()).decode()
    assert out.startswith("HTTP/1.1 401"), out
    assert "X-Request-Id: ws-401" in out and '"code":"unauthorized"' in out


def test_hello_then_live_to_other_devices_only(stack):
    laptop = stack.user()
    phone = stack.device(laptop)
    stranger = stack.user()
    first = stack.create(laptop, "before")

    async def go():
        ws_laptop = await ws_open(stack, laptop)
        ws_phone = await ws_open(stack, phone, path="/sync/notify")
        ws_stranger = await ws_open(stack, stranger)
        hello = await ws_recv(ws_laptop)
        assert hello == {"type": "hello", "user_id": laptop.user_id,
                         "device_id": laptop.device_id, "seq": first["seq"]}
        hello = await ws_recv(ws_phone)
        assert hello["device_id"] == phone.device_id and hello["seq"] == first["seq"]
        assert (await ws_recv(ws_stranger))["seq"] == 0
        item = await asyncio.to_thread(stack.create, laptop, "from laptop")
        msg = await ws_recv(ws_phone)
        assert msg == {"type": "clipboard.item", "item": item}
        item2 = await asyncio.to_thread(stack.create, phone, "from phone")
        msg = await ws_recv(ws_laptop)
        assert msg["item"] == item2
        # deletes reach every device, the deleting one too
        r = await asyncio.to_thread(stack.delete, "/v1/clipboard/" + item["id"],
                                    token=laptop.token)
        assert r.status_code == 204
        for ws in (ws_laptop, ws_phone):
            assert await ws_recv(ws) == {"type": "clipboard.deleted", "id": item["id"]}
        # nothing else went anywhere: the laptop never got its own item, the stranger
        # nothing at all
        assert await ws_quiet(ws_laptop) and await ws_quiet(ws_phone)
        assert await ws_quiet(ws_stranger)
        for ws in (ws_laptop, ws_phone, ws_stranger):
            await ws.close()
    run(go())


def test_replay_after_seq(stack):
    laptop = stack.user()
    phone = stack.device(laptop)
    items = [stack.create(laptop if i % 2 else phone, "item %d" % i) for i in range(7)]

    async def go():
        ws = await ws_open(stack, laptop, after=items[2]["seq"])
        hello = await ws_recv(ws)
        assert hello["seq"] == items[-1]["seq"]
        got = [await ws_recv(ws) for _ in items[3:]]
        # every item after SEQ, whichever device wrote it, in seq order
        assert got == [{"type": "clipboard.item", "item": i} for i in items[3:]]
        assert await ws_quiet(ws)
        await ws.close()
    run(go())


def test_replay_pages_beyond_one_page(stack):
    ann = stack.user()
    other = stack.device(ann)
    created = [stack.create(other, "p%d" % i) for i in range(230)]

    async def go():
        ws = await ws_open(stack, ann, after=0)
        await ws_recv(ws)
        seqs = [(await ws_recv(ws))["item"]["seq"] for _ in created]
        assert seqs == [c["seq"] for c in created]
        await ws.close()
    run(go(), timeout=120)


@pytest.mark.parametrize("round_", range(3))
def test_replay_seam_under_concurrent_writes(stack, round_):
    """A device connects with after=SEQ while another device keeps writing. Every item
    must arrive exactly once, whether through the replay or live."""
    reader = stack.user()
    writer = stack.device(reader, "writer")
    before = [stack.create(writer, "old %d" % i) for i in range(20 + 10 * round_)]
    created = list(before)
    stop = threading.Event()

    def write():
        s = requests.Session()
        while not stop.is_set() and len(created) < 400:
            r = s.post(stack.url + "/v1/clipboard", json={"content": "w"}, headers=writer.auth,
                       timeout=15)
            assert r.status_code == 201, r.text
            created.append(r.json())

    async def go():
        threads = [threading.Thread(target=write) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            await asyncio.sleep(0.05)
            ws = await ws_open(stack, reader, after=before[4]["seq"])
            hello = await ws_recv(ws)
            await asyncio.sleep(0.5)  # writes keep landing during and after the replay
        finally:
            stop.set()
            for t in threads:
                await asyncio.to_thread(t.join)
        want = sorted(c["seq"] for c in created if c["seq"] > before[4]["seq"])
        got = []
        while len(got) < len(want):
            msg = await ws_recv(ws, timeout=10)
            assert msg["type"] == "clipboard.item", msg
            got.append(msg["item"]["seq"])
        assert len(got) == len(set(got)), "duplicates: %r" % got
        assert sorted(got) == want, "missing: %r" % sorted(set(want) - set(got))
        assert hello["seq"] >= before[-1]["seq"]
        assert await ws_quiet(ws)
        await ws.close()
    run(go(), timeout=120)


def test_ping_pong_and_errors_keep_socket_open(stack):
    ann = stack.user()

    async def go():
        ws = await ws_open(stack, ann)
        await ws_recv(ws)
        await ws.send('{"type":"ping"}')
        assert await ws_recv(ws) == {"type": "pong"}
        for bad in ["not json", "[1,2]", '{"type":5}', '{"type":"subscribe"}', "\u00e9\u00e9",
                    '{"type":"ping","type":"ping"}']:
            await ws.send(bad)
            msg = await ws_recv(ws)
            assert msg["type"] == "error" and msg["error"]["code"] == "bad_request", (bad, msg)
        await ws.send(b"\x00\x01binary")
        assert (await ws_recv(ws))["type"] == "error"
        # fragments of one message are one message
        await ws.send(iter(['{"type":', '"ping"}']))
        assert await ws_recv(ws) == {"type": "pong"}
        await ws.send('{"type":"ping"}')
        assert await ws_recv(ws) == {"type": "pong"}
        await ws.close()
    run(go())


def test_oversize_message_closes_1009(stack):
    ann = stack.user()

    async def go():
        ws = await ws_open(stack, ann)
        await ws_recv(ws)
        await ws.send("x" * (64 * 1024))  # at the limit: fine (an error, not JSON)
        assert (await ws_recv(ws))["type"] == "error"
        await ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            await ws_recv(ws)
        assert e.value.rcvd.code == 1009
        # fragmented, too large in total
        ws = await ws_open(stack, ann)
        await ws_recv(ws)
        await ws.send(iter(["y" * 40000, "y" * 40000]))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            await ws_recv(ws)
        assert e.value.rcvd.code == 1009
    run(go())


def test_revoke_closes_device_sockets_with_4001(stack):
    laptop = stack.user()
    phone = stack.device(laptop)

    async def go():
        ws_phone = await ws_open(stack, phone)
        ws_phone2 = await ws_open(stack, phone, path="/sync/notify")
        ws_laptop = await ws_open(stack, laptop)
        for ws in (ws_phone, ws_phone2, ws_laptop):
            await ws_recv(ws)
        r = await asyncio.to_thread(stack.delete, "/v1/devices/" + phone.device_id,
                                    token=laptop.token)
        assert r.status_code == 204
        for ws in (ws_phone, ws_phone2):
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await ws_recv(ws)
            assert e.value.rcvd.code == 4001
        # the laptop stays connected and working
        await ws_laptop.send('{"type":"ping"}')
        assert await ws_recv(ws_laptop) == {"type": "pong"}
        await ws_laptop.close()
    run(go())
    assert upgrade_status(stack, "?token=" + phone.token) == 401
    assert stack.get("/v1/devices", token=phone.token).status_code == 401


def test_revoke_through_another_gateway_reaches_this_one(stack):
    """The DELETE goes through a second gateway: the event closes the socket here."""
    from system import Gateway
    laptop = stack.user()
    phone = stack.device(laptop)
    other = Gateway(stack)
    try:
        async def go():
            ws = await ws_open(stack, phone)
            await ws_recv(ws)
            r = await asyncio.to_thread(requests.delete,
                                        other.url + "/v1/devices/" + phone.device_id,
                                        headers=laptop.auth, timeout=10)
            assert r.status_code == 204
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await ws_recv(ws)
            assert e.value.rcvd.code == 4001
        run(go())
        # the token cache of this gateway forgot the token at once too
        assert stack.get("/v1/devices", token=phone.token).status_code == 401
    finally:
        other.stop()


def test_device_marked_active_while_connected(stack):
    laptop = stack.user()
    phone = stack.device(laptop)

    def phone_state():
        devices = stack.get("/v1/devices", token=laptop.token).json()["devices"]
        return [d for d in devices if d["id"] == phone.device_id][0]

    assert phone_state()["is_active"] is False

    async def go():
        ws = await ws_open(stack, phone)
        await ws_recv(ws)
        await asyncio.to_thread(wait_for, lambda: phone_state()["is_active"], 10, "active")
        await ws.close()
    run(go())
    wait_for(lambda: not phone_state()["is_active"], 10, "inactive")
    assert phone_state()["last_seen_at"]


def test_connection_burst_waits_its_turn(stack):
    """With one db op in flight allowed for all sockets, a burst of sockets still
    gets every hello and replay, in turn, and every device ends up active."""
    from system import Gateway
    narrow = Gateway(stack, ws_db_max=1)
    ann = stack.user()
    devices = [stack.device(ann, "d%d" % i) for i in range(10)]
    item = stack.create(ann, "seen by all")
    try:
        async def go():
            sockets = await asyncio.gather(*[
                websockets.connect("%s/v1/sync/notify?token=%s&after=0" % (narrow.ws_url, d.token))
                for d in devices for _ in range(3)])
            for ws in sockets:
                assert (await ws_recv(ws, timeout=20))["type"] == "hello"
                assert (await ws_recv(ws, timeout=20))["item"] == item
            def all_active():
                got = stack.get("/v1/devices", token=ann.token).json()["devices"]
                return all(d["is_active"] for d in got if d["name"] != "laptop")
            await asyncio.to_thread(wait_for, all_active, 15, "all devices active")
            for ws in sockets:
                await ws.close()
        run(go())
    finally:
        narrow.stop()


def test_sigterm_closes_sockets_1001_and_marks_inactive(stack):
    from system import Gateway
    laptop = stack.user()
    phone = stack.device(laptop)
    gw = Gateway(stack)

    async def go():
        ws = await websockets.connect("%s/v1/sync/notify?token=%s" % (gw.ws_url, phone.token))
        assert (await ws_recv(ws))["type"] == "hello"
        await asyncio.to_thread(gw.stop)  # asserts a clean exit (status 0)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            await ws_recv(ws)
        assert e.value.rcvd.code == 1001
    run(go())

    def phone_active():
        devices = stack.get("/v1/devices", token=laptop.token).json()["devices"]
        return [d for d in devices if d["id"] == phone.device_id][0]["is_active"]
    wait_for(lambda: not phone_active(), 10, "inactive after the gateway stopped")


def test_upgrade_on_a_reused_connection(stack):
    """The listener authenticates the first request of a connection; an upgrade later
    on a keep-alive connection is accepted when the token is cached, else 503 with
    Retry-After (and the token is checked meanwhile, so a retry works)."""
    import socket as socketlib

    def try_upgrade(token):
        with socketlib.create_connection(("127.0.0.1", stack.gateway.port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += s.recv(65536)
            s.sendall(("GET /v1/sync/notify?token=%s HTTP/1.1\r\nHost: x\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n" % token).encode())
            return s.recv(4096)

    fresh = stack.user()
    out = try_upgrade(fresh.token)  # never seen by this gateway: not cached
    assert out.startswith(b"HTTP/1.1 503"), out
    assert b"Retry-After: 1" in out
    wait_for(lambda: try_upgrade(fresh.token).startswith(b"HTTP/1.1 101"), 10, "a cached retry")
    assert try_upgrade("not-a-real-token").startswith(b"HTTP/1.1 ")
