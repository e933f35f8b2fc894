"""A deployed web endpoint through the real server: its URL from Function.from_name, a
label another app may not take, and no endpoint once the app stops. (Its own module: the
App object of fnapp_web must not be running in tests/functions/test_web.py meanwhile.)"""

from __future__ import annotations

import uuid

import fnapp_web as m
import fntest
import httpx
import pytest

import sandbox_service as modal

pytestmark = pytest.mark.timeout(600)


def test_deployed_urls(server):
    name = f"fn-web-{uuid.uuid4().hex[:6]}"
    deployed = m.app.deploy(name=name)
    try:
        url = modal.Function.from_name(name, "flaskish").get_web_url()
        assert url == f"{server.url}/web/wsgi-test/"
        assert httpx.get(url, timeout=120).status_code == 201
        assert modal.Function.from_name(name, "web").get_web_url() == \
            f"{server.url}/web/{name}-web/"
        # another app may not take the label
        other = modal.App(f"other-{uuid.uuid4().hex[:6]}")

        def clash():
            return None
        other.function(serialized=True)(modal.wsgi_app(label="wsgi-test")(clash))
        with pytest.raises(modal.exception.ConflictError, match="wsgi-test"):
            other.deploy()
    finally:
        fntest.stop_app(deployed.app_id)
    assert httpx.get(url, timeout=30).status_code == 404
