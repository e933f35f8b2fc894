"""`runsc exec` for images without python3, where no agent can run (runtimes layer).

Slower (~30 ms per exec) and without file operations, but exit codes, separate streams
and stdin work. Signals go through `runsc kill --pid` using the in-sandbox pid that
`--internal-pid-file` reports. Must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile

from .._base import ExecSpec, ExecStream, ExitFrame
from .._hostcmd import start_command, stop_command
from ..agent.sbxagent import exits as exit_codes
from ._runsc import Runsc

CHUNK = 64 * 1024


class RunscExec(ExecStream):
    def __init__(self, runsc: Runsc, cid: str, proc: asyncio.subprocess.Process,
                 pidfile: str, timeout_s: float | None):
        self._runsc, self._cid, self._proc = runsc, cid, proc
        self._pidfile = pidfile
        self._timeout_s = timeout_s
        self.pid = None

    @classmethod
    async def start(cls, runsc: Runsc, cid: str, spec: ExecSpec) -> "RunscExec":
        fd, pidfile = tempfile.mkstemp(prefix="sbx-pid-")
        os.close(fd)
        os.unlink(pidfile)
        user = f"{spec.uid or 0}:{spec.gid or 0}"  # runsc exec ignores process.user
        args = ["exec", "--user", user, "--internal-pid-file", pidfile]
        if spec.cwd:
            args += ["--cwd", spec.cwd]
        for k, v in (spec.env or {}).items():
            args += ["--env", f"{k}={v}"]
        proc = await start_command(runsc.argv(*args, cid, *spec.argv, cid=cid), stdin=True)
        return cls(runsc, cid, proc, pidfile, spec.timeout_s)

    async def events(self):
        queue: asyncio.Queue = asyncio.Queue(maxsize=16)

        async def pump(stream, name):
            while True:
                data = await stream.read(CHUNK)
                if not data:
                    break
                await queue.put((name, data))
            await queue.put(None)

        tasks = [asyncio.create_task(pump(self._proc.stdout, "stdout")),
                 asyncio.create_task(pump(self._proc.stderr, "stderr"))]
        loop = asyncio.get_running_loop()
        deadline = None if not self._timeout_s else loop.time() + self._timeout_s
        timed_out, open_streams = False, 2
        try:
            while open_streams:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    timed_out = True
                    await self.send_signal(signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.kill()
                    break
                if item is None:
                    open_streams -= 1
                else:
                    yield item
            rc = await self._proc.wait()
        finally:
            for t in tasks:
                t.cancel()
            try:
                os.unlink(self._pidfile)
            except OSError:
                pass
        if timed_out:
            yield ExitFrame(exit_codes.TIMEOUT, True, signal.SIGKILL)
        elif rc < 0:
            code, sig = exit_codes.of_returncode(rc)
            yield ExitFrame(code, False, sig)
        else:
            yield ExitFrame(rc, False, rc - 128 if rc > 128 else None)

    async def write_stdin(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def close_stdin(self) -> None:
        try:
            self._proc.stdin.close()
        except (ConnectionError, RuntimeError):
            pass

    async def send_signal(self, signum: int) -> None:
        try:
            with open(self._pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        await self._runsc.call("kill", "--pid", str(pid), self._cid, str(int(signum)), cid=self._cid,
                               timeout=10, check=False)

    async def resize(self, rows: int, cols: int) -> None:
        return None

    async def close(self) -> None:
        if self._proc.returncode is None:
            await self.send_signal(signal.SIGKILL)
            await stop_command(self._proc)
