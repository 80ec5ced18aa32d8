"""Every program checks all its settings before it binds or connects anything
(issue 16, section 5; docs/config.md): a bad setting is reported by name with exit
code 2 even when the program's ports are taken, never as "address in use" or as a
database that does not answer.

Each case takes the program's port(s) with a plain listening socket first (for
programs that only connect, their brokers' and MariaDB's ports point at it: a peer
that accepts and never answers), then starts the program with one bad setting.
"""
import os
import socket
import subprocess

import pytest

import procs

CTL = os.path.join(procs.BUILD_DIR, "common/ctl/sluicectl")


@pytest.fixture
def taken():
    """A port held by a listening socket without SO_REUSEPORT: binding it fails."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def broker_args(port):
    ep = procs.tcp(port)
    return [procs.binary("broker"), "--frontend", ep, "--backend", ep, "--events-in", ep,
            "--events-out", ep]


def gateway_args(port):
    return [procs.binary("gateway"), "--port", str(port), "--frontend", procs.tcp(port),
            "--events-out", procs.tcp(port)]


def dbworker_args(port):
    # MariaDB and the brokers at the taken port; a short wait bounds the old behaviour
    return [procs.binary("dbworker"), "--db-host", "127.0.0.1", "--db-port", str(port),
            "--backend", procs.tcp(port), "--events-in", procs.tcp(port),
            "--startup-wait-s", "3", "--connect-timeout-s", "1"]


def streamworker_args(port):
    return [procs.binary("streamworker"), "--backend", procs.tcp(port), "--frontend",
            procs.tcp(port), "--journal-dir", ""]


def ctl_args(port):
    return [CTL, "status", "--frontend", procs.tcp(port), "--deadline-ms", "1000"]


CASES = [
    # (program's args for the taken port, bad setting flags, the setting named)
    (broker_args, ["--liveness", "0"], "liveness"),
    (broker_args, ["--heartbeat-ms", "5"], "heartbeat_ms"),
    (broker_args, ["--service-queue-max", "db=lots"], "service_queue_max"),
    (broker_args, ["--drain-ms", "-1"], "drain_ms"),
    (broker_args, ["--curve-cert", "/nonexistent.cert", "--curve-allow", "/tmp"], "curve_cert"),
    (broker_args, ["--events-out", "127.0.0.1:5553"], "events_out"),
    (gateway_args, ["--keepalive-s", "-1"], "keepalive_s"),
    (gateway_args, ["--subscribe-settle-ms", "-5"], "subscribe_settle_ms"),
    (gateway_args, ["--host", "localhost"], "host"),
    (gateway_args, ["--frontend", "localhost:5550"], "frontend"),
    (gateway_args, ["--static-dir", "/nonexistent-static"], "static_dir"),
    (dbworker_args, ["--argon2-memlimit-kib", "1"], "argon2_memlimit_kib"),
    (dbworker_args, ["--max-item-bytes", "0"], "max_item_bytes"),
    (dbworker_args, ["--connect-timeout-s", "0"], "connect_timeout_s"),
    (dbworker_args, ["--events-in", "nowhere"], "events_in"),
    (dbworker_args, ["--service", ""], "service"),
    (streamworker_args, ["--service", ""], "service"),
    (streamworker_args, ["--frontend", "nowhere"], "frontend"),
    (ctl_args, ["--interval-ms", "0"], "interval_ms"),
    (ctl_args, ["--count", "-1"], "count"),
]


@pytest.mark.parametrize("make,bad,name", CASES,
                         ids=["%s-%s" % (c[0].__name__.split("_")[0], c[2]) for c in CASES])
def test_bad_setting_is_named_before_any_socket(taken, make, bad, name):
    args = make(taken) + bad
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("%s did not stop on a bad %s within 30 s" % (args[0], name))
    out = r.stdout + r.stderr
    assert r.returncode == 2, (r.returncode, out)
    assert name in out, out
    assert "in use" not in out and "cannot prepare the database" not in out, out
