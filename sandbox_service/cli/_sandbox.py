"""`sbx sandbox ...`: create, ls, get, exec, rm (public layer; must not import the server).

Everything goes through the SDK (`import sandbox_service`), over HTTP/WebSocket.
`exec` streams the command's stdout/stderr bytes to this process's stdout/stderr as they
arrive, forwards piped stdin, and exits with the command's exit code (124 on timeout).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

import click

from ..wire import errors as E
from ._common import SbxGroup, format_age, image_for, parse_pairs, print_json, stdin_is_tty, table

# the server sends the codes (runtimes/agent/sbxagent/exits.py); these only stand in for
# an error that lacks one
EXIT_TIMEOUT = 124
EXIT_OOM = 137
EXIT_BROKEN_PIPE = 141
GRACE_S = 3.0


def _sdk() -> Any:
    import sandbox_service

    return sandbox_service


@click.group(cls=SbxGroup)
def sandbox() -> None:
    """Create, list, run commands in and terminate sandboxes."""


@sandbox.command("create")
@click.option("--image", default="debian_slim", show_default=True, help="image name or id (im-...)")
@click.option("--timeout", default=300.0, show_default=True, type=float,
              help="maximum lifetime in seconds")
@click.option("--idle-timeout", type=float, default=None, help="terminate after this many idle seconds")
@click.option("--cpu", type=float, default=None, help="CPU cores (quota)")
@click.option("--memory", type=int, default=None, help="memory limit in MiB")
@click.option("--workdir", default=None, help="working directory inside the sandbox")
@click.option("--tag", "tags", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="tag (repeatable)")
@click.option("--env", "env", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="environment variable (repeatable)")
@click.option("--name", default=None, help="a unique name for the sandbox")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
              help="expose this port through the service's proxy (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the sandbox's info as JSON")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def create(image: str, timeout: float, idle_timeout: float | None, cpu: float | None,
           memory: int | None, workdir: str | None, tags: dict[str, str], env: dict[str, str],
           name: str | None, ports: tuple[int, ...], as_json: bool,
           command: tuple[str, ...]) -> None:
    """Create a sandbox and print its id. With `-- CMD ARGS...` that command is its main
    command, and the sandbox ends when it exits."""
    sbx = _sdk()
    sb = sbx.Sandbox.create(*command, image=image_for(image), timeout=timeout,
                            idle_timeout=idle_timeout, cpu=cpu, memory=memory, workdir=workdir,
                            tags=tags or None, env=env or None, name=name,
                            encrypted_ports=list(ports))
    if as_json:
        print_json(sb.info)
    else:
        click.echo(sb.object_id)


@sandbox.command("ls")
@click.option("--all", "-a", "show_all", is_flag=True, help="include finished sandboxes")
@click.option("--tag", "tags", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="only sandboxes with this tag (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def ls(show_all: bool, tags: dict[str, str], as_json: bool) -> None:
    """List running sandboxes (all of them with --all)."""
    sbx = _sdk()
    boxes = sbx.Sandbox.list(tags=tags or None, include_finished=show_all)
    infos = [b.info for b in boxes]
    if as_json:
        print_json([i.model_dump(mode="json") for i in infos])
        return
    now = time.time()
    rows = [[i.sandbox_id, i.name or "-", i.state if i.exit_code is None or i.state in
             ("creating", "running") else f"{i.state}({i.exit_code})",
             i.image, format_age(now - i.created_at),
             ",".join(f"{k}={v}" for k, v in sorted(i.tags.items())) or "-"]
            for i in sorted(infos, key=lambda i: i.created_at)]
    click.echo(table(["ID", "NAME", "STATE", "IMAGE", "AGE", "TAGS"], rows))


@sandbox.command("get")
@click.argument("sandbox_id")
def get(sandbox_id: str) -> None:
    """Show a sandbox's info as JSON."""
    print_json(_sdk().Sandbox.from_id(sandbox_id).info)


@sandbox.command("rm")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="SANDBOX_ID...")
def rm(sandbox_ids: tuple[str, ...]) -> None:
    """Terminate sandboxes (everything they had is destroyed)."""
    sbx = _sdk()
    failed = False
    for sid in sandbox_ids:
        try:
            sbx.Sandbox.from_id(sid).terminate()
            click.echo(sid)
        except E.SandboxError as e:
            click.echo(f"sbx: {sid}: {e.message}", err=True)
            failed = True
    if failed:
        raise click.exceptions.Exit(1)


