"""The seed application's failure, shown not to happen: WebSockets stay open for the
whole test while hundreds of requests pass through pools of 2 connections per DB
worker (4 in all, no overflow). In the seed every open socket held a pooled session,
so a handful of sockets starved every request ("QueuePool limit of size 20 overflow
5 reached"). Here sockets hold nothing of the database."""
import asyncio
import concurrent.futures
import threading

import requests

from system import run, ws_open, ws_recv


def test_sockets_open_while_hundreds_of_requests_pass(stack):
    owner = stack.user("watcher")
    writer = stack.device(owner, "writer")
    # more sockets than there are database connections, all open for the whole test
    others = [stack.user() for _ in range(3)]
    samples = []
    stop = threading.Event()

    def sample_pools():
        while not stop.is_set():
            samples.append(stack.pools())
            stop.wait(0.1)

    def work(i):
        s = requests.Session()
        statuses, seqs = [], []
        for j in range(10):
            r = s.post(stack.url + "/v1/clipboard", json={"content": "n%d-%d" % (i, j)},
                       headers=writer.auth, timeout=15)
            statuses.append(r.status_code)
            if r.status_code == 201:
                seqs.append(r.json()["seq"])
            r = s.get(stack.url + "/v1/clipboard?after=0&limit=20", headers=writer.auth,
                      timeout=15)
            statuses.append(r.status_code)
        return statuses, seqs

    async def go():
        sockets = [await ws_open(stack, owner) for _ in range(6)]
        sockets += [await ws_open(stack, o) for o in others for _ in range(2)]
        for ws in sockets:
            assert (await ws_recv(ws))["type"] == "hello"
        sampler = threading.Thread(target=sample_pools)
        sampler.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                results = await asyncio.to_thread(lambda: list(ex.map(work, range(24))))
        finally:
            stop.set()
            await asyncio.to_thread(sampler.join)
        statuses = [x for r in results for x in r[0]]
        seqs = sorted(x for r in results for x in r[1])
        assert len(statuses) == 24 * 20
        assert set(statuses) == {200, 201}, "some requests failed: %r" % (
            {s: statuses.count(s) for s in set(statuses)})
        # every item reached every socket of the owner (none is the writer device)
        for ws in sockets[:6]:
            got = sorted([(await ws_recv(ws, timeout=15))["item"]["seq"] for _ in seqs])
            assert got == seqs
        # the sockets are still open and answer
        for ws in sockets:
            await ws.send('{"type":"ping"}')
            assert (await ws_recv(ws))["type"] == "pong"
        for ws in sockets:
            await ws.close()

    run(go(), timeout=240)
    assert samples, "no pool samples"
    for pools in samples:
        for p in pools:
            assert p["pool_size"] == 2 and p["max_overflow"] == 0
            assert p["checked_out"] <= 2 and p["overflow"] == 0, p
    # what health says now: all connections back, nothing waiting
    for p in stack.pools():
        assert p["invalid"] == 0
