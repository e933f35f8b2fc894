"""Shared pieces of the `sbx` command (public layer; must not import the server).

Every SDK error (`SandboxError`) becomes one line `sbx: <message>` on stderr and exit code 1,
never a traceback; click's usage errors keep exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from ..wire import errors as E

EXIT_ERROR = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `sbx: message` to stderr and exit with `code`."""
    click.echo(f"sbx: {message}", err=True)
    raise click.exceptions.Exit(code)


def error_message(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    return str(msg)


class SbxGroup(click.Group):
    """A click group whose commands report SDK errors as `sbx: ...` (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except E.SandboxError as e:
            click.echo(f"sbx: {error_message(e)}", err=True)
            raise click.exceptions.Exit(EXIT_ERROR) from None


class DashDashCommand(click.Command):
    """A command whose arguments after the first `--` are a command line, kept verbatim in
    `ctx.meta["sbx_argv"]` (so an optional positional before `--` stays unambiguous)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["sbx_argv"] = list(args[i + 1:])
            args = args[:i]
        else:
            ctx.meta["sbx_argv"] = []
        return super().parse_args(ctx, args)


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """click callback: repeated `KEY=VALUE` options into a dict."""
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} must look like KEY=VALUE", ctx=ctx, param=param)
        out[key] = value
    return out


def image_for(ref: str) -> Any:
    """An `Image` for a name (`debian_slim`) or an image id (`im-...`)."""
    from .. import _image
    from ..wire import is_id

    if ref in ("debian_slim", "debian-slim"):
        return _image.Image.debian_slim()
    if is_id("image", ref):
        return _image.Image.from_id(ref)
    return _image.Image(ref)  # a named image: the server says whether it exists


def print_json(obj: Any) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s < 36000 else f"{s // 3600}h"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def api_call(method: str, path: str, **kw: Any) -> Any:
    """One REST request to the server with the SDK's client (SBX_URL, SBX_TOKEN); its
    typed errors reach the CLI's error handler."""
    from .._client import default_client
    from .._sync import LOOP

    async def go() -> Any:
        return await default_client().request(method, path, **kw)
    return LOOP.run(go())
