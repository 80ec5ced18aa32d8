"""Smoke test of the seed peer (tests/bench/peers/seed_fastapi), the other side of
tests/bench/vs-seed: it starts, serves a create and a list, and in buggy mode each
notify socket holds a pooled connection while in fixed mode none does. No timing.
Skipped when the [bench] packages (deploy/install-deps bench) are not installed."""
import asyncio
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("sqlalchemy")
pytest.importorskip("pymysql")

import requests  # noqa: E402
import websockets  # noqa: E402

import procs  # noqa: E402
from mariadb import MariaDB  # noqa: E402

PEER = os.path.join(procs.SOURCE_DIR, "tests", "bench", "peers", "seed_fastapi")
SCHEMA = os.path.join(procs.SOURCE_DIR, "workers", "db", "migrations", "001_initial.sql")


@pytest.fixture(scope="module")
def db():
    d = MariaDB()
    d.start()
    yield d
    d.stop()


def start_peer(db, mode):
    name = db.create_database("peer_" + mode)
    with open(SCHEMA) as f:
        db.sql(f.read(), database=name)
    port = procs.free_port()
    env = dict(os.environ, SEED_MODE=mode, SLUICE_DB_HOST=db.host, SLUICE_DB_PORT=str(db.port),
               SLUICE_DB_USER=db.user, SLUICE_DB_PASSWORD=db.password, SLUICE_DB_NAME=name)
    p = subprocess.Popen([sys.executable, "-m", "uvicorn", "main:app", "--app-dir", PEER,
                          "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                         env=env)
    url = "http://127.0.0.1:%d" % port
    end = time.monotonic() + 20
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return p, url
        except requests.RequestException:
            pass
        assert time.monotonic() < end and p.poll() is None, "peer did not start"
        time.sleep(0.2)


def checked_out(url):
    pools = requests.get(url + "/health", timeout=10).json()["pools"]
    return {p["worker"]: p["checked_out"] for p in pools}["clipboard"]


async def hold_sockets(url, token, n):
    socks = []
    for _ in range(n):
        ws = await websockets.connect(url.replace("http", "ws") + "/v1/sync/notify?token=" + token)
        assert '"type":"hello"' in await asyncio.wait_for(ws.recv(), 10)
        socks.append(ws)
    return socks


@pytest.mark.parametrize("mode,held", [("buggy", 3), ("fixed", 0)])
def test_peer_serves_and_holds_as_described(db, mode, held):
    p, url = start_peer(db, mode)
    try:
        assert requests.post(url + "/v1/users", json={"username": "ann", "password": "password-1"},
                             timeout=10).status_code == 201
        tok = requests.post(url + "/v1/sessions", json={"username": "ann", "password": "password-1",
                                                        "device_name": "a"}, timeout=10).json()["token"]
        auth = {"Authorization": "Bearer " + tok}
        r = requests.post(url + "/v1/clipboard", json={"content": "hi"}, headers=auth, timeout=10)
        assert r.status_code == 201 and r.json()["seq"] == 1, r.text
        r = requests.get(url + "/v1/clipboard?after=0&limit=20", headers=auth, timeout=10)
        assert [i["content"] for i in r.json()["items"]] == ["hi"]

        async def run():
            socks = await hold_sockets(url, tok, 3)
            await asyncio.sleep(0.5)
            n = await asyncio.get_running_loop().run_in_executor(None, checked_out, url)
            for ws in socks:
                await ws.close()
            return n
        n = asyncio.run(asyncio.wait_for(run(), 30))
        assert n >= held if held else n == 0, "%s: %d connections checked out" % (mode, n)
    finally:
        p.terminate()
        p.wait(15)
