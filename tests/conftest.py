"""Shared fixtures: a real `sbx serve` (tests/sbxtest.py) on a free port with its own
SBX_HOME, real runsc.

The base image is built once (debootstrap) or unpacked from $SBX_IMAGE_CACHE, which
.ci/run points at a directory that survives between runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from sbxtest import REPO, Server, free_port  # noqa: F401 (re-exported for tests)


@pytest.fixture(scope="session")
def server():
    if not shutil.which("runsc"):
        pytest.fail("runsc is not installed: run `apt-get install runsc` (see .ci/run)")
    home = tempfile.mkdtemp(prefix="sbx-t-", dir="/tmp")
    srv = Server(home)
    srv.start()
    os.environ["SBX_URL"] = srv.url
    os.environ["SBX_TOKEN"] = srv.token
    # build (or unpack) the base image once, before any test times itself
    with srv.api() as c:
        r = c.post("/v1/sandboxes", json={}, timeout=900)
        assert r.status_code == 201, r.text
        c.delete(f"/v1/sandboxes/{r.json()['sandbox_id']}")
    yield srv
    srv.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def api(server):
    with server.api() as c:
        yield c


@pytest.fixture
def sandbox(server):
    import sandbox_service as sbx

    sb = sbx.Sandbox.create(timeout=600)
    yield sb
    try:
        sb.terminate()
    except sbx.SandboxError:
        pass
