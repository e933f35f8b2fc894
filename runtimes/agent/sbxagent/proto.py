"""Wire format between the host and the agent: frames of 1 byte type, 4 bytes big-endian
length, payload. The host imports this module too, so both ends share one definition.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import os
import struct
import threading

from .jsonc import dumps

HEADER = struct.Struct(">BI")
MAX_FRAME = 16 * 1024 * 1024

REQ = ord("R")  # host -> agent: JSON request, first frame of a connection
RESP = ord("P")  # agent -> host: JSON response
STARTED = ord("T")  # agent -> host: JSON {"pid"}
OUT = ord("O")  # stdout bytes
ERR = ord("E")  # stderr bytes
IN = ord("I")  # stdin bytes
EOF = ord("C")  # stdin end (host -> agent), or end of a data stream (agent -> host)
SIG = ord("S")  # JSON {"signal": n}
RESIZE = ord("Z")  # JSON {"rows", "cols"}
EXIT = ord("X")  # JSON {"exit_code", "timed_out", "signal"}
DATA = ord("D")  # file bytes, either way
EVENT = ord("V")  # agent -> host: JSON event of an interpreter context's cell

READ_CHUNK = 64 * 1024
DRAIN_GRACE_S = 0.25
MAIN_BUFFER = 16 * 1024 * 1024

def encode(ftype, payload=b""):
    return HEADER.pack(ftype, len(payload)) + payload


def encode_json(ftype, obj):
    return encode(ftype, dumps(obj).encode())


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None, None
    ftype, length = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise ValueError("frame too large")
    payload = recv_exact(sock, length) if length else b""
    if payload is None:
        return None, None
    return ftype, payload


class Conn:
    """A socket with a write lock so several pump threads can send frames."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.alive = True

    def send(self, ftype, payload=b""):
        if not self.alive:
            return False
        try:
            with self.lock:
                self.sock.sendall(encode(ftype, payload))
            return True
        except OSError:
            self.alive = False
            return False

    def send_json(self, ftype, obj):
        return self.send(ftype, dumps(obj).encode())


def _close_quiet(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
