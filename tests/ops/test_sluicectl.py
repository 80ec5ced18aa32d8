"""sluicectl against real brokers: status (human, --json, --watch), call with
partials and exit codes, tail, keygen, drain."""
import json
import os
import signal
import stat
import subprocess
import time

import zmq

import procs
import smp
from conftest import CTL, ctl


def test_help_version_and_usage_errors():
    r = ctl("--help")
    assert r.returncode == 0
    for word in ("status", "call SERVICE OP", "tail", "keygen PATH", "drain WORKER",
                 "Exit codes", "--frontend", "--json"):
        assert word in r.stdout, word
    r = ctl("--version")
    assert r.returncode == 0 and r.stdout.startswith("sluicectl ")
    assert ctl().returncode == 2
    assert ctl("reboot").returncode == 2
    assert ctl("call", "echo").returncode == 2
    r = ctl("call", "echo", "op", "{not json")
    assert r.returncode == 2 and "JSON" in r.stderr
    assert ctl("status", "--no-such-flag").returncode == 2
    assert ctl("tail", "abc").returncode == 2


def test_status_human_and_json(make_broker, make_worker):
    b = make_broker()
    make_worker([b], name="echo-7")
    b.wait_workers("echo", 1)
    r = ctl("status", "--frontend", b.frontend)
    assert r.returncode == 0, r.stderr
    assert "broker " + b.frontend in r.stdout
    assert "echo" in r.stdout and "echo-7" in r.stdout and "ready" in r.stdout
    r = ctl("status", "--json", "--frontend", b.frontend)
    assert r.returncode == 0
    data = json.loads(r.stdout)
    (one,) = data["brokers"]
    assert one["endpoint"] == b.frontend
    assert one["services"]["echo"]["workers"] == 1
    assert one["services"]["echo"]["capacity"] == 10
    (w,) = one["workers"]
    assert w["name"] == "echo-7" and w["service"] == "echo" and not w["draining"]
    assert isinstance(one["broker"]["pid"], int)


def test_status_with_a_broker_down(make_broker):
    b = make_broker()
    down = procs.tcp(procs.free_port())
    r = ctl("status", "--json", "--deadline-ms", "300", "--frontend", b.frontend + "," + down)
    assert r.returncode == 3
    up, gone = json.loads(r.stdout)["brokers"]
    assert "services" in up and gone["error"]["code"] == "unavailable"


def test_status_watch_refreshes_until_interrupted(make_broker):
    b = make_broker()
    p = subprocess.Popen([CTL, "status", "--watch", "--interval-ms", "50", "--frontend",
                          b.frontend], stdout=subprocess.PIPE)
    out = b""
    end = time.monotonic() + 10
    while out.count(b"\033[H\033[2J") < 3 and time.monotonic() < end:
        out += os.read(p.stdout.fileno(), 65536)  # each refresh is flushed
    assert out.count(b"\033[H\033[2J") >= 3 and b"requests" in out
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0


def test_call_streams_partials_and_sets_exit_code(make_broker, make_worker):
    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    r = ctl("call", "echo", "upper", '{"text": "hi"}', "--frontend", b.frontend)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [json.loads(x) for x in lines[:2]] == [{"data": {"n": 0}}, {"data": {"n": 1}}]
    assert json.loads("\n".join(lines[2:])) == {"status": 200,
                                                "data": {"text": "HI", "op": "upper"}}
    r = ctl("call", "echo", "fail", "--frontend", b.frontend)
    assert r.returncode == 4 and json.loads(r.stdout)["status"] == 409
    r = ctl("call", "nosuch", "x", "--frontend", b.frontend)
    assert r.returncode == 5 and json.loads(r.stdout)["error"]["code"] == "unavailable"
    r = ctl("call", "echo", "x", "--deadline-ms", "200", "--frontend",
            procs.tcp(procs.free_port()))
    assert r.returncode == 3 and json.loads(r.stdout)["status"] == 503


def test_call_interrupted_sends_cancel(make_broker, make_worker):
    b = make_broker()
    w = make_worker([b])
    b.wait_workers("echo", 1)
    p = subprocess.Popen([CTL, "call", "echo", "hold", "--deadline-ms", "30000", "--frontend",
                          b.frontend], stdout=subprocess.PIPE, text=True)
    end = time.monotonic() + 10
    while not w.held and time.monotonic() < end:
        time.sleep(0.01)
    assert w.held
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 4
    assert json.loads(out)["error"]["code"] == "cancelled"
    end = time.monotonic() + 5
    while not w.cancels and time.monotonic() < end:
        time.sleep(0.01)
    assert w.cancels, "the worker was never told"


