"""Fixtures of the fault suite: one private MariaDB for the session, a fresh
database and a fresh whole system (tests/pylib/faultstack.py) per scenario, and the
report table every scenario adds its row to (printed at the end of the session and
written to $SLUICE_BUILD_DIR/faults-report.txt)."""
import os
import uuid

import pytest

import load as loadlib
import procs
from faultstack import FaultStack
from mariadb import MariaDB

ROWS = []


@pytest.fixture(scope="session")
def mariadb():
    db = MariaDB()
    db.start()
    yield db
    db.destroy()


@pytest.fixture
def database(mariadb):
    name = "f_" + uuid.uuid4().hex[:12]
    mariadb.create_database(name)
    yield name
    if mariadb.running():
        mariadb.sql("DROP DATABASE IF EXISTS `%s`" % name, check=False)


@pytest.fixture
def make_stack(mariadb, database):
    """make_stack(**worker_settings) -> a started FaultStack; stopped (clean exits
    asserted) after the test."""
    made = []

    def make(worker_settings=None, gateway_settings=None, start=True, log_level=None):
        s = FaultStack(mariadb, database, worker_settings, gateway_settings, log_level)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="session")
def report():
    yield ROWS
    text = loadlib.table(ROWS)
    path = os.path.join(procs.BUILD_DIR, "faults-report.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
