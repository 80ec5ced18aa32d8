"""`cmake --install` to a temporary prefix gives a usable client library: the C
example of docs/clients.md compiles against it through pkg-config alone, and runs."""
import glob
import os
import shlex
import subprocess

import procs
from conftest import run


def test_install_and_build_example_with_pkg_config(tmp_path, make_broker, make_worker):
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", procs.BUILD_DIR, "--prefix", prefix], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (pc,) = glob.glob(str(prefix / "**/pkgconfig/sluice-client.pc"), recursive=True)
    assert os.path.exists(prefix / "include/sluice/client.h")
    assert os.path.exists(prefix / "bin/sluicectl")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "sluice-client"], env=env,
                           capture_output=True, text=True)
    assert flags.returncode == 0, flags.stderr
    # the .pc points into the prefix it was installed to, not the configure-time one
    assert str(prefix) in os.path.realpath(flags.stdout.split("-L", 1)[1].split()[0])
    example = os.path.join(procs.BUILD_DIR, "tests/ops/client_example.c")
    out = tmp_path / "example"
    cc = os.environ.get("SLUICE_CC", "cc")
    extra = shlex.split(os.environ.get("SLUICE_CC_FLAGS", ""))
    r = run([cc, "-std=c11", "-Wall", "-Werror", example, "-o", out] + extra +
            shlex.split(flags.stdout), timeout=120)
    assert r.returncode == 0, r.stderr

    b = make_broker()
    make_worker([b])
    b.wait_workers("echo", 1)
    r = run([out, b.frontend, "echo", "upper", "installed"])
    assert r.returncode == 0, r.stderr
    assert '"INSTALLED"' in r.stdout


def test_operator_tool_links_no_database_client():
    ctl = os.path.join(procs.BUILD_DIR, "common/ctl/sluicectl")
    r = run(["ldd", ctl])
    assert r.returncode == 0
    assert "mariadb" not in r.stdout and "mysql" not in r.stdout
