"""The gateway's protections (docs/security.md): TLS (HTTPS and wss) with a
self-signed certificate made here, rate limits per token and per client address
(429 rate_limited with Retry-After, WebSocket handshakes included), connections
per address, and the bounded tables behind them. Each protection runs on a
gateway of its own on the shared stack's broker, so the limits touch no other
test."""
import asyncio
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
import websockets

import procs
from system import Gateway, raw_http, run, ws_recv


def error_of(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert r.headers.get("X-Request-Id")
    return body["error"]["message"]


def metrics_text(port, source="127.0.0.1"):
    """GET /metrics of a plain-HTTP gateway from a chosen client address (a gateway
    that rate-limits 127.0.0.1 still answers 127.0.0.3)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as c:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    return out.decode()


def metric(port, name, source="127.0.0.1"):
    """The value of one metric line (name with its labels, as written), or 0."""
    m = re.search(r"^%s (\d+)$" % re.escape(name), metrics_text(port, source), re.M)
    return int(m.group(1)) if m else 0


# ---- TLS -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert():
    """A self-signed certificate for 127.0.0.1, made now."""
    d = tempfile.mkdtemp(prefix="sluice-tls-")
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return {"cert": crt, "key": key, "dir": d}


@pytest.fixture(scope="module")
def tls_gw(stack, cert):
    g = Gateway(stack, tls_cert=cert["cert"], tls_key=cert["key"], header_timeout_ms=1500)
    g.https = "https://127.0.0.1:%d" % g.port
    g.wss = "wss://127.0.0.1:%d" % g.port
    yield g
    g.stop()


def test_https_request_verifies_against_the_certificate(stack, tls_gw, cert):
    ann = stack.user()
    r = requests.get(tls_gw.https + "/v1/devices", headers={"Authorization": "Bearer " + ann.token},
                     verify=cert["cert"], timeout=10)
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["devices"]] == [ann.device_id]
    r = requests.post(tls_gw.https + "/v1/clipboard", json={"content": "over tls"},
                      headers={"Authorization": "Bearer " + ann.token}, verify=cert["cert"],
                      timeout=10)
    assert r.status_code == 201, r.text
    # a client that trusts only the system's CAs refuses this certificate: it is
    # really TLS with that certificate, not plain HTTP
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_gw.https + "/metrics", timeout=10)


def test_wss_notify_with_a_token_this_gateway_never_saw(stack, tls_gw, cert):
    """Over TLS the listener cannot peek at the upgrade: a token not cached is
    verified right after the upgrade, and the socket gets nothing before that."""
    ann = stack.user()
    phone = stack.device(ann)
    ctx = ssl.create_default_context(cafile=cert["cert"])

    async def go():
        url = tls_gw.wss + "/v1/sync/notify?token=" + ann.token
        async with websockets.connect(url, ssl=ctx, open_timeout=10) as ws:
            hello = await ws_recv(ws)
            assert hello["type"] == "hello" and hello["device_id"] == ann.device_id
            item = stack.create(phone, "to the laptop")
            msg = await ws_recv(ws)
            assert msg["type"] == "clipboard.item" and msg["item"]["id"] == item["id"]
            await ws.send('{"type":"ping"}')
            assert (await ws_recv(ws))["type"] == "pong"
        # a token cached now (the same one again) takes the quick path
        async with websockets.connect(url + "&after=0", ssl=ctx, open_timeout=10) as ws:
            assert (await ws_recv(ws))["type"] == "hello"
            assert (await ws_recv(ws))["item"]["id"] == item["id"]  # the replay
    run(go())


def test_wss_with_a_bad_token_is_closed_before_any_message(tls_gw, cert):
    ctx = ssl.create_default_context(cafile=cert["cert"])

    async def go():
        url = tls_gw.wss + "/v1/sync/notify?token=" + "x" * 43
        async with websockets.connect(url, ssl=ctx, open_timeout=10) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 10)
            assert e.value.code == 4001
        # a malformed one is still refused at the upgrade, with 401
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(tls_gw.wss + "/v1/sync/notify?token=a%20b", ssl=ctx,
                                     open_timeout=10)
        assert e.value.status_code == 401
    run(go())


def test_plain_http_to_the_tls_port_fails_cleanly(tls_gw, cert):
    out = raw_http(tls_gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b'"bad_request"' in out and b"https" in out
    # a broken handshake (a TLS record header, then garbage) is just closed
    with socket.create_connection(("127.0.0.1", tls_gw.port), timeout=10) as c:
        c.sendall(b"\x16\x03\x01\x00\x05garbagegarbage")
        try:
            while c.recv(65536):
                pass
        except ConnectionResetError:
            pass
    # and the gateway goes on serving
    r = requests.get(tls_gw.https + "/metrics", verify=cert["cert"], timeout=10)
    assert r.status_code == 200
    assert 'reason="http_refused_400"' in r.text


def test_idle_tls_connections_are_closed(tls_gw, cert):
    """Slow-loris over TLS: a client that completes the handshake (or sends part of
    a head) and then nothing is closed by the gateway, not held forever."""
    ctx = ssl.create_default_context(cafile=cert["cert"])
    for first in (b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_gw.port), timeout=30),
                             server_hostname="127.0.0.1") as c:
            if first:
                c.sendall(first)
            try:
                assert c.recv(65536) == b""  # closed, nothing sent
            except (ConnectionResetError, ssl.SSLError):
                pass
    with socket.create_connection(("127.0.0.1", tls_gw.port), timeout=30) as c:
        c.sendall(b"\x16\x03\x01\x00\xff")  # half a ClientHello
        try:
            assert c.recv(65536) == b""
        except ConnectionResetError:
            pass


def test_limits_over_tls(stack, cert):
    """The connection limit per address holds for TLS connections too (a refused one
    is closed: a plain-text answer would be noise to a TLS client), and they are let
    go when they close; a wss handshake counts against the address rate."""
    g = Gateway(stack, tls_cert=cert["cert"], tls_key=cert["key"], address_max_connections=2,
                address_rate=1, address_burst=6)
    ctx = ssl.create_default_context(cafile=cert["cert"])

    def tls_get(path):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", g.port), timeout=10),
                            server_hostname="127.0.0.1")
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        assert s.recv(65536).startswith(b"HTTP/1.1 "), "no answer"
        return s

    held = []
    try:
        held = [tls_get(b"/metrics") for _ in range(2)]
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            tls_get(b"/metrics").close()
        for c in held:
            c.close()
        held = []
        end = time.monotonic() + 10
        while True:  # once the gateway saw them close, the address may connect again
            try:
                tls_get(b"/metrics").close()
                break
            except (ssl.SSLError, ConnectionError, AssertionError):
                assert time.monotonic() < end, "closed TLS connections were never let go"
                time.sleep(0.05)

        async def ws():
            for _ in range(20):
                try:
                    c = await websockets.connect("wss://127.0.0.1:%d/v1/sync/notify?token=%s"
                                                 % (g.port, "y" * 43), ssl=ctx, open_timeout=10)
                except websockets.exceptions.InvalidStatusCode as e:
                    if e.status_code != 401:  # 401 once the bad token is cached as such
                        return e.status_code
                    continue
                await c.close()
            return None
        assert run(ws()) == 429
    finally:
        for c in held:
            c.close()
        g.stop()


def start_failure(args):
    p = subprocess.run([procs.binary("gateway"), "--port", str(procs.free_port()),
                        "--frontend", "tcp://127.0.0.1:%d" % procs.free_port()] + args,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    return p.stderr


def test_tls_settings_are_checked_at_start(cert):
    err = start_failure(["--tls-cert", cert["cert"]])
    assert "tls_cert and tls_key go together" in err
    err = start_failure(["--tls-key", cert["key"]])
    assert "tls_cert and tls_key go together" in err
    err = start_failure(["--tls-cert", cert["cert"], "--tls-key", "/nonexistent/key.pem"])
    assert "cannot read /nonexistent/key.pem" in err
    bad = os.path.join(cert["dir"], "bad.pem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    err = start_failure(["--tls-cert", bad, "--tls-key", cert["key"]])
    assert "could not be loaded" in err and "bad.pem" in err
    # a key that is not the certificate's
    other = os.path.join(cert["dir"], "other-key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", other], check=True,
                   capture_output=True)
    err = start_failure(["--tls-cert", cert["cert"], "--tls-key", other])
    assert "could not be loaded" in err


# ---- rate limits -----------------------------------------------------------------------

def test_token_rate_limit(stack):
    g = Gateway(stack, token_rate=1, token_burst=3)
    try:
        ann = stack.user()
        bob = stack.user()
        s = requests.Session()
        h = {"Authorization": "Bearer " + ann.token}
        for _ in range(3):  # the burst
            assert s.get(g.url + "/v1/devices", headers=h, timeout=10).status_code == 200
        # one a second after that: within a few more, one is refused
        for _ in range(20):
            r = s.get(g.url + "/v1/devices", headers=h, timeout=10)
            if r.status_code == 429:
                break
            assert r.status_code == 200, r.text
        error_of(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        # another token is not touched
        r = s.get(g.url + "/v1/devices", headers={"Authorization": "Bearer " + bob.token},
                  timeout=10)
        assert r.status_code == 200

        async def ws():  # the WebSocket handshake with that token counts too
            for _ in range(20):
                try:
                    c = await websockets.connect(g.ws_url + "/v1/sync/notify?token=" + ann.token,
                                                 open_timeout=10)
                except websockets.exceptions.InvalidStatusCode as e:
                    return e.status_code
                await c.close()
            return None
        assert run(ws()) == 429
        assert metric(g.port, 'sluice_gateway_events_total{reason="rate_limited_token"}') >= 2
        text = metrics_text(g.port)
        assert re.search(r'http_requests_total\{route="GET /v1/devices",status="429"\} [1-9]',
                         text)
    finally:
        g.stop()


def test_address_rate_limit_counts_requests_and_handshakes(stack):
    ann = stack.user()
    g = Gateway(stack, address_rate=1, address_burst=5)
    try:
        s = requests.Session()
        codes = [s.get(g.url + "/metrics", timeout=10).status_code for _ in range(5)]
        assert codes == [200] * 5
        for _ in range(20):
            r = s.get(g.url + "/v1/nothing-here", timeout=10)
            if r.status_code == 429:
                break
        msg = error_of(r, 429, "rate_limited")
        assert "address" in msg
        assert int(r.headers["Retry-After"]) >= 1

        async def ws():
            for _ in range(20):
                try:
                    c = await websockets.connect(g.ws_url + "/v1/sync/notify?token=" + ann.token,
                                                 open_timeout=10)
                except websockets.exceptions.InvalidStatusCode as e:
                    return e.status_code, e.headers
                await c.close()
            return None, None
        status, headers = run(ws())
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert metric(g.port, 'sluice_gateway_events_total{reason="rate_limited_address"}',
                      source="127.0.0.3") >= 2
    finally:
        g.stop()


def test_connections_per_address(stack):
    g = Gateway(stack, address_max_connections=3)
    held = []
    try:
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", g.port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(c)
        r = requests.get(g.url + "/metrics", timeout=10)
        error_of(r, 429, "rate_limited")
        assert r.headers["Retry-After"]
        # another address (all of 127/8 is this host) is not touched
        c = socket.create_connection(("127.0.0.1", g.port), source_address=("127.0.0.2", 0))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(65536).startswith(b"HTTP/1.1 200")
        c.close()
        for c in held:
            c.close()
        held = []
        # once the gateway saw them close, the address may connect again
        end = time.monotonic() + 10
        while True:
            r = requests.get(g.url + "/metrics", timeout=10)
            if r.status_code == 200:
                break
            assert time.monotonic() < end, "the closed connections were never let go"
            time.sleep(0.05)
        assert 'reason="rate_limited_connections"' in r.text
    finally:
        for c in held:
            c.close()
        g.stop()


def test_tables_stay_bounded_under_a_flood_of_tokens_and_addresses(stack):
    cap = 20
    # slow refill: no bucket would expire during the flood, only the cap bounds them
    g = Gateway(stack, token_rate=1, token_burst=1000, address_rate=1, address_burst=1000,
                ratelimit_max_entries=cap)
    try:
        s = requests.Session()
        for _ in range(100):  # distinct made-up tokens: each a bucket, then 401
            r = s.get(g.url + "/v1/devices",
                      headers={"Authorization": "Bearer " + uuid.uuid4().hex * 2}, timeout=10)
            error_of(r, 401, "unauthorized")
        for i in range(2, 62):  # distinct client addresses (all of 127/8 is this host)
            out = b""
            with socket.create_connection(("127.0.0.1", g.port),
                                          source_address=("127.0.0.%d" % i, 0)) as c:
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while b"\r\n\r\n" not in out:
                    out += c.recv(65536)
            assert out.startswith(b"HTTP/1.1 200"), out[:100]
        # cap tokens + cap addresses + the addresses with a connection open (one here)
        assert metric(g.port, "sluice_gateway_rate_limit_entries") <= 2 * cap + 1
        # the evictions show in /metrics
        text = metrics_text(g.port)
        assert re.search(r'reason="rate_limit_evicted_token"\} (8\d|9\d|\d{3})', text)
        assert re.search(r'reason="rate_limit_evicted_address"\} [1-9]', text)
    finally:
        g.stop()


def test_idle_rate_limit_entries_expire(stack):
    # buckets refill within 1 ms; no per-address count, so the table can empty
    g = Gateway(stack, token_rate=1000, token_burst=1, address_max_pending=0)
    try:
        s = requests.Session()
        for _ in range(30):
            r = s.get(g.url + "/v1/devices",
                      headers={"Authorization": "Bearer " + uuid.uuid4().hex * 2}, timeout=10)
            error_of(r, 401, "unauthorized")
        end = time.monotonic() + 15
        while metric(g.port, "sluice_gateway_rate_limit_entries") > 0:
            assert time.monotonic() < end, "idle rate limit entries never expired"
            time.sleep(0.1)
    finally:
        g.stop()


def test_rate_limits_are_off_by_default(stack):
    """No request rate is limited by default: no bucket is kept. The one entry is
    the address of the /metrics request itself, whose connections are counted for
    address_max_pending (on by default)."""
    ann = stack.user()
    s = requests.Session()
    h = {"Authorization": "Bearer " + ann.token}
    for _ in range(50):
        assert s.get(stack.url + "/v1/devices", headers=h, timeout=10).status_code == 200
    s.close()
    assert metric(stack.gateway.port, "sluice_gateway_rate_limit_entries") == 1


def test_rate_limit_settings_are_checked_at_start():
    assert "rate limit setting is out of range" in start_failure(["--token-rate", "-1"])
    assert "rate limit setting is out of range" in start_failure(["--address-burst", "0"])
    assert "rate limit setting is out of range" in start_failure(
        ["--ratelimit-max-entries", "0"])
