"""The `sys` ops for operators: `workers` lists every registered worker, `drain`
stops new work to one (sluicectl drain). Uses the broker tests' fixtures."""


def workers(client):
    body = client.request("sys", {"op": "workers"})
    assert body["status"] == 200, body
    return {w["worker"]: w for w in body["data"]}


def test_workers_lists_each_worker(make_broker):
    b = make_broker(heartbeat_ms=100, liveness=5)
    b.echo_worker("db", credit=4, identity=b"db-one", status={"worker": "db@host:1"})
    b.echo_worker("chat", credit=2, identity=b"chat-one")
    c = b.client()
    b.wait_status(lambda d: d["broker"]["workers"] == 2 and len(d["pools"]) == 1)
    ws = workers(c)
    assert ws["db-one"] == {"worker": "db-one", "name": "db@host:1", "service": "db",
                            "capacity": 4, "in_flight": 0, "draining": False, "held": False}
    assert ws["chat-one"]["service"] == "chat" and "name" not in ws["chat-one"]


def test_drain_stops_new_work_and_keeps_what_it_holds(make_broker):
    b = make_broker()
    c = b.client()
    w1 = b.worker("svc", credit=5, identity=b"w-one")
    w2 = b.worker("svc", credit=5, identity=b"w-two")
    b.wait_workers("svc", 2)
    # one request in flight, at whichever worker the broker chose
    rid = c.send("svc", {"op": "x"})
    holder, other = None, None
    for w, o in ((w1, w2), (w2, w1)):
        try:
            frames = w.recv_request(timeout=0.5)
            holder, other = w, o
            break
        except TimeoutError:
            continue
    assert holder is not None
    held_name = b"w-one" if holder is w1 else b"w-two"
    body = c.request("sys", {"op": "drain", "args": {"worker": held_name.decode()}})
    assert body == {"status": 200, "data": {"drained": [held_name.decode()]}}
    ws = workers(c)
    assert ws[held_name.decode()]["draining"] and ws[held_name.decode()]["held"]
    assert b.status()["services"]["svc"]["workers"] == 1
    # new requests all go to the other worker
    for _ in range(3):
        c.send("svc", {"op": "y"})
        other.recv_request(timeout=5)
    # the drained worker still delivers what it held
    route, got_rid = frames[0], frames[1]
    holder.reply(route, got_rid, {"status": 200, "data": "late but fine"})
    assert c.wait_reply(rid) == {"status": 200, "data": "late but fine"}
    # empty and drained, it stays registered (an operator stops it now) and idle
    ws = workers(c)
    assert ws[held_name.decode()]["in_flight"] == 0 and ws[held_name.decode()]["held"]


def test_drain_of_last_worker_fails_its_queue_fast(make_broker):
    b = make_broker()
    c = b.client()
    b.worker("solo", credit=0, identity=b"solo-1")  # takes nothing: requests queue
    b.wait_workers("solo", 1)
    rid = c.send("solo", {"op": "q"}, deadline_ms=30000)
    b.wait_status(lambda d: d["services"]["solo"]["queued"] == 1)
    ops = b.client()  # its own socket: c's 503 may come before the drain's reply
    assert ops.request("sys", {"op": "drain", "args": {"worker": "solo-1"}})["status"] == 200
    body = c.wait_reply(rid, timeout=5)
    assert body["status"] == 503 and body["error"]["code"] == "unavailable"
    assert c.request("solo", {"op": "q"})["status"] == 503


def test_drain_by_the_name_a_worker_gives_itself(make_broker):
    b = make_broker(heartbeat_ms=100, liveness=5)
    b.echo_worker("db", identity=b"\x00\x01", status={"worker": "db-7"})
    c = b.client()
    b.wait_status(lambda d: len(d["pools"]) == 1)
    body = c.request("sys", {"op": "drain", "args": {"worker": "db-7"}})
    assert body == {"status": 200, "data": {"drained": ["0001"]}}  # routing id in hex
    assert workers(c)["0001"]["held"]


def test_drain_errors(broker):
    c = broker.client()
    body = c.request("sys", {"op": "drain", "args": {"worker": "nobody"}})
    assert body["status"] == 404 and body["error"]["code"] == "not_found"
    for args in (None, {}, {"worker": 5}, {"worker": ""}):
        body = c.request("sys", {"op": "drain", "args": args})
        assert body["status"] == 400 and body["error"]["code"] == "bad_request", args


def test_ready_again_undrains(make_broker):
    b = make_broker()
    c = b.client()
    w = b.worker("svc", credit=1, identity=b"again")
    b.wait_workers("svc", 1)
    assert c.request("sys", {"op": "drain", "args": {"worker": "again"}})["status"] == 200
    b.wait_workers("svc", 0)
    w.sock.send_multipart([b"", b"SMP1", b"\x10", b"svc", b"\x00\x00\x00\x01"])  # restart
    b.wait_workers("svc", 1)
    assert not workers(c)["again"]["held"]
