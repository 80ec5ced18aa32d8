"""A WebSocket client on a plain blocking socket, for tests that must control
exactly what a client reads and sends: a client that never reads, one that only
sends pongs, one that reads a socket to its end (close frame or EOF).

    ws = RawWS(port, "/v1/sync/notify?token=T", rcvbuf=4096)   # handshake done
    ws.send_frame(0xA, b"")          # an unsolicited PONG (masked, as a client must)
    ws.read_frames(timeout=10)       # -> [(opcode, payload), ...] until close/EOF
    ws.data_frames                   # [(opcode, fin, length), ...] as they came
    ws.close()

read_frames gives whole messages: the gateway sends a long message as
fragments (a text frame without FIN, then continuation frames), which are put
together here; data_frames records the frames themselves.

rcvbuf shrinks the client's receive buffer before connecting, so a client that
does not read stops the server's writes early.
"""
import base64
import json
import os
import socket
import struct
import time


class Refused(Exception):
    """The upgrade was answered with an HTTP status other than 101."""

    def __init__(self, status, head, body):
        super().__init__("upgrade refused: %d %s" % (status, body[:200]))
        self.status = status
        self.head = head
        self.body = body


class RawWS:
    def __init__(self, port, path, rcvbuf=None, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake: %r" % buf)
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        self.partial = None  # (opcode, payload so far) of a fragmented message
        self.data_frames = []  # (opcode, fin, length) of every data frame read
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            body = self.buf
            length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if length:
                want = int(length[0].split(b":")[1])
                while len(body) < want:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            self.sock.close()
            raise Refused(status, head.decode("latin-1"), body.decode("utf-8", "replace"))

    def send_frame(self, opcode, payload=b""):
        """One masked frame (FIN set)."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def _raw_frame(self):
        """One whole frame from self.buf as (fin, opcode, payload), or None when
        it is not all here."""
        b = self.buf
        if len(b) < 2:
            return None
        fin = bool(b[0] & 0x80)
        opcode = b[0] & 0x0F
        n = b[1] & 0x7F
        off = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack("!H", b[2:4])[0]
            off = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack("!Q", b[2:10])[0]
            off = 10
        if len(b) < off + n:
            return None
        self.buf = b[off + n:]
        return fin, opcode, b[off:off + n]

    def _frame(self):
        """One whole message (opcode, payload) from self.buf, its fragments put
        together, or a control frame (which may come between fragments); None when
        it is not all here."""
        while True:
            f = self._raw_frame()
            if f is None:
                return None
            fin, opcode, payload = f
            if opcode >= 0x8:
                return opcode, payload
            self.data_frames.append((opcode, fin, len(payload)))
            if opcode == 0x0:
                if self.partial is None:
                    raise ValueError("a continuation frame without a message to continue")
                self.partial = (self.partial[0], self.partial[1] + payload)
            elif self.partial is not None:
                raise ValueError("a new message before the last one ended")
            else:
                self.partial = (opcode, payload)
            if fin:
                message, self.partial = self.partial, None
                return message

    def read_frames(self, timeout=10.0, stop_at_close=True):
        """Every frame until a close frame (included), EOF or a reset. Raises
        TimeoutError when the server neither closes nor sends for timeout s."""
        frames = []
        self.eof = False
        while True:
            f = self._frame()
            if f is not None:
                frames.append(f)
                if f[0] == 0x8 and stop_at_close:
                    return frames
                continue
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("the server neither closed nor sent for %.0f s" % timeout)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return frames
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(frames):
    """The code of the close frame among frames, or None."""
    for op, payload in frames:
        if op == 0x8 and len(payload) >= 2:
            return struct.unpack("!H", payload[:2])[0]
    return None


def texts(frames):
    """The JSON text messages among frames."""
    return [json.loads(p) for op, p in frames if op == 0x1]


def wait(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
