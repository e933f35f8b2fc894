"""`@modal.web_server` through the real server: the function starts a server process on a
port in its container, and requests (HTTP and WebSocket) reach it at the endpoint's URL with
their path, query and the app's own Authorization header; a server that never listens fails
its container's start, and a request says why (503, not a hang)."""

from __future__ import annotations

import fnapp_webserver as m
import fntest
import httpx
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(m.app) as a:
        yield a


def test_web_server_serves_files(app, server):
    url = m.files.get_web_url()
    assert url == f"{server.url}/web/fn-websrv-files-dev/"
    r = httpx.get(url + "hello.txt", timeout=120)
    assert r.status_code == 200 and r.text == "hello from a web_server\n"
    assert httpx.get(url + "nope", timeout=60).status_code == 404  # the server's own 404


def test_web_server_gets_path_query_headers_and_websockets(app):
    url = m.echo.get_web_url()
    assert url.endswith("/web/fn-websrv-echo-dev/")
    r = httpx.get(url + "a/b?x=1", headers={"Authorization": "Bearer app-level"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/a/b?x=1", "auth": "Bearer app-level",
                        "prefix": "/web/fn-websrv-echo-dev"}
    with connect("ws" + url[4:] + "sock?q=2", open_timeout=60) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send("path")
        assert ws.recv() == "/sock?q=2"


def test_web_server_that_never_listens_says_why(app):
    r = httpx.get(m.never.get_web_url(), timeout=120)
    assert r.status_code == 503, r.text
    assert "nothing listened on port 8002 within startup_timeout=1s" in r.text
