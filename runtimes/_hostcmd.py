"""The one host-command runner (runtimes layer): every program the server runs on the host
(runsc, mount, mkfs.ext4, losetup, ip, nft, tar, cp, skopeo...) goes through `run_command`.

- an argument list, never a shell string;
- logged (debug: the command, its exit code and duration; a timeout at warning);
- a timeout (`timeout_s`; None only for commands bounded another way);
- killed and reaped when it times out or the caller is cancelled: no child outlives the
  coroutine that started it, and none is left a zombie;
- never blocks the event loop.

Commands whose output is streamed while they run (debootstrap, skopeo, `runsc exec`) use
`start_command` / `stop_command` (or `spawn`, the two as a block): the same logging, and
one kill policy (its process group gets SIGTERM, then after a grace period SIGKILL, and
is reaped). `run_sync` is `run_command` for code that already runs in a worker thread.

Errors are `HostCommandError` (exit code, the tail of its output, or "timed out"); callers
translate them into their layer's error where the message needs more context.
Must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from typing import AsyncIterator, Sequence

from ._errors import RuntimeFault

log = logging.getLogger("sbx.hostcmd")

OUTPUT_TAIL = 300  # characters of output an error message quotes


@dataclasses.dataclass
class CommandResult:
    argv: list[str]
    returncode: int | None  # None: it timed out and was killed
    stdout: bytes
    stderr: bytes

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class HostCommandError(RuntimeFault):
    """A host command failed or ran out of time; the message names it and quotes its output."""

    def __init__(self, result: CommandResult, timeout_s: float | None = None):
        self.result = result
        name = " ".join(result.argv[:4])
        if result.timed_out:
            msg = f"{name} did not finish in {timeout_s:g}s and was killed"
        else:
            tail = (result.err or result.out).strip()[-OUTPUT_TAIL:]
            msg = f"{name} exited with code {result.returncode}" + (f": {tail}" if tail else "")
        super().__init__(msg)

    @property
    def returncode(self) -> int | None:
        return self.result.returncode


async def run_command(argv: Sequence[str], *, check: bool = True, stdin: bytes | None = None,
                      timeout_s: float | None = 60.0, merge_stderr: bool = False,
                      stderr_path: str | None = None, new_session: bool = False,
                      env: dict[str, str] | None = None) -> CommandResult:
    """Run `argv` to completion and return its output.

    `merge_stderr`: stderr goes to stdout (one stream, in order). `stderr_path`: stdout is
    discarded and stderr appended to that file (0600); a detached child (`runsc run
    --detach`) inherits it, where a pipe would never reach EOF. `check`: raise
    HostCommandError on a non-zero exit or a timeout (else the result says so)."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    err_f = os.fdopen(os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                              0o600), "ab") if stderr_path else None
    pipe = asyncio.subprocess.PIPE
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL if err_f else pipe,
            stderr=err_f if err_f else (asyncio.subprocess.STDOUT if merge_stderr else pipe),
            start_new_session=new_session, env=env)
    finally:
        if err_f:
            err_f.close()
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
        rc: int | None = proc.returncode
    except asyncio.TimeoutError:
        await _kill(proc)
        out, err, rc = b"", b"", None
        log.warning("%s did not finish in %gs: killed", " ".join(argv[:4]), timeout_s)
    except BaseException:  # cancelled: the command must not go on after we return
        await _kill(proc)
        raise
    result = CommandResult(argv, rc, out or b"", err or b"")
    log.debug("%s -> %s in %.0f ms", " ".join(argv[:6]), rc, (time.monotonic() - t0) * 1000)
    if check and rc != 0:
        raise HostCommandError(result, timeout_s)
    return result


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await asyncio.shield(proc.wait())


async def start_command(argv: Sequence[str], *, stdin: bool = False, merge_stderr: bool = False,
                        env: dict[str, str] | None = None, cwd: str | None = None
                        ) -> asyncio.subprocess.Process:
    """Start `argv` in its own session (so `stop_command` reaches its children) with piped
    stdout (and stderr, or stderr merged into stdout). FileNotFoundError if it is not
    installed."""
    argv = [str(a) for a in argv]
    log.debug("starting %s", " ".join(argv[:6]))
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(
        *argv, stdin=pipe if stdin else asyncio.subprocess.DEVNULL, stdout=pipe,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else pipe, env=env, cwd=cwd,
        start_new_session=True)


async def stop_command(proc: asyncio.subprocess.Process, *, grace_s: float = 0.0) -> None:
    """End a started command and everything in its process group: SIGTERM and up to
    `grace_s` to exit (0: straight to SIGKILL), then SIGKILL to the group (children may
    outlive their leader), then reap. Safe to call twice, and when it already exited."""
    if proc.returncode is None and grace_s > 0:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.shield(asyncio.wait_for(proc.wait(), grace_s))
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            _signal_group(proc.pid, signal.SIGKILL)
            raise
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        try:
            await asyncio.shield(asyncio.wait_for(proc.wait(), 5.0))
        except asyncio.TimeoutError:
            log.error("pid %d did not exit after SIGKILL", proc.pid)


@contextlib.asynccontextmanager
async def spawn(argv: Sequence[str], *, grace_s: float = 0.0, **kw) -> AsyncIterator[
        asyncio.subprocess.Process]:
    """`start_command` for the block; whatever way the block ends, `stop_command`."""
    proc = await start_command(argv, **kw)
    try:
        yield proc
    finally:
        await stop_command(proc, grace_s=grace_s)


def run_sync(argv: Sequence[str], *, check: bool = True, timeout_s: float = 60.0) -> CommandResult:
    """`run_command` for code already on a worker thread (subprocess kills it on timeout)."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False,
                           stdin=subprocess.DEVNULL)
        result = CommandResult(argv, r.returncode, r.stdout, r.stderr)
    except subprocess.TimeoutExpired as e:
        log.warning("%s did not finish in %gs: killed", " ".join(argv[:4]), timeout_s)
        result = CommandResult(argv, None, e.stdout or b"", e.stderr or b"")
    log.debug("%s -> %s in %.0f ms", " ".join(argv[:6]), result.returncode,
              (time.monotonic() - t0) * 1000)
    if check and result.returncode != 0:
        raise HostCommandError(result, timeout_s)
    return result


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
