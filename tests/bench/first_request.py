"""The latency a token check adds to the first requests of a token new to a gateway
(issue 16, section 5: a check that may have raced a revoke is confirmed once the
user's event subscription has settled; docs/config.md, subscribe_settle_ms).

    SLUICE_BUILD_DIR=build/test SLUICE_SOURCE_DIR=. PYTHONPATH=tests/pylib \
        /usr/bin/python3 tests/bench/first_request.py .

Starts a private MariaDB and the stack, makes 30 users, and times each one's first
GET /v1/devices and the one right after it.
"""
import statistics
import sys
import time

import requests

sys.path.insert(0, sys.argv[1] + "/tests/pylib")
from mariadb import MariaDB
from system import Stack


def timed_get(url, auth):
    t = time.monotonic()
    r = requests.get(url + "/v1/devices", headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    return time.monotonic() - t


db = MariaDB()
db.start()
try:
    s = Stack(db, gateway_settings={"subscribe_settle_ms": 50})
    s.start()
    try:
        first, second = [], []
        for i in range(30):
            d = s.user()
            first.append(timed_get(s.url, d.auth))
            second.append(timed_get(s.url, d.auth))
        print("first request of a new token: median %.1f ms, max %.1f ms; the next one: "
              "median %.1f ms" % (statistics.median(first) * 1000, max(first) * 1000,
                                  statistics.median(second) * 1000))
    finally:
        s.stop()
finally:
    db.destroy()
