"""A private MariaDB server for tests, started through deploy/local/mariadb.

    db = MariaDB()            # data dir under the build dir (or a temp dir), free port
    db.start()
    db.sql("SELECT 1")        # -> [["1"]] rows of strings (None for NULL), as root
    db.create_database("t1")  # a fresh database the application user may use
    db.set_global("wait_timeout", 2)
    db.kill_user_connections("sluice")
    with db.user_row_held("t1", user_id): ...   # clipboard.create of that user waits
    db.restart()
    db.stop()

Statements run through the `mariadb` CLI as the local admin over the unix socket
(socket authentication: the OS user), so a test can look at the database without
linking a driver. The application user's password is the one the script generated
into <dir>/app-password (`db.password`). Nothing here touches a system-wide server.
"""
import contextlib
import os
import pwd
import select
import shutil
import subprocess
import tempfile
import time

import procs

SCRIPT = os.path.join(procs.SOURCE_DIR, "deploy", "local", "mariadb")
# the script's local admin: the account of the OS user, by socket authentication
ADMIN = pwd.getpwuid(os.getuid()).pw_name


class MariaDB:
    def __init__(self, directory=None, port=None, user="sluice", password=None,
                 database="sluice"):
        if directory is None:
            base = os.path.join(procs.BUILD_DIR, "test-mariadb")
            os.makedirs(base, exist_ok=True)
            directory = tempfile.mkdtemp(prefix="db-", dir=base)
            self._owns_dir = True
        else:
            self._owns_dir = False
        self.dir = os.path.abspath(directory)
        self.host = "127.0.0.1"
        self.port = port or procs.free_port()
        self.socket = os.path.join(self.dir, "mariadb.sock")
        self.user = user
        self._password = password  # None: the one the script generated
        self.database = database

    @property
    def password(self):
        """The application user's password, as the script keeps it (0600 file)."""
        if self._password is not None:
            return self._password
        with open(os.path.join(self.dir, "app-password")) as f:
            return f.read().strip()

    def _env(self):
        env = dict(os.environ)
        env.update({
            "SLUICE_MARIADB_DIR": self.dir,
            "SLUICE_MARIADB_PORT": str(self.port),
            "SLUICE_DB_NAME": self.database,
            "SLUICE_DB_USER": self.user,
            "SLUICE_MARIADB_QUIET": "1",
        })
        env.pop("SLUICE_DB_PASSWORD", None)
        if self._password is not None:
            env["SLUICE_DB_PASSWORD"] = self._password
        return env

    def _script(self, command, check=True):
        r = subprocess.run([SCRIPT, command], env=self._env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError("deploy/local/mariadb %s failed (%d): %s%s" % (
                command, r.returncode, r.stdout.decode(), r.stderr.decode()))
        return r

    def start(self):
        self._script("start")
        return self

    def stop(self):
        self._script("stop")

    def restart(self):
        self.stop()
        self.start()

    def running(self):
        return self._script("status", check=False).returncode == 0

    def destroy(self):
        """Stops the server and removes its folder (when this object made it)."""
        try:
            self.stop()
        finally:
            if self._owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def settings(self, database=None):
        """Config settings for sluice-dbworker (as --flags without dashes)."""
        return {
            "db_host": self.host,
            "db_port": self.port,
            "db_user": self.user,
            "db_password": self.password,
            "db_name": database or self.database,
        }

    def sql(self, statement, database=None, check=True):
        """Runs statement(s) as root; returns the rows of the last result set as lists
        of strings (None for NULL)."""
        args = ["mariadb", "--no-defaults", "--protocol=socket", "--socket=" + self.socket,
                "-u" + ADMIN, "--batch", "--skip-column-names", "--raw"]
        if database:
            args.append(database)
        r = subprocess.run(args + ["-e", statement], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("SQL failed: %s: %s" % (statement, r.stderr.decode()))
        rows = []
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            rows.append([None if v == "NULL" else v for v in line.split("\t")])
        return rows

    def scalar(self, statement, database=None):
        rows = self.sql(statement, database)
        return rows[0][0] if rows else None

    def cli(self, database=None):
        """A long-lived `mariadb` CLI session (stdin pipe) as root, for holding locks:
        s = db.cli("t1"); s.send("BEGIN; SELECT ... FOR UPDATE;"); ...; s.close()."""
        return CliSession(self, database)

    @contextlib.contextmanager
    def user_row_held(self, database, user_id):
        """A CLI session holding the user's row lock for the block: clipboard.create
        for that user (its seq trigger needs the lock) waits on it until the block
        ends and the session commits."""
        s = self.cli(database)
        try:
            s.run("BEGIN; SELECT id FROM users WHERE id = %d FOR UPDATE;" % int(user_id))
            yield s
        finally:
            # an open transaction would block a DROP DATABASE
            try:
                s.run("COMMIT;")
            finally:
                s.close()

    def create_database(self, name):
        self.sql("DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s` CHARACTER SET utf8mb4; "
                 "GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'localhost', '%s'@'127.0.0.1'"
                 % (name, name, name, self.user, self.user))
        return name

    def set_global(self, name, value):
        self.sql("SET GLOBAL %s = %s" % (name, value))

    def connection_ids(self, user=None, database=None):
        """Ids of the server threads of user (default: the application user)."""
        q = "SELECT id FROM information_schema.processlist WHERE user = '%s'" % (user or self.user)
        if database:
            q += " AND db = '%s'" % database
        return [int(r[0]) for r in self.sql(q)]

    def kill(self, connection_id):
        self.sql("KILL CONNECTION %d" % connection_id, check=False)

    def kill_user_connections(self, user=None, database=None):
        ids = self.connection_ids(user, database)
        for i in ids:
            self.kill(i)
        return ids


class CliSession:
    """An interactive `mariadb` process fed through stdin: statements sent stay in
    one session (a transaction holding row locks lives until commit() or close())."""

    def __init__(self, db, database=None):
        args = ["mariadb", "--no-defaults", "--protocol=socket", "--socket=" + db.socket,
                "-u" + ADMIN, "--batch", "--skip-column-names", "--unbuffered"]
        if database:
            args.append(database)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._marker = 0
        self._pending = b""

    def run(self, statements, timeout=30):
        """Sends statements and waits until they have run; returns their output."""
        self._marker += 1
        marker = "sluice-marker-%d" % self._marker
        self.proc.stdin.write(("%s\nSELECT '%s';\n" % (statements, marker)).encode())
        self.proc.stdin.flush()
        out = []
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            # lines already read are used first: select() only sees the pipe, so
            # waiting on it while a whole line sits in our buffer would hang
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                line = line.decode("utf-8", "replace")
                if line == marker:
                    return out
                out.append(line)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("mariadb CLI did not finish %r" % statements)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("mariadb CLI exited: %s" % "\n".join(out))
            self._pending += chunk

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
