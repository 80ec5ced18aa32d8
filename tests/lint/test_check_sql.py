"""Design rule 3 (every SQL statement prepared from fixed text with bound
parameters), checked on the sources by tests/lint/check_sql.py, and the checker
itself checked on planted violations."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHECK = os.path.join(HERE, "check_sql.py")


def run(*args):
    r = subprocess.run([sys.executable, CHECK] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    return r.returncode, r.stdout.decode()


def test_no_source_builds_sql_at_run_time():
    rc, out = run("--root", ROOT)
    assert rc == 0, out
    # it did look at the code that talks to MariaDB
    n = int(re.search(r"(\d+) files", out).group(1))
    assert n > 50, out


def test_checker_finds_every_planted_violation():
    path = os.path.join(HERE, "samples", "bad_sql.c")
    rc, out = run(path)
    assert rc == 1, out
    with open(path) as f:
        bad_lines = [i + 1 for i, line in enumerate(f) if "/* BAD" in line]
    assert len(bad_lines) == 6
    reported = {int(m.group(1)) for m in re.finditer(r"bad_sql\.c:(\d+):", out)}
    assert reported == set(bad_lines), out


def test_checker_accepts_fixed_text():
    rc, out = run(os.path.join(HERE, "samples", "good_sql.c"))
    assert rc == 0, out
