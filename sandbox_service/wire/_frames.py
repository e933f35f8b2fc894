"""The frame format between the server and the function runner in a container (wire
layer, stdlib only: the runner imports it before anything heavy).

    4-byte big-endian header length, the JSON header, 4-byte body length, the body.
"""

from __future__ import annotations

import json
import struct
from typing import Any

_LEN = struct.Struct(">I")
MAX_HEADER = 1 << 20
RUNNER_PORT = 47170  # the runner listens on the container's own loopback
# web requests on the runner's connection: the ASGI message field that travels as the
# frame's body (bytes) instead of in its JSON header
ASGI_BYTES = {"http.request": "body", "http.response.body": "body", "websocket.send": "bytes",
              "websocket.receive": "bytes"}


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + _LEN.pack(len(body)) + body
