"""Fixtures for the gateway tests: the whole stack (tests/pylib/system.py), started
once per test session.

    def test_x(stack):
        ann = stack.user()                  # a new user with one device (session)
        phone = stack.device(ann)           # a second device of the same user
        r = stack.post("/v1/clipboard", {"content": "x"}, token=ann.token)

chat_stack is the same with a stream worker, started once per test module.
"""
import tempfile

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


@pytest.fixture(scope="module")
def chat_stack(mariadb):
    """The whole stack with a stream worker (echo provider). Its journal folder is
    fixed, so a stream worker started after one was killed adopts its journal."""
    # 500 streams opened at once from one loopback address are that many requests
    # arriving at once: above address_max_pending (256) some would get 429. That
    # bound is for slow clients and is tested in test_slow_clients.py.
    s = Stack(mariadb, chat=True,
              chat_settings={"journal_dir": tempfile.mkdtemp(prefix="chat-journal-")},
              gateway_settings={"address_max_pending": 1024})
    s.start()
    yield s
    s.stop()
