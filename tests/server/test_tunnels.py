"""Tunnels the way Modal programs use them: `sb.tunnels()[port].url` from a plain HTTP
client with no header (an unguessable URL that dies with the sandbox, the app's own
Authorization header passed through), a forged or altered token refused, and WebSockets
through both the tunnel URL and the token-guarded route (a real WebSocket server inside
the sandbox, a real client here)."""

from __future__ import annotations

import os
import sys
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]

PORT = 8090
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "functions", "apps"))
from fnapp_webserver import ECHO  # noqa: E402  (an HTTP and WebSocket echo server)


@pytest.fixture(scope="module")
def web():
    sb = sbx.Sandbox.create("python3", "-c", ECHO, str(PORT), encrypted_ports=[PORT], timeout=300)
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
