"""The gateway answers a request held by a broker that dies at once, 503
`unavailable` with Retry-After, instead of at its deadline plus the gateway's grace
second: it keeps one DEALER per broker (common/brokerlink.c) and knows which broker
each request went to, so the DISCONNECTED event of that connection fails exactly
the requests sent on it. A hand-driven worker takes the request and never answers;
the broker is killed with SIGKILL while it holds it."""
import concurrent.futures
import time
from types import SimpleNamespace

import requests

import procs
import smp
from system import Gateway

DEADLINE_MS = 10000
FAST_S = 3.0  # far under the deadline (10 s) plus the grace second


def start_broker(ep):
    p = procs.Proc([procs.binary("broker"), "--frontend", ep.frontend, "--backend", ep.backend,
                    "--events-in", ep.events_in, "--events-out", ep.events_out,
                    "--liveness", "20"], name="broker")
    p.wait_log("listening")
    return p


def test_request_held_by_a_killed_broker_is_answered_at_once():
    ep = SimpleNamespace(**{k: procs.tcp(procs.free_port())
                            for k in ("frontend", "backend", "events_in", "events_out")})
    broker = start_broker(ep)
    gw = Gateway(ep, deadline_ms=DEADLINE_MS, internal_deadline_ms=DEADLINE_MS)
    silent = smp.Worker(ep.backend, "db", credit=4)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(requests.post, gw.url + "/v1/users",
                            json={"username": "held_by_broker", "password": "long enough pw"},
                            timeout=DEADLINE_MS / 1000 + 10)
            _, _, _, body = silent.recv_request(timeout=10)  # the broker holds it now
            assert body["op"] == "user.create", body
            assert not fut.done()
            killed_at = time.monotonic()
            broker.kill()
            r = fut.result()
            elapsed = time.monotonic() - killed_at
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable", r.text
        assert "lost" in r.json()["error"]["message"], r.text
        assert r.headers.get("Retry-After"), r.headers
        assert elapsed < FAST_S, "answered %.1f s after the kill" % elapsed
        gw.proc.wait_log("lost the connection to the broker", timeout=1)
    finally:
        silent.close()
        if broker.alive():
            broker.kill()
        gw.stop()
