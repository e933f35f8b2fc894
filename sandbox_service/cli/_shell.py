"""`sbx shell`: an interactive terminal in a sandbox (public layer; must not import the
server).

The local terminal goes into raw mode (restored on every way out); keystrokes go to a
`pty=True` process in the sandbox as bytes, its output comes back as bytes, window size
changes (SIGWINCH) are forwarded, and `sbx shell` exits with the remote exit code. A fresh
sandbox is terminated when the shell exits; an existing one given by id is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from typing import Any

import click

from ..wire import errors as E
from ..wire import is_id
from ._common import DashDashCommand, fail, image_for, parse_pairs, stdin_is_tty

DEFAULT_SHELL = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"]


@click.command(cls=DashDashCommand)
@click.option("--image", default="debian_slim", show_default=True,
              help="image of a fresh sandbox (name or im-...)")
@click.option("--cpu", type=float, default=None, help="CPU cores of a fresh sandbox")
@click.option("--memory", type=int, default=None, help="memory limit (MiB) of a fresh sandbox")
@click.option("--timeout", type=float, default=3600.0, show_default=True,
              help="maximum lifetime (s) of a fresh sandbox")
@click.option("--workdir", "-w", default=None, help="working directory of the shell")
@click.option("--env", "-e", "env", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="environment variable (repeatable)")
@click.argument("sandbox_id", required=False)
@click.pass_context
def shell(ctx: click.Context, image: str, cpu: float | None, memory: int | None, timeout: float,
          workdir: str | None, env: dict[str, str], sandbox_id: str | None) -> None:
    """Open an interactive shell in a fresh sandbox (terminated on exit), or in SANDBOX_ID
    (left running). `sbx shell [SANDBOX_ID] -- CMD ARGS...` runs CMD instead of bash/sh."""
    argv = ctx.meta.get("sbx_argv") or []
    if sandbox_id is not None and not is_id("sandbox", sandbox_id):
        raise click.UsageError(f"{sandbox_id!r} is not a sandbox id (sb-...); to run a command "
                               "put it after `--`: sbx shell -- CMD ARGS...", ctx=ctx)
    if not stdin_is_tty():
        fail("sbx shell needs a terminal, and stdin is not one; to run a command with piped "
             "input use `sbx sandbox exec SANDBOX_ID -- CMD ARGS...`")
    code = asyncio.run(_shell(sandbox_id, argv or DEFAULT_SHELL, image=image, cpu=cpu,
                              memory=memory, timeout=timeout, workdir=workdir, env=env))
    raise click.exceptions.Exit(code)


async def _shell(sandbox_id: str | None, argv: list[str], *, image: str, cpu: float | None,
                 memory: int | None, timeout: float, workdir: str | None,
                 env: dict[str, str]) -> int:
    import sandbox_service as sbx

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    got: list[int] = []

    def on_signal(signum: int) -> None:  # terminal closed or killed: clean up, then leave
        got.append(signum)
        if task is not None:
            task.cancel()

    stops = (signal.SIGHUP, signal.SIGTERM)
    for s in stops:
        loop.add_signal_handler(s, on_signal, s)
    owned = None
    try:
        if sandbox_id is None:
            owned = sb = await sbx.Sandbox.create.aio(image=image_for(image), cpu=cpu,
                                                      memory=memory, timeout=timeout)
        else:
            sb = await sbx.Sandbox.from_id.aio(sandbox_id)
        return await _attach(sb, argv, workdir=workdir, env=env)
    except asyncio.CancelledError:
        if not got:
            raise
        return 128 + got[0]
    finally:
        for s in stops:
            loop.remove_signal_handler(s)
        if owned is not None:
            with contextlib.suppress(E.SandboxError, asyncio.CancelledError):
                await owned.terminate.aio()


def _term_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    if size.lines <= 0 or size.columns <= 0:  # a pty nobody sized
        return 24, 80
    return size.lines, size.columns


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]


async def _attach(sb: Any, argv: list[str], *, workdir: str | None, env: dict[str, str]) -> int:
    fd = sys.stdin.fileno()
    remote_env = {"TERM": os.environ.get("TERM") or "xterm-256color"}
    remote_env.update(env)
    p = await sb.exec.aio(*argv, pty=True, text=False, workdir=workdir, env=remote_env)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    def on_input() -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        inbox.put_nowait(data or None)

    async def forward_input() -> None:
        while True:
            data = await inbox.get()
            if data is None:
                p.stdin.write_eof()
                await p.stdin.drain.aio()
                return
            p.stdin.write(data)
            await p.stdin.drain.aio()

    def on_winch() -> None:
        rows, cols = _term_size(fd)
        asyncio.ensure_future(p.resize.aio(rows, cols))

    async def pump(reader: Any, out_fd: int) -> None:
        async for chunk in reader:
            _write_all(out_fd, chunk)

    saved = termios.tcgetattr(fd)
    forwarder = None
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
        loop.add_signal_handler(signal.SIGWINCH, on_winch)
        rows, cols = _term_size(fd)
        await p.resize.aio(rows, cols)
        loop.add_reader(fd, on_input)
        forwarder = asyncio.ensure_future(forward_input())
        await asyncio.gather(pump(p.stdout, sys.stdout.fileno()), pump(p.stderr, sys.stderr.fileno()))
        return int(await p.wait.aio())
    finally:
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGWINCH)
        if forwarder is not None:
            forwarder.cancel()
        with contextlib.suppress(termios.error, OSError):  # the terminal may be gone (SIGHUP)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if p.poll() is None:  # we are leaving early (signal, error): do not leave it running
            with contextlib.suppress(Exception):
                await p.kill.aio()
