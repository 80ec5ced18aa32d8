"""Fixtures for the gateway tests: the whole stack (tests/pylib/system.py), started
once per test session.

    def test_x(stack):
        ann = stack.user()                  # a new user with one device (session)
        phone = stack.device(ann)           # a second device of the same user
        r = stack.post("/v1/clipboard", {"content": "x"}, token=ann.token)
"""
import pytest

from mariadb import MariaDB
from system import Stack


@pytest.fixture(scope="session")
def mariadb():
    db = MariaDB()
    db.start()
    yield db
    db.destroy()


@pytest.fixture(scope="session")
def stack(mariadb):
    s = Stack(mariadb)
    s.start()
    yield s
    s.stop()
