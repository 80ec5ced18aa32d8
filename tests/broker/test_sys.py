"""The `sys` service, answered by the broker: status and services."""
import smp


def test_sys_status_shape(make_broker):
    b = make_broker(heartbeat_ms=100, liveness=5)
    pool = {"pool_size": 4, "max_overflow": 2, "checked_out": 1, "overflow": 0, "idle": 3,
            "invalid": 0, "waiting": 0, "reconnects": 0, "errors": 0}
    db1 = b.echo_worker("db", credit=4, status=pool, identity=b"db-one")
    db2 = b.echo_worker("db", credit=6, status=dict(pool, worker="db@host:42"))
    chat = b.echo_worker("chat", credit=3, status={"streams": 2})
    c = b.client()
    data = b.wait_status(lambda d: len(d["pools"]) == 2 and "chat" in d["services"]
                         and d["services"]["db"]["workers"] == 2)
    assert set(data) == {"broker", "services", "pools"}
    broker = data["broker"]
    for key in ("uptime_s", "requests", "queued", "in_flight", "workers", "unavailable",
                "timeouts", "worker_lost", "version"):
        assert key in broker, key
    assert broker["workers"] == 3 and isinstance(broker["uptime_s"], int)
    assert data["services"]["db"] == {"workers": 2, "queued": 0, "capacity": 10,
                                      "in_flight": 0, "credit": 10, "queue_max": 1000,
                                      "queue_free": 1000}
    assert data["services"]["chat"]["capacity"] == 3
    names = sorted(p["worker"] for p in data["pools"])
    assert names == ["db-one", "db@host:42"]  # a worker's own name is kept
    for p in data["pools"]:
        for key, value in pool.items():
            assert p[key] == value
    # the pool status follows the heartbeats
    db1.status = dict(pool, checked_out=4)
    b.wait_status(lambda d: any(p.get("checked_out") == 4 for p in d["pools"]))
    assert sorted(c.request("sys", {"op": "services"})["data"]) == ["chat", "db"]
    del db2, chat


def test_sys_services_lists_live_services(broker):
    c = broker.client()
    assert c.request("sys", {"op": "services"}) == {"status": 200, "data": []}
    w = broker.worker("alpha")
    broker.wait_workers("alpha", 1)
    assert c.request("sys", {"op": "services"}) == {"status": 200, "data": ["alpha"]}
    w.disconnect()
    broker.wait_workers("alpha", 0)
    assert c.request("sys", {"op": "services"}) == {"status": 200, "data": []}


def test_sys_unknown_op(broker):
    body = broker.client().request("sys", {"op": "reboot"})
    assert body["status"] == 400 and body["error"]["code"] == "bad_request"


def test_worker_cannot_register_sys(broker):
    w = broker.worker("sys")
    cmd, _ = w.recv(timeout=5)
    assert cmd == smp.DISCONNECT
    assert broker.client().request("sys", {"op": "services"})["data"] == []
