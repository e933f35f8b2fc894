"""Web endpoints through the real server: ASGI and WSGI apps behind /web/<label>/, request
and response bodies streamed, WebSockets, errors with a clear body (never a bare 500),
auth with requires_proxy_auth, a client that goes away cancels the request, concurrency,
scale to zero and back, and deployed URLs through Function.from_name."""

from __future__ import annotations

import asyncio
import time
import uuid

import fnapp_web as m
import fntest
import httpx
import pytest

import sandbox_service as modal

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(m.app) as a:
        yield a


def test_asgi_endpoint_paths_bodies_and_lifespan(app, server):
    url = m.web.get_web_url()
    assert url == f"{server.url}/web/fn-web-web-dev/"
    r = httpx.get(url + "hello/there?x=1&y=2", timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["path"] == "/web/fn-web-web-dev/hello/there"
    assert j["root_path"] == "/web/fn-web-web-dev" and j["query"] == "x=1&y=2"
    assert j["lifespan"] is True  # lifespan startup ran once in the container
    big = b"x" * (3 << 20)
    r = httpx.post(url + "upload", content=big, timeout=60)
    assert r.json()["body_len"] == len(big) and r.json()["method"] == "POST"
    r = httpx.get(f"{server.url}/web/fn-web-web-dev", timeout=30,  # no slash: redirected
                  follow_redirects=True)
    assert r.status_code == 200 and r.json()["path"] == "/web/fn-web-web-dev/"


def test_response_streams(app):
    url = m.web.get_web_url()
    stamps = []
    with httpx.stream("GET", url + "stream", timeout=60) as r:
        for chunk in r.iter_text():
            stamps.append((time.monotonic(), chunk))
    assert "".join(c for _, c in stamps) == "chunk0\nchunk1\nchunk2\n"
    assert len(stamps) >= 2  # not one buffered body


def test_websocket_passes_through(app):
    from websockets.sync.client import connect

    ws_url = m.web.get_web_url().replace("http://", "ws://") + "ws"
    with connect(ws_url, open_timeout=60) as ws:
        ws.send("hi")
        assert ws.recv(timeout=30) == "echo:hi"
        ws.send(b"bytes")
        assert ws.recv(timeout=30) == "echo:bytes"


def test_errors_have_a_clear_body(app, server):
    r = httpx.get(m.web.get_web_url() + "boom", timeout=60)
    assert r.status_code == 500 and "kaboom in the endpoint" in r.text
    r = httpx.get(m.broken.get_web_url(), timeout=120)
    assert r.status_code == 503 and "cannot load the model" in r.text, r.text
    r = httpx.get(f"{server.url}/web/no-such-endpoint/", timeout=30)
    assert r.status_code == 404 and "no web endpoint" in r.text


def test_wsgi_endpoint_with_a_label(app, server):
    url = m.flaskish.get_web_url()
    assert url == f"{server.url}/web/wsgi-test-dev/"
    r = httpx.post(url + "items?q=1", content=b"payload", timeout=60)
    assert r.status_code == 201 and r.headers["x-kind"] == "wsgi"
    assert r.text == "wsgi POST /web/wsgi-test-dev|/items?q=1 payload"


def test_requires_proxy_auth(app, server):
    url = m.private.get_web_url()
    r = httpx.get(url, timeout=60)
    assert r.status_code == 401 and "Authorization" in r.text
    r = httpx.get(url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
    assert r.status_code == 200 and r.json()["auth"] is None  # the token never reaches the app
    r = httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=60)
    assert r.status_code == 401


def test_concurrent_requests_share_one_container(app):
    url = m.web.get_web_url() + "sleep"

    async def go():
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(*(c.get(url) for _ in range(6)))
    results = asyncio.run(go())
    assert all(r.status_code == 200 for r in results)
    assert max(r.json()["peak"] for r in results) > 1  # served at once (max_inputs=8)
    assert len({r.json()["pid"] for r in results}) == 1  # max_containers=1
    info = fntest.function_info(m.web.object_id)  # every request is metered
    assert info["web_requests"] >= 6 and info["web_latency_ms"]["p50"] > 0


def test_a_client_that_goes_away_cancels_the_request(app):
    flags = modal.Dict.from_name(f"web-flag-{uuid.uuid4().hex[:8]}", create_if_missing=True)
    flags.put("cancelled", False)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(m.web.get_web_url() + "hang", timeout=3,
                  headers={"x-flag-dict": flags.name})
    fntest.wait_for(lambda: flags.get("cancelled") is True, 30, "the app to see the cancel")
    modal.Dict.delete(flags.name)


def test_scale_to_zero_and_back(app):
    fid = m.web.object_id
    fntest.wait_for(lambda: not [c for c in fntest.containers() if c["function_id"] == fid],
                    60, "the endpoint's container to scale to zero")
    r = httpx.get(m.web.get_web_url() + "again", timeout=120)  # cold start on the request
    assert r.status_code == 200
