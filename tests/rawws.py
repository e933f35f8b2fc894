"""A WebSocket client that never reads: the upgrade, one request frame, then silence.
A plain module (like sbxtest) so tests in any directory can import it. The `websockets`
library cannot play this client: its background reader drains the socket."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_unread_exec(port: int, token: str, sandbox_id: str, argv: list[str]) -> socket.socket:
    """Start `argv` over the exec WebSocket and return the socket, never read again."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/sandboxes/{sandbox_id}/exec/stream HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:  # read the 101 byte by byte: nothing past it
        c = s.recv(1)
        if not c:
            raise ConnectionError("closed during the upgrade")
        head += c
    assert head.startswith(b"HTTP/1.1 101"), head
    s.sendall(_frame(json.dumps({"type": "start", "argv": argv}).encode()))
    return s


def drain(s: socket.socket, timeout_s: float) -> tuple[int, bool]:
    """Read until the server closes; (bytes read, whether it closed within timeout_s)."""
    import time

    s.settimeout(1.0)
    total, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionError:
            return total, True
        if not chunk:
            return total, True
        total += len(chunk)
    return total, False
