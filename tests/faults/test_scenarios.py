"""Faults under a steady mixed load, checked from the clients' side (issue 7).

Every scenario runs the whole system (broker, two DB workers with pools of 2, a
stream worker with echo, a gateway) under tests/pylib/load.py's load: clipboard
writes with Idempotency-Key (repeated with the same key after a 503/504, as a
client does), lists, one notify WebSocket per user, chat answers. Then a fault, and
the same checks each time:

- every write answered 2xx is in the database exactly once, and no write is stored
  twice (the keys make retries safe);
- every request was answered within its deadline plus load.MARGIN_S (no hang);
- no 500/502 and no 4xx (the load only sends valid requests); every 503 carries
  Retry-After;
- each notify socket received every acknowledged item of its user (live, or by
  replay after it reconnected with after=);
- the system serves normally again (every request of a 1.5 s window 2xx) within
  RECOVERY_S of the end of the fault: the table's recovery_s;
- chat: every answer acknowledged is stored complete, and no answer is left
  `streaming`.

The table (one row per scenario) is printed to the test output and written to
$SLUICE_BUILD_DIR/faults-report.txt. docs/faults.md explains each column.
"""
import random
import signal
import threading
import time

import pytest
import requests

import load as loadlib
from load import Load

OUTAGE = {}          # test_mariadb_outage's requests during the outage, for the next test
RECOVERY_S = 15.0    # the stated bound: normal service this long after a fault ends
STREAMING_S = 15.0   # no chat answer left `streaming` this long after a fault ends


def run(make_stack, mariadb, database, report, capsys, name, fault, allowed_5xx=True,
        worker_settings=None, before_load=None, refused_after=None, check_ws=True,
        recover=True, stack=None):
    """Starts a stack and the load, runs fault(stack, load) (it returns when the fault
    is over), waits for normal service and checks everything."""
    s = stack or make_stack(worker_settings)
    ld = Load(s, mariadb)
    t_fault = time.monotonic()
    if before_load is not None:
        before_load(s, ld)
    ld.start()
    if before_load is None:
        assert ld.wait_normal(ld.t0, timeout_s=20) is not None, "no normal service before the fault"
        t_fault = time.monotonic()
    ctx = {}
    fault(s, ld, ctx)
    t_end = time.monotonic()
    recovered = ld.wait_normal(t_end, timeout_s=RECOVERY_S) if recover else None
    ld.stop(final_write=check_ws, ws_wait_s=10.0 if check_ws else 0.5)
    row, problems = ld.check(name, database, t_fault, t_end, recovered, allowed_5xx=allowed_5xx,
                             check_ws=check_ws)
    if refused_after is not None:
        # after the gateway closed its listener, a new connection is refused: not a
        # failure (a request already accepted that was cut off still is)
        problems = [p for p in problems if "connection failed" not in p]
        cut = [r for r in ld.results if r.status == -1 and r.start < ctx[refused_after]]
        # at the end of its drain the gateway answers what is still pending 503, so
        # a request it had accepted is never cut off without an answer
        problems += ["%s cut off mid-request: %s" % (r.kind, r.note) for r in cut]
    if not check_ws:
        row["ws_missing"] = None
    elif row["ws_missing"]:
        problems.append("%d acknowledged items never reached the user's notify socket"
                        % row["ws_missing"])
    if recover and recovered is None:
        problems.append("not serving normally within %.0fs after the fault" % RECOVERY_S)
    problems += check_chat(ld, mariadb, database, ctx.get("chat_streaming_check", True),
                           ctx.get("chat_streaming_wait_s", STREAMING_S))
    report.append(row)
    with capsys.disabled():
        print("\n" + loadlib.table([row]))
        for k, v in sorted(ctx.items()):
            if isinstance(v, (int, float, str)) and not k.startswith("t_"):
                print("  %s: %s" % (k, v))
        for p in problems[:20]:
            print("  PROBLEM: " + p)
    assert not problems, "\n".join(problems[:20])
    return s, ld, row, ctx


def check_chat(ld, mariadb, database, streaming_check, wait_s=STREAMING_S):
    problems = []
    ids = [int(i) for u in ld.users for i in u.chats_acked]
    if ids:
        rows = mariadb.sql("SELECT status, COUNT(*) FROM messages WHERE id IN (%s) GROUP BY status"
                           % ",".join(str(i) for i in ids), database)
        got = {r[0]: int(r[1]) for r in rows}
        if got != {"complete": len(ids)}:
            problems.append("acknowledged chat answers not all stored complete: %r" % got)
    if streaming_check:
        end = time.monotonic() + wait_s
        while True:
            n = int(mariadb.scalar("SELECT COUNT(*) FROM messages WHERE status = 'streaming'",
                                   database))
            if n == 0:
                break
            if time.monotonic() > end:
                problems.append("%d chat answers still `streaming` %.0fs after the fault"
                                % (n, wait_s))
                break
            time.sleep(0.2)
    return problems


