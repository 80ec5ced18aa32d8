"""The client library (sluice/client.h) and the examples of docs/clients.md, against
real brokers: streamed partials, several brokers, a broker that dies, CANCEL, and the
replies the library makes itself."""
import os
import re
import signal
import subprocess
import sys
import time

import zmq

import procs
import smp
from conftest import EXAMPLE, ctl, run

CHECK = os.path.join(procs.BUILD_DIR, "tests/ops/client_check")
DOC = os.path.join(procs.SOURCE_DIR, "docs/clients.md")


def test_c_example_streams_partials(make_broker, make_worker):
    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    out = run([EXAMPLE, b.frontend, "echo", "upper", "quiet please"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == 'services {"status"=>200, "data"=>["echo"]}', lines
    # two partials, in order, then the reply the worker made
    assert lines[1] == 'partial {"data"=>{"n"=>0}}', lines
    assert lines[2] == 'partial {"data"=>{"n"=>1}}', lines
    assert lines[3].startswith("reply ") and '"QUIET PLEASE"' in lines[3], lines
    assert len(lines) == 4


def test_c_example_failure_status(make_broker, make_worker):
    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    out = run([EXAMPLE, b.frontend, "echo", "fail"])
    assert out.returncode == 1 and '"status"=>409' in out.stdout, out.stdout


def python_example(tmp_path):
    text = open(DOC).read()
    code = re.search(r"```python\n(.*?)\n```", text, re.S).group(1)
    path = tmp_path / "client_example.py"
    path.write_text(code + "\n")
    return str(path)


def test_python_example_calls_and_gets_events(make_broker, make_worker, tmp_path):
    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    proc = subprocess.Popen([sys.executable, python_example(tmp_path), b.frontend, "echo",
                             "upper", "abc", b.events_out, "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # publish until the example (a slow joiner, like every SUB) got one and exited
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(b.events_in)
    end = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < end:
        pub.send_multipart([b"user/70/", smp.PROTO, smp.pack({"type": "other.user"})])
        pub.send_multipart([b"user/7/", smp.PROTO, smp.pack({"type": "clipboard.deleted",
                                                              "id": 5})])
        time.sleep(0.05)
    pub.close()
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, (out, err)
    lines = out.splitlines()
    assert lines[0] == "services ['echo']"
    assert lines[1:3] == ["partial {'n': 0}", "partial {'n': 1}"]
    assert lines[3] == "reply {'status': 200, 'data': {'text': 'ABC', 'op': 'upper'}}"
    assert lines[4] == "event user/7/ {'type': 'clipboard.deleted', 'id': 5}"


def replies(broker):
    return broker.status()["broker"]["replies"]


def test_calls_spread_over_brokers(make_broker, make_worker):
    b1, b2 = make_broker(), make_broker()
    make_worker([b1, b2])
    b1.wait_workers("echo", 1)
    b2.wait_workers("echo", 1)
    out = run([CHECK, b1.frontend + "," + b2.frontend, "calls", "20"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["status 200 local 0"] * 20
    # round robin over the brokers whose connection is up: both carried calls
    assert replies(b1) > 0 and replies(b2) > 0
    assert replies(b1) + replies(b2) == 20


def test_a_dead_broker_is_skipped(make_broker, make_worker):
    b1, b2 = make_broker(), make_broker()
    make_worker([b1, b2])
    b2.wait_workers("echo", 1)
    b1.proc.kill()
    out = run([CHECK, b1.frontend + "," + b2.frontend, "calls", "4"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["status 200 local 0"] * 4
    # and through sluicectl, which uses the same library
    r = ctl("call", "echo", "upper", '{"text": "x"}', "--frontend",
            b1.frontend + "," + b2.frontend)
    assert r.returncode == 0 and '"X"' in r.stdout, (r.stdout, r.stderr)


def test_no_broker_gives_a_local_503(make_broker):
    port = procs.free_port()  # nothing listens there
    out = run([CHECK, procs.tcp(port), "hold", "300"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["status 503 local 1"]


def test_broker_that_stops_answering_gives_a_local_504(make_broker, make_worker):
    b = make_broker()
    w = make_worker([b])
    b.wait_workers("echo", 1)
    proc = subprocess.Popen([CHECK, b.frontend, "hold", "500"], stdout=subprocess.PIPE,
                            text=True)
    try:
        end = time.monotonic() + 10
        while not w.held and time.monotonic() < end:
            time.sleep(0.01)
        assert w.held, "the call never reached the worker"
        b.proc.signal(signal.SIGSTOP)  # the broker holds the call and never answers
        out, _ = proc.communicate(timeout=20)
    finally:
        b.proc.signal(signal.SIGCONT)
    assert proc.returncode == 0
    assert out.splitlines() == ["status 504 local 1"]


def test_cancel_reaches_the_broker(make_broker, make_worker):
    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    out = run([CHECK, b.frontend, "cancel"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["status 499 local 0"]
    assert b.status()["broker"]["cancelled"] == 1


def test_bad_endpoint_is_refused():
    out = run([CHECK, "nonsense://x", "calls", "1"])
    assert out.returncode == 2