def test_tail_prints_one_users_events(make_broker):
    b = make_broker()
    p = subprocess.Popen([CTL, "tail", "7", "--count", "2", "--events-out", b.events_out,
                          "--frontend", b.frontend], stdout=subprocess.PIPE, text=True)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(b.events_in)
    n = 0
    end = time.monotonic() + 20
    while p.poll() is None and time.monotonic() < end:
        pub.send_multipart([b"user/70/", smp.PROTO, smp.pack({"type": "not.mine"})])
        pub.send_multipart([b"user/7/", smp.PROTO, smp.pack({"type": "clipboard.deleted",
                                                              "id": n})])
        n += 1
        time.sleep(0.05)
    pub.close()
    out, _ = p.communicate(timeout=5)
    assert p.returncode == 0
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["topic"] == "user/7/" and line["event"]["type"] == "clipboard.deleted"
    assert lines[1]["event"]["id"] == lines[0]["event"]["id"] + 1


def test_keygen_writes_a_key_pair_once(tmp_path):
    path = tmp_path / "broker.key"
    r = ctl("keygen", str(path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["public_key"]) == 40  # Z85 of 32 bytes
    public = path.read_text()
    secret = (tmp_path / "broker.key_secret").read_text()
    assert out["public_key"] in public and "secret-key" not in public
    assert out["public_key"] in secret and "secret-key" in secret
    assert stat.S_IMODE(os.stat(str(path) + "_secret").st_mode) & 0o077 == 0
    r = ctl("keygen", str(path))
    assert r.returncode == 1 and "not overwritten" in r.stderr
    assert path.read_text() == public


def test_drain_through_every_broker(make_broker, make_worker):
    b1, b2 = make_broker(), make_broker()
    make_worker([b1, b2], name="echo-a")
    make_worker([b1, b2], name="echo-b")
    for b in (b1, b2):
        b.wait_status(lambda d: d["services"].get("echo", {"workers": 0})["workers"] == 2)
    both = b1.frontend + "," + b2.frontend
    r = ctl("drain", "echo-a", "--json", "--frontend", both)
    assert r.returncode == 0, (r.stdout, r.stderr)
    for entry in json.loads(r.stdout)["brokers"]:
        assert entry["reply"]["status"] == 200 and len(entry["reply"]["data"]["drained"]) == 1
    for b in (b1, b2):
        assert b.status()["services"]["echo"]["workers"] == 1
    r = ctl("status", "--frontend", b1.frontend)
    assert "drained" in r.stdout
    # echo-b takes every call now
    r = ctl("call", "echo", "upper", "--frontend", both)
    assert r.returncode == 0
    r = ctl("drain", "nobody", "--frontend", both)
    assert r.returncode == 4 and "no worker with that name" in r.stdout
    r = ctl("drain", "echo-b", "--deadline-ms", "200", "--frontend",
            procs.tcp(procs.free_port()))
    assert r.returncode == 3


def test_tail_with_two_brokers_prints_each_event_once(make_broker):
    b1, b2 = make_broker(), make_broker()
    p = subprocess.Popen([CTL, "tail", "--count", "4", "--events-out",
                          b1.events_out + "," + b2.events_out, "--frontend", b1.frontend],
                         stdout=subprocess.PIPE, text=True)
    pub = zmq.Context.instance().socket(zmq.PUB)  # a worker publishes to every broker
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(b1.events_in)
    pub.connect(b2.events_in)
    n = 0
    end = time.monotonic() + 20
    while p.poll() is None and time.monotonic() < end:
        pub.send_multipart([b"user/3/", smp.PROTO, smp.pack({"type": "clipboard.deleted",
                                                              "id": n})])
        n += 1
        time.sleep(0.05)
    pub.close()
    out, _ = p.communicate(timeout=5)
    assert p.returncode == 0
    ids = [json.loads(x)["event"]["id"] for x in out.splitlines()]
    assert len(ids) == 4 and ids == sorted(set(ids)), ids  # no copy from the other broker
