"""Bad input from clients gets a 4xx answer and a close, and changes nothing; the
gateway stays up and /health stays 200 throughout. raw_http fails when the
gateway does not close, so an answer is required, not just allowed."""
import asyncio
import os
import random
import socket
import time

import requests
import websockets

from system import raw_http, run, ws_open, ws_recv


def healthy(stack):
    r = requests.get(stack.url + "/health", timeout=10)
    assert r.status_code == 200, r.text
    assert stack.gateway.proc.alive()


def status_of(raw):
    assert raw, "no answer"
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), raw[:200]
    return int(line.split()[1])


def test_malformed_bodies(stack):
    ann = stack.user()
    bodies = [b"{", b"}", b"nul", b"{\"content\":\"x\"", b"{\"content\":\"\\ud800\"}",
              b"{\"content\":\"\xff\xfe\"}", b"{\"content\":\"\xc3\x28\"}",
              b"{\"content\":\"a\\u0000b\"}", b"[" * 5000 + b"]" * 5000, b"{\"a\":" * 3000,
              b"\x00\x01\x02", b"{\"content\":\"x\"} trailing", b"1e999999",
              b"{\"content\":\"x\",\"content\":\"y\"}", "{\"content\":\"\u00e9\"}".encode("latin-1")]
    for body in bodies:
        r = stack.post("/v1/clipboard", raw=body, token=ann.token)
        assert r.status_code == 400, (body[:40], r.status_code, r.text)
        assert r.json()["error"]["code"] == "bad_request"
    assert stack.get("/v1/clipboard", token=ann.token).json()["items"] == []
    healthy(stack)


def test_oversize_bodies_and_headers(stack):
    port = stack.gateway.port
    # a Content-Length above max_body_bytes is refused before the body is read
    out = raw_http(port, b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{")
    assert status_of(out) == 413
    r = requests.post(stack.url + "/v1/users", data=b"x" * (4 * 1024 * 1024 + 1), timeout=30)
    assert r.status_code == 413
    # a huge head on a new connection: 431 from the listener
    out = raw_http(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
                   b"\r\n\r\n")
    assert status_of(out) == 431
    # ... and as the second request of a keep-alive connection: refused, not served
    out = raw_http(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1
    # many headers via requests
    r = requests.get(stack.url + "/health", headers={"X-H%d" % i: "v" * 100 for i in range(300)},
                     timeout=10)
    assert 400 <= r.status_code < 500
    # chunked bodies are not accepted
    out = raw_http(port, b"POST /v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(out) == 411, out[:200]
    assert b'"length_required"' in out
    healthy(stack)


def test_unknown_routes_methods_and_garbage(stack):
    port = stack.gateway.port
    for path in ["/", "/v1", "/v1/", "/v1/clipboard/", "/v1/users/1", "/.." * 20 + "/etc/passwd",
                 "/v1/clipboard/latest/x", "/%00", "/v1/chat/conversations/1/messages/2"]:
        r = stack.get(path)
        assert r.status_code in (200, 400, 404), (path, r.status_code)
    for method in ["PUT", "PATCH", "OPTIONS"]:
        r = stack.request(method, "/v1/clipboard")
        assert r.status_code == 405
    # bytes that are not HTTP: answered 400 (or another 4xx) and closed, never served
    rnd = random.Random(4)
    for blob in [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 200,  # TLS hello
                 b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", bytes(rnd.randrange(256) for _ in range(3000)),
                 b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                 b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"]:
        out = raw_http(port, blob)
        assert 400 <= status_of(out) < 500, (blob[:30], out[:100])
    healthy(stack)


def test_slow_head_times_out(stack):
    """A client that never finishes its request head is answered 408 and dropped
    (header_timeout_ms is 1500 in these tests)."""
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        assert status_of(out) == 408
        assert time.monotonic() - start < 8
    healthy(stack)


def test_head_in_pieces_is_fine(stack):
    ann = stack.user()
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=10) as s:
        req = ("GET /v1/clipboard/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Connection: close\r\n\r\n" % ann.token).encode()
        for i in range(0, len(req), 7):
            s.sendall(req[i:i + 7])
            time.sleep(0.005)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    assert status_of(out) == 404


def test_bad_websocket_traffic(stack):
    ann = stack.user()

    async def go():
        # wrong things on the upgrade itself
        for q in ["?token=" + "x" * 600, "?after=1&after=2&token=" + ann.token,
                  "?token=" + ann.token + "&after=99999999999999999999"]:
            try:
                ws = await ws_open(stack, path="/v1/sync/notify" + q)
                await ws.close()
                raise AssertionError("upgrade accepted: " + q)
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code in (400, 401), (q, e.status_code)
        try:
            await ws_open(stack, ann, path="/v1/clipboard")
            raise AssertionError("upgrade accepted on a plain route")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 404
        # junk frames: answered with errors, the socket survives
        ws = await ws_open(stack, ann)
        await ws_recv(ws)
        for _ in range(50):
            await ws.send(os.urandom(random.randrange(1, 2000)))
            assert (await ws_recv(ws))["type"] == "error"
        await ws.send('{"type":"ping"}')
        assert (await ws_recv(ws))["type"] == "pong"
        await ws.close()
    run(go())
    # a client that sends a frame header and then nothing does not block anyone
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=10) as s:
        s.sendall(("GET /v1/sync/notify?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % ann.token).encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 101")
        s.sendall(b"\x81\xff\x00\x00\x00\x00\x00\x00\xff\xff")  # claims 64 KiB - 1 + mask: never sent
        healthy(stack)
    healthy(stack)


def test_health_stays_200_under_a_burst_of_bad_requests(stack):
    port = stack.gateway.port

    def burst():
        s = requests.Session()
        for i in range(100):
            s.post(stack.url + "/v1/clipboard", data=b"{" * (i + 1),
                   headers={"Authorization": "Bearer " + "a" * (i % 50 + 1)}, timeout=10)
            s.get(stack.url + "/v1/clipboard?after=-%d" % i, timeout=10)

    async def go():
        await asyncio.gather(*[asyncio.to_thread(burst) for _ in range(4)])
    run(go(), timeout=120)
    healthy(stack)
    m = requests.get(stack.url + "/metrics", timeout=10).text
    assert 'status="401"' in m
