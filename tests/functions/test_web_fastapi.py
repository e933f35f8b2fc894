"""FastAPI endpoints through the real server, on an image with FastAPI installed: query
parameters and JSON bodies of `fastapi_endpoint`, its /docs, and a FastAPI app's own
routes under its /web/<label>/ prefix (root_path)."""

from __future__ import annotations

import fnapp_fastapi as m
import fntest
import httpx
import pytest

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(m.app) as a:
        yield a


def test_fastapi_endpoint_query_and_body(app):
    r = httpx.get(m.square.get_web_url(), params={"x": 7}, timeout=120)
    assert r.status_code == 200 and r.json() == {"square": 49}, r.text
    r = httpx.get(m.square.get_web_url(), params={"x": "nope"}, timeout=60)
    assert r.status_code == 422  # FastAPI's own validation
    r = httpx.post(m.echo.get_web_url(), json={"a": [1, 2]}, timeout=120)
    assert r.json() == {"got": {"a": [1, 2]}}
    assert httpx.get(m.echo.get_web_url() + "docs", timeout=60).status_code == 200


def test_fastapi_app_routes_under_its_prefix(app):
    base = m.api.get_web_url()
    assert httpx.get(base + "items/3", timeout=120).json() == {"item": 3}
    r = httpx.get(base + "go", timeout=60, follow_redirects=True)
    assert r.status_code == 200 and r.json() == {"item": 7}, (r.url, r.text)
