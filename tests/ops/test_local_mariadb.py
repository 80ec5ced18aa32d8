"""deploy/local/mariadb makes a server nobody can log into as root over TCP
(issue 16, section 5):

- root logs in only over the unix socket, by socket authentication (the OS user);
  no root or anonymous account exists for any TCP host, and every account a TCP
  client can use has a password;
- the application user's password is generated (not `sluice`) into a file of mode
  0600 that every user of it reads; a second start keeps it;
- secure_file_priv confines LOAD DATA / SELECT ... INTO OUTFILE to one folder;
- a data folder made by an older script (root without a password, also on
  127.0.0.1) is fixed by the next start.
"""
import os
import stat
import subprocess

import pytest

from mariadb import MariaDB


def tcp_login(db, user, password):
    """True when user/password gets in over TCP (127.0.0.1:port)."""
    args = ["mariadb", "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", str(db.port),
            "-u", user, "--connect-timeout=5", "-e", "SELECT 1"]
    env = dict(os.environ)
    env["MYSQL_PWD"] = password  # not on the command line
    return subprocess.run(args, env=env, capture_output=True, timeout=30).returncode == 0


def accounts(db):
    """[(user, host, plugin, has_password)] from mysql.user."""
    rows = db.sql("SELECT user, host, plugin, authentication_string <> '' FROM mysql.user")
    return [(u, h, p, has == "1") for u, h, p, has in rows]


@pytest.fixture
def db():
    d = MariaDB()
    d.start()
    yield d
    d.destroy()


def test_no_root_over_tcp_and_a_generated_password(db):
    assert not tcp_login(db, "root", ""), "root gets in over TCP without a password"
    for user, host, plugin, has_password in accounts(db):
        assert user != "", "anonymous account %r@%r" % (user, host)
        if user == "root":
            assert host == "localhost", "root account for TCP host %r" % host
            assert plugin == "unix_socket", "root@localhost authenticates by %s" % plugin
        elif host != "localhost":
            # reachable over TCP: only the application user, with its password
            assert user == db.user and has_password, (user, host, plugin)

    path = os.path.join(db.dir, "app-password")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, "app-password has mode %o" % mode
    password = open(path).read().strip()
    assert len(password) >= 20 and password != "sluice", password
    assert db.password == password
    assert tcp_login(db, db.user, password)
    assert not tcp_login(db, db.user, "sluice")

    assert db.scalar("SELECT @@secure_file_priv").rstrip("/") == os.path.join(db.dir, "files")

    db.restart()
    assert open(path).read().strip() == password, "a restart changed the password"
    assert tcp_login(db, db.user, password)


def test_an_old_data_folder_is_fixed_at_start(db):
    """What the older script left: root with no password on the socket and on
    127.0.0.1 (mariadb-install-db --auth-root-authentication-method=normal)."""
    db.sql("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; "
           "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; "
           "CREATE USER IF NOT EXISTS ''@'localhost'; ALTER USER 'root'@'localhost' IDENTIFIED BY ''")
    assert tcp_login(db, "root", "")
    db.start()  # running already: start fixes the accounts and leaves the server up
    assert not tcp_login(db, "root", "")
    assert [a for a in accounts(db) if a[0] == "root"] == [("root", "localhost", "unix_socket",
                                                            False)]
    assert not [a for a in accounts(db) if a[0] == ""]
    db.stop()
    db.start()
    assert not tcp_login(db, "root", "")
    assert tcp_login(db, db.user, db.password)
