"""Every HTTP endpoint of docs/api.md (except chat streaming) and its errors,
through the whole stack."""
import json
import re
import socket
import time

import requests

import procs
from system import Gateway, raw_http

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DIGITS = re.compile(r"^\d+$")


def error_of(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert r.headers.get("X-Request-Id")
    return body["error"]["message"]


# ---- accounts and devices ---------------------------------------------------------------

def test_create_user_and_conflict(stack):
    r = stack.post("/v1/users", {"username": "Ann.B-c_1x" + stack.user().user_id,
                                 "password": "12345678"})
    assert r.status_code == 201, r.text
    u = r.json()
    assert DIGITS.match(u["id"]) and u["username"].startswith("Ann.B-c_1x")
    assert RFC3339.match(u["created_at"])
    again = stack.post("/v1/users", {"username": u["username"], "password": "other-password"})
    error_of(again, 409, "conflict")


def test_create_user_validation(stack):
    cases = [
        ({"username": "ab", "password": "12345678"}, "username"),
        ({"username": "a" * 65, "password": "12345678"}, "username"),
        ({"username": "bad name", "password": "12345678"}, "username"),
        ({"username": "abc", "password": "1234567"}, "password"),
        ({"username": "abc", "password": "x" * 257}, "password"),
        ({"username": "abc"}, "password"),
        ({"username": 5, "password": "12345678"}, "username"),
        ({"username": "abcd", "password": "12345678", "admin": True}, "admin"),
    ]
    for body, word in cases:
        msg = error_of(stack.post("/v1/users", body), 400, "bad_request")
        assert word in msg, (body, msg)
    for raw in [b"", b"[]", b"\"x\"", b"{", b"{\"username\":\"abc\",\"username\":\"abd\"}"]:
        error_of(stack.post("/v1/users", raw=raw), 400, "bad_request")


def test_session_and_wrong_credentials(stack):
    ann = stack.user()
    assert DIGITS.match(ann.user_id) and DIGITS.match(ann.device_id) and ann.token
    wrong = stack.post("/v1/sessions", {"username": ann.username, "password": "not-it-at-all",
                                        "device_name": "x"})
    nobody = stack.post("/v1/sessions", {"username": "nobody" + ann.user_id,
                                         "password": "not-it-at-all", "device_name": "x"})
    m1 = error_of(wrong, 401, "unauthorized")
    m2 = error_of(nobody, 401, "unauthorized")
    assert m1 == m2  # same message whether the user exists or not
    error_of(stack.post("/v1/sessions", {"username": ann.username, "password": ann.password}),
             400, "bad_request")
    error_of(stack.post("/v1/sessions", {"username": ann.username, "password": ann.password,
                                         "device_name": ""}), 400, "bad_request")
    error_of(stack.post("/v1/sessions", {"username": ann.username, "password": ann.password,
                                         "device_name": "d" * 129}), 400, "bad_request")


def test_devices_list_and_revoke(stack):
    laptop = stack.user()
    phone = stack.device(laptop)
    r = stack.get("/v1/devices", token=laptop.token)
    assert r.status_code == 200
    devices = {d["id"]: d for d in r.json()["devices"]}
    assert set(devices) == {laptop.device_id, phone.device_id}
    for d in devices.values():
        assert set(d) >= {"id", "name", "is_active", "last_seen_at", "created_at"}
        assert isinstance(d["is_active"], bool)
    assert devices[phone.device_id]["name"] == "phone"
    # another user's device is a 404, exactly like a missing one
    other = stack.user()
    error_of(stack.delete("/v1/devices/" + other.device_id, token=laptop.token), 404, "not_found")
    error_of(stack.delete("/v1/devices/999999999", token=laptop.token), 404, "not_found")
    # the phone's token works until revoked, and not a moment after
    assert stack.get("/v1/devices", token=phone.token).status_code == 200
    r = stack.delete("/v1/devices/" + phone.device_id, token=laptop.token)
    assert r.status_code == 204 and r.content == b""
    error_of(stack.get("/v1/devices", token=phone.token), 401, "unauthorized")
    assert stack.get("/v1/devices", token=laptop.token).status_code == 200


def test_bad_ids(stack):
    ann = stack.user()
    for bad in ["abc", "-1", "9223372036854775808", "99999999999999999999", "1.5", "1e3", "0x1",
                "+1", "%201", "%EF%BC%91"]:
        for path in ["/v1/devices/", "/v1/clipboard/"]:
            r = stack.delete(path + bad, token=ann.token)
            error_of(r, 400, "bad_request")
        error_of(stack.get("/v1/chat/conversations/%s/messages" % bad, token=ann.token), 400,
                 "bad_request")
    # the largest id is valid (and missing)
    error_of(stack.delete("/v1/clipboard/9223372036854775807", token=ann.token), 404,
             "not_found")


# ---- clipboard ----------------------------------------------------------------------------

def test_clipboard_create_list_latest_delete(stack):
    ann = stack.user()
    error_of(stack.get("/v1/clipboard/latest", token=ann.token), 404, "not_found")
    a = stack.create(ann, "first")
    b = stack.create(ann, "<b>second</b>", content_type="text/html")
    for item in (a, b):
        assert set(item) == {"id", "seq", "content", "content_type", "source_device_id",
                             "created_at"}
        assert DIGITS.match(item["id"]) and isinstance(item["seq"], int)
        assert item["source_device_id"] == ann.device_id
        assert RFC3339.match(item["created_at"])
    assert a["content_type"] == "text/plain" and b["content_type"] == "text/html"
    empty = stack.create(ann, "")
    assert empty["content"] == ""
    assert stack.delete("/v1/clipboard/" + empty["id"], token=ann.token).status_code == 204
    assert b["seq"] > a["seq"]
    latest = stack.get("/v1/clipboard/latest", token=ann.token).json()
    assert latest == b
    r = stack.get("/v1/clipboard", token=ann.token).json()
    assert [i["id"] for i in r["items"]] == [a["id"], b["id"]]
    assert r["next_after"] == b["seq"]
    r = stack.get("/v1/clipboard?after=%d&limit=1" % a["seq"], token=ann.token).json()
    assert [i["id"] for i in r["items"]] == [b["id"]]
    r = stack.get("/v1/clipboard?after=%d" % b["seq"], token=ann.token).json()
    assert r["items"] == [] and r["next_after"] == b["seq"]
    # someone else's item is a 404 and stays
    other = stack.user()
    error_of(stack.delete("/v1/clipboard/" + a["id"], token=other.token), 404, "not_found")
    assert stack.get("/v1/clipboard", token=other.token).json()["items"] == []
    r = stack.delete("/v1/clipboard/" + a["id"], token=ann.token)
    assert r.status_code == 204
    error_of(stack.delete("/v1/clipboard/" + a["id"], token=ann.token), 404, "not_found")


def test_clipboard_validation(stack):
    ann = stack.user()
    t = ann.token
    for body in [{}, {"content": 5}, {"content": None}, {"content": "x", "content_type": 7},
                 {"content": "x", "content_type": ""}, {"content": "x", "extra": 1},
                 {"content": ["x"]}]:
        error_of(stack.post("/v1/clipboard", body, token=t), 400, "bad_request")
    for q in ["after=-1", "after=abc", "after=", "after=9223372036854775808", "limit=0",
              "limit=501", "limit=x", "after=1&after=2"]:
        error_of(stack.get("/v1/clipboard?" + q, token=t), 400, "bad_request")
    assert stack.get("/v1/clipboard?limit=500&after=9223372036854775807",
                     token=t).status_code == 200
    # max_item_bytes (1 MiB by default) counts bytes: 413 just above it
    big = "é" * (512 * 1024 + 1)
    error_of(stack.post("/v1/clipboard", {"content": big}, token=t), 413, "payload_too_large")
    ok = stack.post("/v1/clipboard", {"content": "x" * (1024 * 1024)}, token=t)
    assert ok.status_code == 201, ok.text


def test_idempotency_key(stack):
    ann = stack.user()
    h = {"Idempotency-Key": "key-" + ann.user_id}
    r1 = stack.post("/v1/clipboard", {"content": "once"}, token=ann.token, headers=h)
    r2 = stack.post("/v1/clipboard", {"content": "once"}, token=ann.token, headers=h)
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    items = stack.get("/v1/clipboard", token=ann.token).json()["items"]
    assert len(items) == 1
    error_of(stack.post("/v1/clipboard", {"content": "x"}, token=ann.token,
                        headers={"Idempotency-Key": "k" * 129}), 400, "bad_request")
    error_of(stack.post("/v1/clipboard", {"content": "x"}, token=ann.token,
                        headers={"Idempotency-Key": "tab\there"}), 400, "bad_request")


# ---- chat (no streaming here) ---------------------------------------------------------------

def test_chat_conversations_and_messages(stack):
    ann = stack.user()
    c1 = stack.post("/v1/chat/conversations", {"title": "first"}, token=ann.token)
    assert c1.status_code == 201, c1.text
    c2 = stack.post("/v1/chat/conversations", token=ann.token)  # empty body: {}
    assert c2.status_code == 201, c2.text
    c1, c2 = c1.json(), c2.json()
    assert DIGITS.match(c1["id"]) and c1["title"] == "first" and RFC3339.match(c1["created_at"])
    convs = stack.get("/v1/chat/conversations", token=ann.token).json()["conversations"]
    assert [c["id"] for c in convs] == [c2["id"], c1["id"]]  # newest first
    r = stack.get("/v1/chat/conversations/%s/messages" % c1["id"], token=ann.token)
    assert r.status_code == 200 and r.json() == {"messages": [], "next_after": 0, "more": False}
    other = stack.user()
    assert stack.get("/v1/chat/conversations", token=other.token).json()["conversations"] == []
    error_of(stack.post("/v1/chat/conversations", {"title": 3}, token=ann.token), 400,
             "bad_request")
    error_of(stack.post("/v1/chat/conversations/%s/messages" % c1["id"], {"content": 1},
                        token=ann.token), 400, "bad_request")
    error_of(stack.post("/v1/chat/conversations/%s/messages" % c1["id"],
                        {"content": "hi", "stream": "yes"}, token=ann.token), 400, "bad_request")


def test_chat_message_without_chat_worker_is_503(stack):
    ann = stack.user()
    conv = stack.post("/v1/chat/conversations", {"title": "t"}, token=ann.token).json()
    r = stack.post("/v1/chat/conversations/%s/messages" % conv["id"],
                   {"content": "hello", "stream": False}, token=ann.token)
    error_of(r, 503, "unavailable")
    assert r.headers["Retry-After"].isdigit()


# ---- conventions ------------------------------------------------------------------------------

def test_auth_required(stack):
    for method, path in [("GET", "/v1/devices"), ("DELETE", "/v1/devices/1"),
                         ("POST", "/v1/clipboard"), ("GET", "/v1/clipboard"),
                         ("GET", "/v1/clipboard/latest"), ("DELETE", "/v1/clipboard/1"),
                         ("POST", "/v1/chat/conversations"), ("GET", "/v1/chat/conversations"),
                         ("GET", "/v1/chat/conversations/1/messages"),
                         ("POST", "/v1/chat/conversations/1/messages")]:
        r = stack.request(method, path)
        error_of(r, 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate") == "Bearer"
        error_of(stack.request(method, path, token="not-a-token"), 401, "unauthorized")
        error_of(stack.request(method, path, headers={"Authorization": "Basic abc"}), 401,
                 "unauthorized")


def test_request_id_echoed_or_made(stack):
    r = stack.get("/health", headers={"X-Request-Id": "trace-me-123"})
    assert r.headers["X-Request-Id"] == "trace-me-123"
    seen = set()
    for path in ["/health", "/nope", "/v1/devices", "/metrics"]:
        rid = stack.get(path).headers["X-Request-Id"]
        assert rid and rid not in seen
        seen.add(rid)
    r = stack.post("/v1/users", raw=b"{", headers={"X-Request-Id": "bad-json-1"})
    assert r.status_code == 400 and r.headers["X-Request-Id"] == "bad-json-1"


def test_unknown_route_and_method(stack):
    error_of(stack.get("/v2/clipboard"), 404, "not_found")
    error_of(stack.get("/v1/clipboard/1/extra"), 404, "not_found")
    r = stack.request("PUT", "/v1/clipboard")
    error_of(r, 405, "method_not_allowed")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "GET"}
    r = stack.request("PATCH", "/v1/devices/1")
    error_of(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "DELETE"
    error_of(stack.post("/health"), 405, "method_not_allowed")
    r = stack.get("/v1/sync/notify")
    assert r.status_code == 426


def test_health_and_metrics(stack):
    r = stack.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] in ("ok", "degraded")
    assert h["broker"]["uptime_s"] >= 0
    assert h["services"]["db"]["workers"] == 2
    assert len(h["pools"]) == 2
    for p in h["pools"]:
        for f in ("worker", "pool_size", "max_overflow", "checked_out", "overflow", "idle",
                  "invalid", "waiting", "reconnects", "errors"):
            assert f in p, (f, p)
        assert p["pool_size"] == 2
    stack.get("/v1/devices")  # a 401 to count
    m = stack.get("/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    text = m.text
    assert 'sluice_gateway_http_requests_total{route="GET /health",status="200"}' in text
    assert 'sluice_gateway_http_requests_total{route="GET /v1/devices",status="401"}' in text
    assert 'sluice_gateway_http_request_duration_seconds_bucket{route="GET /health",le="+Inf"}' in text
    assert re.search(r"^sluice_gateway_open_websockets \d+$", text, re.M)
    assert re.search(r"^sluice_gateway_active_streams \d+$", text, re.M)
    assert re.search(r'^sluice_broker_queue_depth\{service="db"\} \d+$', text, re.M)
    assert re.search(r'^sluice_pool_checked_out\{worker="[^"]+"\} \d+$', text, re.M)
    assert re.search(r'^sluice_pool_pool_size\{worker="[^"]+"\} 2$', text, re.M)


def test_static_web_client(stack):
    r = stack.get("/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert stack.get("/app.js").headers["Content-Type"].startswith("text/javascript")
    error_of(stack.get("/nothing.js"), 404, "not_found")


def test_keepalive_and_pipelining(stack):
    ann = stack.user()
    s = requests.Session()
    for _ in range(20):
        r = s.get(stack.url + "/v1/clipboard/latest", headers=ann.auth)
        assert r.status_code == 404
    # two requests in one write: two answers, in order, on one connection
    req = ("GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: p1\r\n\r\n"
           "GET /v1/clipboard/latest HTTP/1.1\r\nHost: x\r\nX-Request-Id: p2\r\n"
           "Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % ann.token).encode()
    out = raw_http(stack.gateway.port, req).decode("latin-1")
    assert out.count("HTTP/1.1 ") == 2, out
    first, second = out.index("x-request-id: p1"), out.index("x-request-id: p2")
    assert first < second
    assert "HTTP/1.1 404" in out[out.index("HTTP/1.1 ", 5):]


def _read_answer(f):
    status = f.readline()
    headers = {}
    while True:
        line = f.readline().rstrip(b"\r\n")
        if not line:
            break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", "0")))


def _pipelined_large_answers(stack, slow):
    """Two 180 KB answers (3 x 60 KB items), pipelined on one connection, more than
    one write each; with slow, the reader has a small buffer and reads late, so the
    gateway meets a full socket and must finish later. Returns the socket and its
    reader after checking that both answers arrived whole, in order."""
    ann = stack.user()
    contents = [("%d" % i) * 60_000 for i in range(3)]
    for c in contents:
        assert stack.post("/v1/clipboard", {"content": c}, token=ann.token).status_code == 201
    get = ("GET /v1/clipboard?after=0&limit=20 HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n"
           "Authorization: Bearer " + ann.token + "\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=5)
    if slow:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall((get % "big1" + get % "big2").encode())
    if slow:
        time.sleep(0.5)
    f = s.makefile("rb")
    for rid in ("big1", "big2"):
        status, headers, body = _read_answer(f)
        assert status.startswith(b"HTTP/1.1 200"), status
        assert headers["x-request-id"] == rid
        assert [i["content"] for i in json.loads(body)["items"]] == contents
    return ann, s, f


def test_pipelined_large_answers(stack):
    ann, s, f = _pipelined_large_answers(stack, slow=False)
    with s:
        s.sendall(("GET /v1/clipboard/latest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "\r\n" % ann.token).encode())
        assert _read_answer(f)[0].startswith(b"HTTP/1.1 200")


def test_pipelined_large_answers_to_a_slow_reader(stack):
    _, s, _ = _pipelined_large_answers(stack, slow=True)
    s.close()


def test_no_broker_gives_503(stack):
    """A gateway whose broker is not there answers at once: 503 with Retry-After."""
    lonely = Gateway(stack, frontend=procs.tcp(procs.free_port()))
    try:
        r = requests.get(lonely.url + "/v1/devices", headers={"Authorization": "Bearer abc"},
                         timeout=10)
        error_of(r, 503, "unavailable")
        assert r.headers["Retry-After"] == "1"
        h = requests.get(lonely.url + "/health", timeout=10)
        assert h.status_code == 503 and h.json()["status"] == "down"
        assert requests.get(lonely.url + "/metrics", timeout=10).status_code == 200
    finally:
        lonely.stop()


def test_connection_limit(stack):
    small = Gateway(stack, max_connections=3)
    held = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", small.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(65536)
            held.append(s)
        r = requests.get(small.url + "/metrics", timeout=10)
        error_of(r, 503, "unavailable")
        assert r.headers["Retry-After"]
    finally:
        for s in held:
            s.close()
        small.stop()
