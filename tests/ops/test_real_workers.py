"""sluicectl against real DB workers and MariaDB: pools in status, a call to db,
and a graceful drain: the drained worker gets no new work, and then stops cleanly."""
import importlib.util
import json
import os
import uuid

import pytest

import procs
from conftest import ctl

_spec = importlib.util.spec_from_file_location(
    "db_conftest", os.path.join(procs.SOURCE_DIR, "tests/db/conftest.py"))
db_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(db_conftest)
mariadb = db_conftest.mariadb  # the session fixture: one private MariaDB


@pytest.fixture
def stack(mariadb):
    name = "t_" + uuid.uuid4().hex[:12]
    mariadb.create_database(name)
    s = db_conftest.Stack(mariadb, name)
    s.start_broker().wait_log("listening")
    yield s
    s.stop()
    mariadb.sql("DROP DATABASE IF EXISTS `%s`" % name, check=False)


def test_status_call_and_drain_with_db_workers(stack):
    a = stack.start_worker(worker_name="db-a")
    stack.start_worker(worker_name="db-b")
    stack.wait_ready()
    stack.wait_pools(lambda pools: len(pools) == 2)

    r = ctl("status", "--json", "--frontend", stack.frontend)
    assert r.returncode == 0, r.stderr
    (b,) = json.loads(r.stdout)["brokers"]
    assert sorted(p["worker"] for p in b["pools"]) == ["db-a", "db-b"]
    assert all(p["pool_size"] == 2 and p["db_up"] for p in b["pools"])
    assert sorted(w["name"] for w in b["workers"]) == ["db-a", "db-b"]
    r = ctl("status", "--frontend", stack.frontend)
    assert "db-a" in r.stdout and " up" in r.stdout

    r = ctl("call", "db", "db.ping", "{}", "--frontend", stack.frontend)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == 200, r.stdout

    r = ctl("drain", "db-a", "--frontend", stack.frontend)
    assert r.returncode == 0, r.stdout + r.stderr
    before = {w["name"]: w for w in json.loads(ctl("status", "--json", "--frontend",
                                                    stack.frontend).stdout)["brokers"][0]["workers"]}
    assert before["db-a"]["held"] and not before["db-b"]["held"]
    for _ in range(10):
        r = ctl("call", "db", "db.ping", "{}", "--frontend", stack.frontend)
        assert r.returncode == 0
    data = stack.status()
    assert data["services"]["db"]["workers"] == 1
    # drained and idle: it stops at once and cleanly, with nothing lost
    assert a.stop(timeout=20) == 0
    stack.workers.remove(a)
    r = ctl("call", "db", "db.ping", "{}", "--frontend", stack.frontend)
    assert r.returncode == 0