@sandbox.command("exec")
@click.option("--timeout", type=float, default=None,
              help="kill the command after this many seconds (exit 124)")
@click.option("--workdir", "-w", default=None, help="working directory inside the sandbox")
@click.option("--env", "-e", "env", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="environment variable (repeatable)")
@click.argument("sandbox_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(timeout: float | None, workdir: str | None, env: dict[str, str], sandbox_id: str,
          command: tuple[str, ...]) -> None:
    """Run `-- CMD ARGS...` in a sandbox, streaming its output; exits with its exit code.
    Piped stdin is forwarded; a terminal's stdin is not (use `sbx shell` for that)."""
    code = asyncio.run(_exec(sandbox_id, list(command), timeout=timeout, workdir=workdir,
                             env=env or None))
    raise click.exceptions.Exit(code)


async def _exec(sandbox_id: str, argv: list[str], *, timeout: float | None,
                workdir: str | None, env: dict[str, str] | None) -> int:
    sbx = _sdk()
    sb = await sbx.Sandbox.from_id.aio(sandbox_id)
    p = await sb.exec.aio(*argv, timeout=timeout, workdir=workdir, env=env, text=False)
    loop = asyncio.get_running_loop()
    _start_stdin_feeder(p)
    task = asyncio.current_task()
    stop: list[int] = []

    def on_signal(signum: int) -> None:
        # Ctrl-C once: the command gets SIGINT. Ctrl-C again, SIGTERM or SIGHUP: this CLI is
        # asked to stop, so the command gets the signal, SIGKILL after a grace period, and
        # if even that does not end it, we leave anyway (the server kills a command whose
        # client went away).
        first = not stop
        stop.append(signum)
        if first and signum == signal.SIGINT:
            asyncio.ensure_future(p.send_signal.aio(int(signum)))
            return
        asyncio.ensure_future(p.send_signal.aio(int(signum) if first else int(signal.SIGKILL)))
        loop.call_later(GRACE_S, lambda: asyncio.ensure_future(p.kill.aio()))
        loop.call_later(GRACE_S + 5, lambda: task.cancel() if task else None)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for s in handled:
        loop.add_signal_handler(s, on_signal, s)
    broken_pipe = False
    try:
        async def pump(reader: Any, out: Any) -> None:
            nonlocal broken_pipe
            async for chunk in reader:
                if broken_pipe:
                    continue
                try:
                    out.write(chunk)
                    out.flush()
                except BrokenPipeError:
                    broken_pipe = True
                    await p.kill.aio()

        await asyncio.gather(pump(p.stdout, sys.stdout.buffer), pump(p.stderr, sys.stderr.buffer))
        try:
            code = await p.wait.aio()
        except E.ExecTimeoutError as e:
            click.echo(f"sbx: {e.message.replace('timeout=', '--timeout')}", err=True)
            return int(e.details.get("exit_code") or EXIT_TIMEOUT)
        except E.SandboxOOMError as e:
            click.echo(f"sbx: {e.message}", err=True)
            return int(e.details.get("exit_code") or EXIT_OOM)
    except asyncio.CancelledError:
        if not stop:
            raise
        click.echo("sbx: the command did not stop; left it to the server", err=True)
        return 128 + stop[0]
    finally:
        for s in handled:
            loop.remove_signal_handler(s)
    if broken_pipe:
        # keep Python from complaining when it flushes the closed stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return int(code)


def _start_stdin_feeder(p: Any) -> None:
    """Forward this process's stdin to the command when it is a pipe or a file; a terminal
    (or no stdin) gives the command an immediate EOF, like `docker exec` without -i."""
    stdin = p.stdin
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        fd = -1
    if fd < 0 or stdin_is_tty():
        stdin.write_eof()
        return

    def feed() -> None:
        try:
            while True:
                try:
                    data = os.read(fd, 256 * 1024)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                stdin.write(data)
                stdin.drain()  # backpressure: do not read ahead of what the server took
        except Exception:  # the command ended or the connection dropped: stop feeding
            return
        try:
            stdin.write_eof()
            stdin.drain()
        except Exception:
            pass

    threading.Thread(target=feed, name="sbx-stdin", daemon=True).start()
