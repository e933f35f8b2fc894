"""The app of tests/functions/test_web_server.py: `@modal.web_server` endpoints whose
functions start a server process on a port, as Modal's examples do. `ECHO` (an HTTP and
WebSocket echo server, stdlib only) is also what tests/server/test_tunnels.py runs."""

from __future__ import annotations

import subprocess

import sandbox_service as modal

app = modal.App("fn-websrv")

# An HTTP server that echoes what it got, and a WebSocket echo server on the same port
# (RFC 6455 by hand: the image has no websockets package). Run: python3 -c ECHO <port>
ECHO = r'''
import base64, hashlib, http.server, json, struct

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.ws()
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                           "prefix": self.headers.get("X-Forwarded-Prefix")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def ws(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if self.headers.get("Sec-WebSocket-Protocol"):
            self.send_header("Sec-WebSocket-Protocol",
                             self.headers["Sec-WebSocket-Protocol"].split(",")[0].strip())
        self.end_headers()
        r, w = self.rfile, self.wfile
        while True:
            b1, b2 = r.read(2)
            op, n = b1 & 15, b2 & 127
            if n == 126:
                n = struct.unpack("!H", r.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", r.read(8))[0]
            mask = r.read(4)
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(r.read(n)))
            if op == 8:
                w.write(b"\x88\x02" + data[:2]); w.flush(); return
            if op in (1, 2):
                if data == b"path":
                    data = self.path.encode()
                head = bytes([0x80 | op])
                head += bytes([len(data)]) if len(data) < 126 else (
                    b"\x7e" + struct.pack("!H", len(data)) if len(data) < 65536
                    else b"\x7f" + struct.pack("!Q", len(data)))
                w.write(head + data); w.flush()

import sys
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
'''


@app.function()
@modal.web_server(8000, startup_timeout=30)
def files():
    import os

    os.makedirs("/srv", exist_ok=True)
    with open("/srv/hello.txt", "w") as f:
        f.write("hello from a web_server\n")
    subprocess.Popen(["python3", "-m", "http.server", "8000", "--directory", "/srv"])


@app.function()
@modal.web_server(8001, startup_timeout=30, label="fn-websrv-echo")
def echo():
    subprocess.Popen(["python3", "-c", ECHO, "8001"])


@app.function()
@modal.web_server(8002, startup_timeout=1)
def never():
    """Starts nothing: its container fails to start, and requests say why."""
