"""Every unit in deploy/systemd/ passes `systemd-analyze verify`.

verify also checks that ExecStart= names an executable file, and the units name the
installed paths (/usr/local/bin/...), which a build machine does not have. So the
units are copied to a temporary folder with only that prefix replaced by the
build's binaries; nothing else is changed. Templates are verified through an
instance (name@1.service). A machine without systemd-analyze fails this test: it
is in deploy/packages.txt (systemd, [test])."""
import glob
import os
import shutil
import subprocess

import procs

UNITS = os.path.join(procs.SOURCE_DIR, "deploy/systemd")
BINARIES = {
    "sluice-broker": "broker/sluice-broker",
    "sluice-dbworker": "workers/db/sluice-dbworker",
    "sluice-gateway": "gateway/sluice-gateway",
    "sluice-streamworker": "workers/stream/sluice-streamworker",
}


def test_units_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, ("systemd-analyze is not installed: install the `systemd` package "
                  "(deploy/packages.txt, [test]) to check deploy/systemd/")
    names = []
    for path in sorted(glob.glob(os.path.join(UNITS, "*.service"))):
        text = open(path).read()
        for name, rel in BINARIES.items():
            built = os.path.join(os.path.abspath(procs.BUILD_DIR), rel)
            assert os.access(built, os.X_OK), "not built: " + built
            text = text.replace("/usr/local/bin/%s " % name, built + " ")
        assert "/usr/local/bin/" not in text, "a unit runs a binary this test does not know"
        base = os.path.basename(path)
        (tmp_path / base).write_text(text)
        names.append(base.replace("@.service", "@1.service"))
    assert {"sluice-broker.service", "sluice-dbworker@1.service", "sluice-gateway@1.service",
            "sluice-streamworker@1.service"} <= set(names)
    for name in names:
        r = subprocess.run([tool, "verify", name], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        # verify exits 0 on warnings too: any line about our unit is a failure
        about = [line for line in (r.stdout + r.stderr).splitlines() if "sluice" in line]
        assert r.returncode == 0 and not about, (name, r.stdout, r.stderr)


def test_units_restart_what_dies():
    """Like deploy/local/run: a process that dies (exit status, signal, SIGKILL
    included) is started again after a pause, and systemd's start limit (5 starts in
    10 s by default, not overridden here) gives up on one that keeps dying at start."""
    for path in sorted(glob.glob(os.path.join(UNITS, "*.service"))):
        service = open(path).read().split("[Service]", 1)[1].split("\n[", 1)[0]
        keys = dict(line.split("=", 1) for line in service.splitlines()
                    if "=" in line and not line.startswith("#"))
        name = os.path.basename(path)
        assert keys.get("Restart") in ("on-failure", "always", "on-abnormal"), (name, keys)
        assert float(keys.get("RestartSec", "0.1").rstrip("s")) >= 1, name
        text = open(path).read()
        assert "StartLimitBurst=0" not in text and "StartLimitIntervalSec=0" not in text, name