# ---- 1. kill -9 of a DB worker, and of the stream worker -----------------------------

def test_kill_dbworker(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        victim = s.live_workers()[0]
        victim.kill()
        # the broker declares it dead after 3 silent heartbeats; what it held is
        # answered 503 worker_lost (or resent when idempotent)
        time.sleep(1.0)
        s.start_dbworker()
    run(make_stack, mariadb, database, report, capsys, "1a kill -9 dbworker", fault)


def test_kill_streamworker(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        # kill it while it is streaming an answer: one of our own, long enough (1,500
        # words at the stream worker's 5 ms a word) to be caught under ASan too,
        # where the load's short answers may all be over between two looks
        dev = s.user()
        conv = s.post("/v1/chat/conversations", {}, token=dev.token).json()["id"]
        words = " ".join("w%d" % i for i in range(1500))

        def long_answer():
            try:
                requests.post(s.url + "/v1/chat/conversations/%s/messages" % conv,
                              json={"content": words, "stream": True}, headers=dev.auth,
                              timeout=60)
            except requests.RequestException:
                pass  # cut by the kill: its end is check_chat's business

        threading.Thread(target=long_answer, daemon=True).start()
        end = time.monotonic() + 20
        while time.monotonic() < end and "streaming" not in str(
                mariadb.sql("SELECT status FROM messages WHERE status='streaming'", database)):
            time.sleep(0.02)
        assert "streaming" in str(mariadb.sql(
            "SELECT status FROM messages WHERE status='streaming'", database)), \
            "no answer was streaming when the stream worker was to be killed"
        s.streamworker.kill()
        time.sleep(0.5)
        s.start_streamworker()  # same journal dir: it adopts the dead one's answers
    run(make_stack, mariadb, database, report, capsys, "1b kill -9 streamworker", fault)


# ---- 2. kill -9 of the broker, restart on the same endpoints --------------------------

def test_kill_broker(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        s.broker.kill()
        time.sleep(1.0)
        s.start_broker()
        # begins and finishes in flight at the dead broker are answered 503
        # broker_lost by the stream worker's client as its connection drops, and
        # retried with their keys (docs/chat.md): the default STREAMING_S applies
    run(make_stack, mariadb, database, report, capsys, "2 kill -9 broker", fault)


# ---- 3. MariaDB stopped for 5 s -------------------------------------------------------

def test_mariadb_outage(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        mariadb.stop()
        ctx["t_down"] = time.monotonic()
        try:
            time.sleep(5.0)
        finally:
            mariadb.start()
        ctx["t_up"] = time.monotonic()
    s, ld, row, ctx = run(make_stack, mariadb, database, report, capsys, "3 MariaDB down 5s",
                          fault)
    # while it was down clients got answers, not waits (deadline checked for every
    # request; Retry-After for every 503)
    during = [r for r in ld.results if ctx["t_down"] <= r.start <= ctx["t_up"]]
    assert any(r.status >= 500 for r in during), "no request failed while MariaDB was down"
    OUTAGE["during"] = [(r.kind, r.status, r.latency) for r in during if r.kind != "chat"]
    OUTAGE["deadline_s"] = ld.deadline_s


def test_mariadb_outage_answers_fast():
    """Issue 7, scenario 3: during the outage, failures are 503s answered before
    the request's deadline, not waits until it. Uses the requests of
    test_mariadb_outage. Before the fix (broker/router.c s_service_db_down,
    workers/db/pool.c s_fail_waiters) every one was a 504 after the full deadline:
    a DB worker that lost MariaDB drops its credit to 0, so the broker queued.
    What tells the two apart is the status (a wait ends in 504 at the deadline)
    and that the answer came before the deadline; no tighter time is asserted, so
    a slow machine (sanitizers, two busy cores) does not fail it. The 503s are
    typically answered in about 0.1 s: see docs/faults.md's table."""
    if "during" not in OUTAGE:
        pytest.fail("test_mariadb_outage did not run or failed before measuring")
    failed = [(k, st, lat) for k, st, lat in OUTAGE["during"] if st >= 500]
    assert failed, "nothing failed during the outage"
    deadline_s = OUTAGE["deadline_s"]
    slow = [(k, st, round(lat, 2)) for k, st, lat in failed if st != 503 or lat >= deadline_s]
    assert not slow, "answers during the outage that were not 503s before the %.0f s " \
        "deadline: %s" % (deadline_s, slow[:10])


# ---- 4. wait_timeout 2 s, idle 5 s, then load ------------------------------------------

def test_wait_timeout_idle(make_stack, mariadb, database, report, capsys):
    old = mariadb.scalar("SELECT @@GLOBAL.wait_timeout")
    mariadb.set_global("wait_timeout", 2)
    try:
        s = make_stack()  # its connections are opened with wait_timeout 2

        def idle(s, ld):
            # the server closes every pooled connection while nothing happens
            time.sleep(5.0)

        def fault(s, ld, ctx):
            time.sleep(4.0)  # the load runs on the connections the server cut
            pools = s.health()[1]["pools"]
            ctx["connections_found_dead"] = sum(p["invalid"] for p in pools)
        s, ld, row, ctx = run(make_stack, mariadb, database, report, capsys,
                              "4 wait_timeout 2s, idle 5s", fault, allowed_5xx=False,
                              before_load=idle, stack=s)
        # the fault did happen: the workers found their connections cut by the server
        assert ctx["connections_found_dead"] >= 1
    finally:
        mariadb.set_global("wait_timeout", old)


# ---- 5. KILL CONNECTION of random pooled connections -----------------------------------

def test_kill_connections(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        killed = 0
        rnd = random.Random(7)
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            ids = mariadb.connection_ids(database=database)
            if ids:
                mariadb.kill(rnd.choice(ids))
                killed += 1
            time.sleep(0.3)
        ctx["connections_killed"] = killed
    s, ld, row, ctx = run(make_stack, mariadb, database, report, capsys, "5 KILL CONNECTION",
                          fault)
    assert ctx["connections_killed"] >= 5


# ---- 6. a slow statement: one user's row locked for 6 s --------------------------------

def test_row_lock_held(make_stack, mariadb, database, report, capsys):
    """One user's row is locked past the deadline: that user's writes wait (504 at
    the deadline, then the retry with the same key succeeds); other users never
    notice."""
    seen = {}

    def fault(s, ld, ctx):
        victim = ld.users[0]
        cli = mariadb.cli(database)
        try:
            cli.run("BEGIN; SELECT id FROM users WHERE id = %d FOR UPDATE;"
                    % int(victim.writer.user_id))
            t0 = time.monotonic()
            time.sleep(6.0)
            t1 = time.monotonic()
        finally:
            cli.run("COMMIT;")
            cli.close()
        seen["others"] = [r for r in ld.results if r.user != victim.tag and t0 <= r.start and
                          r.end <= t1]
        # the victim's requests that were open while the lock was held (its write
        # may have started just before the lock and be answered during it)
        seen["victim"] = [r for r in ld.results if r.user == victim.tag and
                          r.end >= t0 and r.start <= t1]
    run(make_stack, mariadb, database, report, capsys, "6 row lock held 6s", fault)
    # the victim's writes waited on the lock and got their 504 at the deadline
    assert any(r.status == 504 for r in seen["victim"]), [
        (r.kind, r.status, r.note) for r in seen["victim"]]
    assert len(seen["others"]) >= 10, "too little load on the other users to show anything"
    assert all(200 <= r.status < 300 for r in seen["others"]), [
        (r.kind, r.status, r.note) for r in seen["others"] if not 200 <= r.status < 300]


# ---- 7. SIGTERM of every process; rolling restart of the DB workers --------------------

def test_sigterm_everything(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        ps = [s.gateway.proc, s.streamworker, s.broker] + s.live_workers()
        ctx["t_sigterm"] = time.monotonic()
        for p in ps:
            p.signal(signal.SIGTERM)
        rcs = {}
        for p in ps:
            try:
                rcs["%s-%d" % (p.name, p.pid)] = p.popen.wait(timeout=25)
            except Exception:
                rcs["%s-%d" % (p.name, p.pid)] = "did not exit"
        ctx["exit_codes"] = " ".join("%s=%s" % kv for kv in sorted(rcs.items()))
        bad = {k: v for k, v in rcs.items() if v != 0}
        assert not bad, "processes did not exit 0 after SIGTERM: %r" % bad
        # answers the stream worker could not finish (the broker was gone) are in its
        # journal: the next stream worker finishes them (checked by check_chat)
        s.start_broker()
        s.start_dbworker()
        s.start_streamworker()
    run(make_stack, mariadb, database, report, capsys, "7a SIGTERM all", fault,
        refused_after="t_sigterm", check_ws=False, recover=False)


def test_rolling_restart_dbworkers(make_stack, mariadb, database, report, capsys):
    def fault(s, ld, ctx):
        for old in list(s.live_workers()):
            s.start_dbworker()
            s.wait_healthy(pools=3)
            old.stop(timeout=20)  # asserts exit 0
            s.wait_healthy(pools=2)
    run(make_stack, mariadb, database, report, capsys, "7b rolling restart dbworkers", fault,
        allowed_5xx=False)
