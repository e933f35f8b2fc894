"""Shared fixtures: a real `sbx serve` (tests/sbxtest.py) on a free port with its own
SBX_HOME, real runsc.

The base image is built once (debootstrap) or unpacked from $SBX_IMAGE_CACHE, which
.ci/run points at a directory that survives between runs.

Tests live in area folders (sdk/, server/, runtime/, images/, cli/, agent_tools/,
security/, reliability/, architecture/); their helpers (sbxtest, rawws, dnstest, registry,
sbxnet, leaks) stay here: pytest's default import mode puts this directory on sys.path when
it loads this file, before any test module of a subfolder.

When the session used the server, its teardown (after every test and every fixture that
used it, those of subfolders' conftest.py included) is the leak check (tests/leaks.py): an
error there fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from sbxtest import REPO, Server, free_port  # noqa: F401 (re-exported for tests)

pytest.register_assert_rewrite("leaks")  # imported only by a session that uses the server

_servers: list[Server] = []  # the session's server, once started
# the leak check with the module and session teardowns before it (pytest-timeout)
LEAK_CHECK_TIMEOUT_S = 300


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """The session's last teardown runs the leak check: give it its own timeout rather than
    what is left of the last test's."""
    if nextitem is not None or not _servers or not item.config.pluginmanager.hasplugin("timeout"):
        return
    from pytest_timeout import get_env_settings

    settings = get_env_settings(item.config)
    if not settings.timeout:  # timeouts are off (--timeout=0): keep them off
        return
    hook = item.config.pluginmanager.hook
    hook.pytest_timeout_cancel_timer(item=item)
    hook.pytest_timeout_set_timer(item=item, settings=settings._replace(
        timeout=LEAK_CHECK_TIMEOUT_S, func_only=False))


@pytest.fixture(scope="session")
def server(request):
    if not shutil.which("runsc"):
        pytest.fail("runsc is not installed: run `apt-get install runsc` (see .ci/run)")
    home = tempfile.mkdtemp(prefix="sbx-t-", dir="/tmp")
    srv = Server(home)
    try:
        srv.start()
        os.environ["SBX_URL"] = srv.url
        os.environ["SBX_TOKEN"] = srv.token
        # build (or unpack) the base image once, before any test times itself
        with srv.api() as c:
            r = c.post("/v1/sandboxes", json={}, timeout=900)
            assert r.status_code == 201, r.text
            c.delete(f"/v1/sandboxes/{r.json()['sandbox_id']}")
        _servers.append(srv)
        yield srv
        # every test and fixture that used the server is done: the leak check (it stops the
        # server); not after -x/--maxfail stopped the run, which has failed already
        session = request.session
        if not (session.shouldfail or session.shouldstop):
            import leaks

            leaks.check_session_end(srv)
    finally:
        _servers.clear()
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
