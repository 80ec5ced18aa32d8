"""/health and /metrics cannot be used to hammer the broker and MariaDB (each is
built at most once per health_cache_ms, requests meanwhile share it), and with
ops_token set they show their detail only to the operator."""
import threading
import time

import requests

from system import Gateway


def broker_requests(url, headers=None):
    r = requests.get(url + "/health", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["broker"]["requests"]


def test_health_flood_reaches_the_broker_about_once_a_second(stack):
    time.sleep(1.1)  # past any cached answer
    before = broker_requests(stack.url)
    answered = []

    def hammer():
        with requests.Session() as s:
            for _ in range(60):
                r = s.get(stack.url + "/health", timeout=10)
                answered.append(r.status_code)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    time.sleep(1.1)
    after = broker_requests(stack.url)
    assert answered.count(200) == 360, set(answered)
    # each build is one sys status and one db.ping; without the cache 360 /health
    # would have been 720 requests at the broker
    builds = (after - before) / 2
    assert builds <= took + 4, (after - before, took)


def test_ops_token_guards_the_detail(stack):
    gw = Gateway(stack, ops_token="op-s3cret", health_cache_ms=0)
    try:
        r = requests.get(gw.url + "/health", timeout=5)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = requests.get(gw.url + "/metrics", timeout=5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert "ops_token" in r.json()["error"]["message"]
        bad = {"Authorization": "Bearer op-s3creT"}
        assert requests.get(gw.url + "/health", headers=bad, timeout=5).json() == {
            "status": "ok"}
        assert requests.get(gw.url + "/metrics", headers=bad, timeout=5).status_code == 401
        good = {"Authorization": "Bearer op-s3cret"}
        r = requests.get(gw.url + "/health", headers=good, timeout=5)
        assert r.status_code == 200 and len(r.json()["pools"]) == 2
        r = requests.get(gw.url + "/metrics", headers=good, timeout=5)
        assert r.status_code == 200 and "sluice_gateway_" in r.text
    finally:
        gw.stop()
