"""FOR TESTS ONLY: the real FastAPI app (`create_app`) on the fake runtime and image store
(tests/fakes.py), served by uvicorn in a background thread on a free loopback port, with
its own temporary SBX_HOME. No root, runsc or debootstrap; starts in well under a second.

Fixtures (imported by tests/server/conftest.py and tests/sdk/conftest.py):
- `fake_server`: a FakeServer per test (url, token, home, runtime, images, api(),
  restart(), start_another());
- `make_fake_server`: a factory for servers with other Settings (policy=..., ...);
- `fake_sdk`: `fake_server` with SBX_URL/SBX_TOKEN pointing at it for this test only
  (monkeypatch), so the public SDK's default client talks to it; the real-server fixture's
  environment is restored after the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

import httpx
import pytest
import uvicorn
from fakes import FakeImageStore, FakeRuntime

START_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """One app on `home` at a fixed port; `restart()` stops it and serves a new app on the
    same home, port and runtime (a new FakeRuntime with `fresh_runtime=True`: sandboxes
    the old one ran are gone, as after a host reboot)."""

    def __init__(self, home: str, *, gpus=None, **settings):
        self.home = home
        self.gpus = gpus  # a fake NVML inventory (runtimes.Nvml), None for the host's
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.runtime = FakeRuntime(os.path.join(home, "fake-runtime"))
        self.images = FakeImageStore(os.path.join(home, "fake-images"))
        self._runtimes = [self.runtime]
        self.app = None
        self.token = ""
        self._uv: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeServer:
        from sandbox_service.server import Settings, create_app

        kw = {"home": self.home, "port": self.port, "warm_pool": 0,
              "monitor_interval_s": 0.05, "collector_interval_s": 3600.0}
        kw.update(self.settings)
        self.app = create_app(Settings(**kw), runtime=self.runtime, images=self.images,
                              gpus=self.gpus)
        self.token = self.app.state.token
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                log_level="warning", lifespan="on", ws="websockets-sansio"
                                if _has_sansio() else "websockets")
        self._uv = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uv.run, name=f"fake-sbx-{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._uv is not None:
            self._uv.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the fake server did not stop"
        self._uv = self._thread = None

    def restart(self, *, fresh_runtime: bool = False) -> None:
        self.stop()
        if fresh_runtime:
            self.runtime = FakeRuntime(os.path.join(self.home, f"fake-runtime-{len(self._runtimes)}"))
            self._runtimes.append(self.runtime)
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            for rt in self._runtimes:
                rt.destroy_all()

    def api(self, token: str | None = None) -> httpx.Client:
        """An httpx client with the admin token (or `token`; "" sends none)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def _has_sansio() -> bool:
    try:
        from uvicorn.protocols.websockets import websockets_sansio_impl  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture
def make_fake_server():
    """`make_fake_server(**settings)` -> a started FakeServer; all are closed after the test."""
    made: list[tuple[FakeServer, str]] = []

    def make(**settings) -> FakeServer:
        home = tempfile.mkdtemp(prefix="sbx-fake-")
        srv = FakeServer(home, **settings)
        made.append((srv, home))
        return srv.start()

    yield make
    for srv, home in made:
        try:
            srv.close()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fake_server(make_fake_server) -> FakeServer:
    return make_fake_server()


@pytest.fixture
def fake_sdk(fake_server, monkeypatch) -> FakeServer:
    monkeypatch.setenv("SBX_URL", fake_server.url)
    monkeypatch.setenv("SBX_TOKEN", fake_server.token)
    return fake_server
