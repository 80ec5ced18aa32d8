"""Live items reach a device in seq order, even when several devices write at once
through different DB workers: a client keeps the last seq it saw and reconnects
with after=<it>, so an item overtaken by a later one would be skipped for good."""
import asyncio
import threading

from system import run, ws_open, ws_recv


def test_live_items_arrive_in_seq_order_with_concurrent_writers(stack):
    ann = stack.user()
    writers = [stack.device(ann, "w%d" % i) for i in range(4)]
    per_writer = 60
    made = []
    lock = threading.Lock()

    def write(dev):
        for i in range(per_writer):
            item = stack.create(dev, "x%d" % i)
            with lock:
                made.append(item["seq"])

    async def go():
        ws = await ws_open(stack, ann)
        await ws_recv(ws)  # hello
        threads = [threading.Thread(target=write, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        seen = []
        while len(seen) < per_writer * len(writers):
            seen.append((await ws_recv(ws, timeout=20))["item"]["seq"])
        for t in threads:
            await asyncio.to_thread(t.join)
        await ws.close()
        return seen

    seen = run(go(), timeout=180)
    assert sorted(seen) == sorted(made)
    out_of_order = [(a, b) for a, b in zip(seen, seen[1:]) if b < a]
    assert not out_of_order, "%d overtakes, e.g. %s" % (len(out_of_order), out_of_order[:5])


def test_a_missing_seq_makes_the_sockets_replay(stack):
    """An item event whose earlier seq never comes (an event lost on the bus, or a
    DB worker killed between COMMIT and PUBLISH) is not sent past the hole: after
    ws_gap_wait_ms the user's sockets are closed with 4002, and the reconnect with
    after=<the last seq it got> replays what the database holds."""
    import time

    import websockets
    import zmq

    import smp

    ann = stack.user()
    phone = stack.device(ann, "phone")
    first = stack.create(phone, "one")

    async def go():
        ws = await ws_open(stack, ann)
        hello = await ws_recv(ws)
        assert hello["seq"] == first["seq"]
        # an event for seq+2 whose seq+1 never comes, published as a worker does
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(stack.events_in)
        ghost = dict(first, id="999999999", seq=first["seq"] + 2, content="ghost")
        body = smp.pack({"type": "clipboard.item", "item": ghost,
                         "source_device_id": int(phone.device_id)})
        topic = ("user/%s/" % ann.user_id).encode()
        started = time.monotonic()
        closed = None
        try:
            while closed is None and time.monotonic() - started < 15:
                pub.send_multipart([topic, smp.PROTO, body])  # until the SUB joined
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.2)
                    raise AssertionError("sent past a missing seq: %s" % msg)
                except asyncio.TimeoutError:
                    pass
                except websockets.exceptions.ConnectionClosed as e:
                    closed = e
        finally:
            pub.close()
        assert closed is not None and closed.code == 4002, closed
        # the reconnect replays the database: the real next item, never the ghost
        real = await asyncio.to_thread(stack.create, phone, "two")
        ws = await ws_open(stack, ann, after=first["seq"])
        assert (await ws_recv(ws))["type"] == "hello"
        assert (await ws_recv(ws))["item"]["seq"] == real["seq"] == first["seq"] + 1
        await ws.close()

    run(go(), timeout=60)
