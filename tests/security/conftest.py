"""Fixtures for the hostile-program suite.

Every test in this directory gets `survives` automatically: after the test body, a
long-lived bystander sandbox must still run `echo ok`, /health must answer quickly, the
server process must be alive, and a freshly created sandbox must run a command.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from _secutil import quiet_terminate

import sandbox_service as sbx


@pytest.fixture(scope="session")
def bystander(server):
    sb = sbx.Sandbox.create(timeout=1800)
    yield sb
    quiet_terminate(sb)


@pytest.fixture
def victim(server):
    """A sandbox the test may wreck."""
    sb = sbx.Sandbox.create(timeout=300)
    yield sb
    quiet_terminate(sb)


@pytest.fixture(autouse=True)
def survives(server, bystander):
    yield
    assert server.proc.poll() is None, "the server process died"
    t0 = time.monotonic()
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert time.monotonic() - t0 < 5
    p = bystander.exec("echo", "ok", timeout=30)
    assert p.stdout.read() == "ok\n"
    assert p.wait() == 0
    fresh = sbx.Sandbox.create(timeout=60)
    try:
        p = fresh.exec("echo", "fresh", timeout=30)
        assert p.stdout.read() == "fresh\n"
        assert p.wait() == 0
    finally:
        quiet_terminate(fresh)


@pytest.fixture
def host_marker():
    """A file on the host under /tmp with unique content that no sandbox may ever return."""
    name = "sbx-sec-marker-" + os.urandom(8).hex()
    content = "HOST-SECRET-" + os.urandom(16).hex()
    path = os.path.join("/tmp", name)
    with open(path, "w") as f:
        f.write(content)
    yield path, content
    os.unlink(path)
