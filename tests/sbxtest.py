"""The real server the tests (and benchmarks) run against: `sbx serve` on a free port with
its own SBX_HOME and real runsc. A plain module (not conftest) so that test modules and
benchmarks can import it by a name no other conftest.py shadows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("SBX_IMAGE_CACHE", "/var/cache/sandbox-service/images")
# the registry tests run a real registry on a loopback port
os.environ.setdefault("SBX_PRIVATE_REGISTRIES", "127.0.0.1:*")
# volume tests fill the quota of their principal: small, so that is quick
os.environ.setdefault("SBX_VOLUME_QUOTA_MIB", "256")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real server process. `restart(kill=True)` simulates a crash."""

    def __init__(self, home: str, *, product_defaults: bool = False):
        self.home = home
        self.product_defaults = product_defaults  # benchmarks: no test-only settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(home, "server.log")

    @property
    def token(self) -> str:
        with open(os.path.join(self.home, "token")) as f:
            return f.read().strip()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SBX_HOME=self.home, SBX_URL=self.url)
        env.pop("SBX_TOKEN", None)
        # the default profile's pool only: no pool boots in the background for every
        # profile a test touches (test_warm_pool.py's `demand` server has them)
        if not self.product_defaults:
            env.setdefault("SBX_WARM_POOL_MAX", "2")
        return env

    def start(self, timeout_s: float = 900) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_service.cli", "serve", "--port", str(self.port),
             "--log-level", "info"],
            env=self.env(), stdout=log, stderr=log, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.tail()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                            timeout=120)


@contextlib.contextmanager
def own_server(prefix: str, **env: str):
    """A real server of a test module's own, with `env` added to its environment; the SDK
    points at it (SBX_URL, SBX_TOKEN) until the block ends, then at what it did before."""
    home = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    srv = Server(home)
    base_env = srv.env
    srv.env = lambda: {**base_env(), **env}
    saved = {k: os.environ.get(k) for k in ("SBX_URL", "SBX_TOKEN")}
    try:
        srv.start()
        os.environ["SBX_URL"], os.environ["SBX_TOKEN"] = srv.url, srv.token
        yield srv
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)
