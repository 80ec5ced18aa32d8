"""CurveZMQ (issue 7, docs/security.md): with curve_cert set, the broker is a CURVE
server on all four sockets and lets in only the public keys in its curve_allow
folder. Real processes, keys made by `sluicectl keygen`:

- a DB worker, a stream worker and a gateway with listed keys serve: a user is
  created over HTTP, a clipboard item written, a chat answer streamed, and the
  item's event reaches a listed subscriber;
- a client with an unlisted key, and one with no CURVE at all, get nothing (no
  reply, no event); a DB worker with an unlisted key never registers;
- sluicectl works with its keys and fails without them;
- a program given half a configuration refuses to start, saying why.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests
import zmq

import procs
import smp
from system import FAST_HASH, flags

CTL = os.path.join(procs.BUILD_DIR, "common/ctl/sluicectl")
KINDS = ("broker", "dbworker", "streamworker", "gateway", "client", "intruder")


@pytest.fixture
def keys():
    d = tempfile.mkdtemp(prefix="curve-")
    paths = {}
    for kind in KINDS:
        paths[kind] = os.path.join(d, kind + ".cert")
        r = subprocess.run([CTL, "keygen", paths[kind]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    allow = os.path.join(d, "allow")
    os.mkdir(allow)
    for kind in ("dbworker", "streamworker", "gateway", "client"):  # not the intruder
        shutil.copy(paths[kind], allow)
    paths["allow"] = allow
    yield paths
    shutil.rmtree(d, ignore_errors=True)


def client_settings(keys, kind):
    return {"curve_cert": keys[kind], "curve_broker_cert": keys["broker"]}


def answered(client, service, op, timeout):
    """The reply to one request from client, or None when none came. A DEALER whose
    handshake the broker refused has no connection to queue on: its send would
    block, so it is made non-blocking, and refused (zmq.Again) counts as no reply."""
    rid = b"probe-" + op.encode()
    try:
        client.sock.send_multipart([b"", smp.PROTO, smp.REQUEST, service.encode(), rid,
                                    smp.u32(1000), smp.pack({"op": op, "args": {}})],
                                   flags=zmq.NOBLOCK)
    except zmq.Again:
        return None
    try:
        return client.wait_reply(rid, timeout=timeout)
    except TimeoutError:
        return None


def no_reply(client, timeout=2.0):
    """True when a db.ping from client gets no answer."""
    return answered(client, "db", "db.ping", timeout) is None


def test_curve_only_listed_keys_get_in(mariadb, database, keys):
    ports = [procs.free_port() for _ in range(4)]
    frontend, backend, events_in, events_out = map(procs.tcp, ports)
    started = []

    def start(args, name, ready):
        p = procs.Proc(args, name=name)
        started.append(p)
        p.wait_log(ready, timeout=40)
        return p

    try:
        broker = start([procs.binary("broker"), "--frontend", frontend, "--backend", backend,
                        "--events-in", events_in, "--events-out", events_out,
                        "--curve-cert", keys["broker"], "--curve-allow", keys["allow"]],
                       "broker", "listening")
        assert "CurveZMQ on" in broker.log()
        db = dict(mariadb.settings(database))
        db.update({"backend": backend, "events_in": events_in, "pool_size": 2,
                   "max_overflow": 0, "startup_wait_s": 30}, **FAST_HASH)
        start([procs.binary("dbworker")] + flags(dict(db, **client_settings(keys, "dbworker"))),
              "dbworker", "serving")
        start([procs.binary("streamworker")] + flags(dict(
            {"backend": backend, "frontend": frontend, "journal_dir": "",
             "token_delay_ms": 5}, **client_settings(keys, "streamworker"))),
              "streamworker", "serving")
        port = procs.free_port()
        start([procs.binary("gateway")] + flags(dict(
            {"host": "127.0.0.1", "port": port, "frontend": frontend,
             "events_out": events_out}, **client_settings(keys, "gateway"))),
              "gateway", "listening")
        url = "http://127.0.0.1:%d" % port

        listed = smp.Client(frontend, curve=(keys["client"], keys["broker"]))
        intruder = smp.Client(frontend, curve=(keys["intruder"], keys["broker"]))
        plain = smp.Client(frontend)
        try:
            end = time.monotonic() + 20
            while listed.request("db", {"op": "db.ping", "args": {}},
                                 deadline_ms=1000)["status"] != 200:
                assert time.monotonic() < end, "the listed client never got db.ping 200"
                time.sleep(0.1)
            assert no_reply(intruder), "a client with an unlisted key got a reply"
            assert no_reply(plain), "a client without CURVE got a reply"

            # a DB worker with an unlisted key never becomes a worker of the broker
            bad = start([procs.binary("dbworker")] + flags(
                dict(db, curve_cert=keys["intruder"], curve_broker_cert=keys["broker"],
                     worker_name="intruder-db")), "dbworker", "serving")
            time.sleep(3.5)  # heartbeats would have registered it by now
            status = listed.request("sys", {"op": "status", "args": {}})["data"]
            assert status["services"]["db"]["workers"] == 1, status["services"]
            assert bad.alive()

            # the whole path through the gateway, events included
            sub_ok = zmq.Context.instance().socket(zmq.SUB)
            sub_bad = zmq.Context.instance().socket(zmq.SUB)
            for sock, kind in ((sub_ok, "client"), (sub_bad, "intruder")):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SUBSCRIBE, b"user/")
                smp.curve_client(sock, keys[kind], keys["broker"])
                sock.connect(events_out)
            time.sleep(0.5)  # subscriptions reach the broker
            r = requests.post(url + "/v1/users",
                              json={"username": "curve_ann", "password": "correct-horse"},
                              timeout=10)
            assert r.status_code == 201, r.text
            r = requests.post(url + "/v1/sessions", json={
                "username": "curve_ann", "password": "correct-horse", "device_name": "t"},
                timeout=10)
            assert r.status_code == 201, r.text
            auth = {"Authorization": "Bearer " + r.json()["token"]}
            r = requests.post(url + "/v1/clipboard", json={"content": "sealed"}, headers=auth,
                              timeout=10)
            assert r.status_code == 201, r.text
            assert sub_ok.poll(5000), "the listed subscriber got no clipboard event"
            frames = sub_ok.recv_multipart()  # topic, SMP1, EVENT ..., body
            assert frames[0].startswith(b"user/") and b"sealed" in frames[-1], frames
            assert not sub_bad.poll(500), "the unlisted subscriber got an event"
            conv = requests.post(url + "/v1/chat/conversations", json={}, headers=auth,
                                 timeout=10).json()
            r = requests.post(url + "/v1/chat/conversations/%s/messages" % conv["id"],
                              json={"content": "curve words back", "stream": False},
                              headers=auth, timeout=20)
            assert r.status_code == 201, r.text
            assert r.json()["assistant_message"]["content"] == "curve words back"
            sub_ok.close()
            sub_bad.close()
        finally:
            for c in (listed, intruder, plain):
                c.close()

        # sluicectl: with its keys it sees the broker; without, no broker answers
        r = subprocess.run([CTL, "status", "--json", "--frontend", frontend, "--curve-cert",
                            keys["client"], "--curve-broker-cert", keys["broker"]],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([CTL, "status", "--frontend", frontend, "--deadline-ms", "1000"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
    finally:
        for p in reversed(started):
            if p.alive():
                p.stop(timeout=20, check=False)


def test_half_a_curve_configuration_is_refused(keys):
    frontend = procs.tcp(procs.free_port())
    public_only = os.path.join(keys["allow"], "client.cert")  # no client.cert_secret there
    cases = [
        ([CTL, "status", "--frontend", frontend, "--curve-cert", public_only,
          "--curve-broker-cert", keys["broker"]], "no secret key"),
        ([procs.binary("broker"), "--frontend", frontend, "--curve-cert", keys["broker"]],
         "curve_allow"),
        ([procs.binary("broker"), "--frontend", frontend, "--curve-cert", "/nonexistent.cert",
          "--curve-allow", keys["allow"]], "cannot read the certificate"),
        ([procs.binary("gateway"), "--port", str(procs.free_port()), "--curve-cert",
          keys["gateway"]], "curve_broker_cert"),
        ([procs.binary("streamworker"), "--curve-broker-cert", keys["broker"]], "curve_cert"),
        ([procs.binary("dbworker"), "--curve-cert", keys["broker"] + "_secret.missing",
          "--curve-broker-cert", keys["broker"]], "cannot read the certificate"),
    ]
    for args, word in cases:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, args
        assert word in r.stdout + r.stderr, (args, r.stdout, r.stderr)


def sys_answers(frontend, keys, kind, timeout=3.0):
    """True when a new client with kind's key gets the broker's own `sys status`
    answer (the broker answers it itself: no worker needed)."""
    c = smp.Client(frontend, curve=(keys[kind], keys["broker"]))
    try:
        reply = answered(c, "sys", "status", timeout)
        return reply is not None and reply["status"] == 200
    finally:
        c.close()


def write_config(path, settings):
    with open(path + ".new", "w") as f:
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    os.replace(path + ".new", path)


def reload(proc, seen):
    """SIGHUP, then the reload line it logs (the seen-th + 1)."""
    proc.signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        lines = [l for l in proc.log().splitlines() if "reload (SIGHUP)" in l and
                 ("changed" in l or "nothing to change" in l or "rejected" in l)]
        if len(lines) > seen:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError("no reload line after SIGHUP:\n" + proc.log()[-3000:])


def test_curve_allow_is_reloaded_on_sighup(keys):
    """The broker's allow list is read again on SIGHUP (issue 16, section 5): a key
    removed from the folder is refused from the next handshake on, a key added is let
    in, curve_allow may name another folder, a folder that is not there rejects the
    reload (the old list stays), and a new key pair of the broker's own is not taken
    up: one line says a restart is needed, and the listed keys still get in."""
    frontend = procs.tcp(procs.free_port())
    conf = os.path.join(os.path.dirname(keys["broker"]), "broker.conf")
    settings = {"frontend": frontend, "backend": procs.tcp(procs.free_port()),
                "events_in": procs.tcp(procs.free_port()),
                "events_out": procs.tcp(procs.free_port()),
                "curve_cert": keys["broker"], "curve_allow": keys["allow"]}
    write_config(conf, settings)
    broker = procs.Proc([procs.binary("broker"), "--config", conf], name="broker")
    try:
        broker.wait_log("listening")
        assert sys_answers(frontend, keys, "client")
        assert not sys_answers(frontend, keys, "intruder", timeout=1.5)

        # removed from the folder: refused after the reload
        os.remove(os.path.join(keys["allow"], "client.cert"))
        line = reload(broker, 0)
        assert "rejected" not in line, line
        assert "peer key(s) allowed" in broker.log()
        assert not sys_answers(frontend, keys, "client", timeout=1.5), \
            "a key removed from curve_allow still got in after SIGHUP"

        # added: let in after the reload
        shutil.copy(keys["intruder"], keys["allow"])
        reload(broker, 1)
        assert sys_answers(frontend, keys, "intruder"), "a key added to curve_allow was refused"

        # another folder: only what it holds
        other = os.path.join(os.path.dirname(keys["broker"]), "allow2")
        os.mkdir(other)
        shutil.copy(keys["client"], other)
        write_config(conf, dict(settings, curve_allow=other))
        line = reload(broker, 2)
        assert "curve_allow" in line and "rejected" not in line, line
        assert sys_answers(frontend, keys, "client")
        assert not sys_answers(frontend, keys, "intruder", timeout=1.5)

        # a folder that is not there: rejected whole, the list in use stays
        write_config(conf, dict(settings, curve_allow=other + "-missing"))
        line = reload(broker, 3)
        assert "rejected" in line and "curve_allow" in line, line
        assert sys_answers(frontend, keys, "client")

        # the broker's own pair replaced in place: not taken up, said so
        write_config(conf, dict(settings, curve_allow=other))
        fresh = os.path.join(os.path.dirname(keys["broker"]), "fresh.cert")
        r = subprocess.run([CTL, "keygen", fresh], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        old = dict(keys, broker=os.path.join(os.path.dirname(keys["broker"]), "broker-old.cert"))
        shutil.copy(keys["broker"], old["broker"])
        shutil.copy(fresh, keys["broker"] + ".new")
        os.replace(keys["broker"] + ".new", keys["broker"])
        shutil.copy(fresh + "_secret", keys["broker"] + "_secret.new")
        os.replace(keys["broker"] + "_secret.new", keys["broker"] + "_secret")
        reload(broker, 4)
        end = time.monotonic() + 5
        while "keys are not reloaded" not in broker.log():
            assert time.monotonic() < end, broker.log()[-2000:]
            time.sleep(0.05)
        assert "needs a restart" in broker.log() or "until a restart" in broker.log()
        # clients that still hold the old broker key (they read it at start) get in
        assert sys_answers(frontend, old, "client")
        assert broker.alive()
    finally:
        broker.stop(timeout=20)
