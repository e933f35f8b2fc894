"""Tunnels the way Modal programs use them: `sb.tunnels()[port].url` from a plain HTTP
client with no header (an unguessable URL that dies with the sandbox, the app's own
Authorization header passed through), a forged or altered token refused, and WebSockets
through both the tunnel URL and the token-guarded route (a real WebSocket server inside
the sandbox, a real client here)."""

from __future__ import annotations

import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]

PORT = 8090
# An HTTP server that echoes what it got, and a WebSocket echo server on the same port
# (RFC 6455 by hand: the image has no websockets package), both stdlib only.
APP = r'''
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

http.server.ThreadingHTTPServer(("0.0.0.0", PORT), H).serve_forever()
'''.replace("PORT", str(PORT))


@pytest.fixture(scope="module")
def web():
    sb = sbx.Sandbox.create("python3", "-c", APP, encrypted_ports=[PORT], timeout=300)
    t = sb.tunnels()[PORT]
    deadline = time.monotonic() + 60
    while httpx.get(t.url + "/ready").status_code == 502 and time.monotonic() < deadline:
        time.sleep(0.1)
    yield sb, t
    sb.terminate()


def test_tunnel_url_needs_no_header(web):
    sb, t = web
    assert t.url.endswith(f"/tunnels/{sb.object_id}-{PORT}-" + t.url.rsplit("-", 1)[1])
    assert t.host == "127.0.0.1" and t.port > 0
    r = httpx.get(t.url + "/a/b%20c?x=1")  # no Authorization
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/a/b%20c?x=1", "auth": None,
                        "prefix": t.url.split(str(t.port), 1)[1]}
    # the app's own Authorization header reaches it on the tunnel URL ...
    r = httpx.get(t.url + "/", headers={"Authorization": "Bearer the-apps-own"})
    assert r.json()["auth"] == "Bearer the-apps-own"
    # ... and never on the token-guarded route (that header is this service's)
    assert httpx.get(t.authenticated_url + "/").status_code == 401


def test_forged_and_altered_tokens_are_refused(web):
    sb, t = web
    token = t.url.rsplit("/", 1)[1]
    base = t.url[: -len(token)]
    mac = token.rsplit("-", 1)[1]
    other = "a" if mac[0] != "a" else "b"
    for bad in (token[:-1] + ("a" if token[-1] != "a" else "b"),   # one character off
                f"{sb.object_id}-{PORT + 1}-{mac}",                   # another port, same mac
                other + token[1:], "sb-x", "%2e%2e"):
        r = httpx.get(base + bad + "/")
        assert r.status_code == 404, (bad, r.status_code, r.text)


def test_websockets_through_the_tunnel_and_the_guarded_route(server, web):
    sb, t = web
    ws_url = "ws" + t.url[4:] + "/chat?room=1"
    with connect(ws_url, subprotocols=["chat.v1"]) as ws:  # no header
        assert ws.subprotocol == "chat.v1"
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\x01" * 40000)  # 80 KB binary: extended lengths both ways
        assert ws.recv() == b"\x00\x01" * 40000
        ws.send("path")
        assert ws.recv() == "/chat?room=1"
    guarded = "ws" + t.authenticated_url[4:] + "/x"
    with pytest.raises(Exception):  # no token: closed with a reason, never bridged
        with connect(guarded) as ws:
            ws.send("hi")
            ws.recv()
    with connect(guarded, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        ws.send("path")
        assert ws.recv() == "/x"


def test_tunnel_dies_with_its_sandbox(server):
    sb = sbx.Sandbox.create("python3", "-m", "http.server", str(PORT), encrypted_ports=[PORT],
                            timeout=120)
    url = sb.tunnels()[PORT].url
    deadline = time.monotonic() + 60
    while httpx.get(url + "/").status_code == 502 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(url + "/").status_code == 200
    sb.terminate()
    r = httpx.get(url + "/")
    assert r.status_code in (404, 409), r.text
    with pytest.raises((InvalidStatus, Exception)):
        with connect("ws" + url[4:] + "/") as ws:
            ws.recv()
