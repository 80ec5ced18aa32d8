"""The web client (gateway/static) in a real browser against the whole system.

Debian's chromium, driven by npm playwright-core from tests/browser/web_client.mjs,
runs against a real broker, two DB workers, a gateway and a stream worker (echo
provider) on a private MariaDB. The node script does the checking; this file starts
the system, runs it and reports every step it printed. Screenshots of every screen
(desktop and phone-sized) and each part's step log (main.log, chat.log) go to
$SLUICE_BUILD_DIR/browser-shots.

Missing chromium, node or node_modules is a failure with the fix in the message,
never a skip: `deploy/install-deps test` installs the first two, and tests/run runs
`npm ci` in tests/browser.
"""
import os
import shutil
import subprocess

import pytest

import procs
from mariadb import MariaDB
from system import Stack

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
SCRIPT = os.path.join(HERE, "web_client.mjs")
SHOTS = os.path.join(procs.BUILD_DIR, "browser-shots")
# The echo provider streams one word per token_delay_ms: slow enough that the page
# shows a partial answer and the Stop button has something to stop.
TOKEN_DELAY_MS = 60
CHAT_SHOTS = {"desktop-chat-streaming.png", "desktop-chat-stopped.png", "phone-chat-history.png"}


def _prerequisites():
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("%s (Debian package chromium: deploy/install-deps test)" % CHROMIUM)
    if shutil.which("node") is None:
        missing.append("node (Debian package nodejs: deploy/install-deps test)")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core")):
        missing.append("tests/browser/node_modules/playwright-core "
                       "(run: cd tests/browser && npm ci --no-audit --no-fund; tests/run does)")
    return missing


@pytest.fixture(scope="module")
def stack():
    missing = _prerequisites()
    if missing:
        pytest.fail("browser test cannot run, missing: " + "; ".join(missing), pytrace=False)
    db = MariaDB()
    db.start()
    s = Stack(db, chat=True, chat_settings={"token_delay_ms": TOKEN_DELAY_MS})
    try:
        try:
            s.start()
        except BaseException:
            for p in [getattr(s, "broker", None), s.streamworker] + s.workers:
                if p is not None:
                    p.kill()
            raise
        yield s
        s.stop()
    finally:
        db.destroy()


def _run(stack, part):
    """Runs one part of web_client.mjs against the stack; returns its output."""
    os.makedirs(SHOTS, exist_ok=True)
    r = subprocess.run(["node", SCRIPT, stack.url, SHOTS, part], cwd=HERE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=150)
    print(r.stdout)
    with open(os.path.join(SHOTS, part + ".log"), "w") as f:
        f.write(r.stdout)
    assert r.returncode == 0, "browser test (%s) failed, exit %d:\n%s%s" % (
        part, r.returncode, r.stdout, _dead(stack))
    assert "browser test: all passed" in r.stdout, r.stdout
    return r.stdout


def _dead(stack):
    """The stack's processes that died during the test, with the end of their logs:
    a crashed server shows in the page only as timeouts and refused connections."""
    procs_ = [stack.gateway.proc, stack.broker, stack.streamworker] + stack.workers
    return "".join("\n%s died (exit %s); end of its log:\n%s"
                   % (p.name, p.popen.poll(), p.log()[-3000:])
                   for p in procs_ if p is not None and not p.alive())


def _shots(prefix):
    os.makedirs(SHOTS, exist_ok=True)
    return {n for n in os.listdir(SHOTS) if n.endswith(".png") and n.startswith(prefix)}


def test_two_devices_clipboard_devices_operator(stack):
    for name in _shots("") - CHAT_SHOTS:
        os.unlink(os.path.join(SHOTS, name))
    _run(stack, "main")
    for screen in ("login", "clipboard", "chat", "devices", "operator"):
        for size in ("desktop", "phone"):
            assert "%s-%s.png" % (size, screen) in _shots(size), sorted(_shots(""))


def test_chat_streams_and_stops(stack):
    for name in _shots("") & CHAT_SHOTS:
        os.unlink(os.path.join(SHOTS, name))
    _run(stack, "chat")
    assert CHAT_SHOTS <= _shots(""), sorted(_shots(""))
