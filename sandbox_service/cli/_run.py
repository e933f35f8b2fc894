"""`sbx run FILE[::NAME] [--arg value ...]` and `sbx deploy FILE` (public layer; must not
import the server): Modal's `modal run` and `modal deploy`.

The file is imported as a module named after it (its directory first on sys.path), its
`App` found, and:
- `sbx run` starts the app for the run (its containers' output streams here, image builds
  show their progress), calls the local entrypoint, or the function / `Class.method`
  named after `::` with `.remote(...)`, with the options after the file as its arguments
  (`--x 3 --name a --flag/--no-flag`, converted by the parameters' annotations), and
  stops the app; Ctrl-C stops it cleanly.
- `sbx deploy` deploys it under its name (a redeploy replaces the functions without
  dropping calls in flight) and prints the function ids.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from typing import Any, Callable

import click

from ._common import SbxGroup, fail


def load_module(path: str) -> Any:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        fail(f"{path}: no such file", 2)
    name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module failed to import: show its frames only
        import traceback

        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        shown = "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))
        click.echo(shown.rstrip(), err=True)
        fail(f"{path} raised {type(e).__name__} while it was imported (above)", 1)
    return module


def find_app(module: Any) -> Any:
    from .. import App

    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    if not apps:
        fail(f"{module.__file__} defines no App: write app = modal.App('name') at module level")
    if len(apps) > 1:
        if "app" in apps:
            return apps["app"]
        fail(f"{module.__file__} defines several apps ({', '.join(sorted(apps))}): name one "
             "`app`")
    return next(iter(apps.values()))


def _convert(param: inspect.Parameter, text: str) -> Any:
    ann = param.annotation
    if isinstance(ann, str):
        ann = {"int": int, "float": float, "str": str, "bool": bool}.get(ann, str)
    if ann is inspect.Parameter.empty and param.default is not inspect.Parameter.empty \
            and param.default is not None:
        ann = type(param.default)
    if ann in (int, float):
        try:
            return ann(text)
        except ValueError:
            fail(f"--{param.name} takes {ann.__name__}, not {text!r}", 2)
    return text


def parse_args(fn: Callable, args: list[str]) -> dict[str, Any]:
    """`--name value` / `--name=value` / `--flag` / `--no-flag` for `fn`'s parameters."""
    params = inspect.signature(fn).parameters
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            fail(f"unexpected argument {arg!r}: pass arguments as --name value", 2)
        key, eq, value = arg[2:].partition("=")
        neg = key.startswith("no-") and key[3:].replace("-", "_") in params
        pname = (key[3:] if neg else key).replace("-", "_")
        p = params.get(pname)
        if p is None:
            fail(f"{getattr(fn, '__name__', 'the function')} has no parameter {pname!r}; it "
                 f"takes {', '.join('--' + n for n in params) or 'no arguments'}", 2)
        is_bool = p.annotation in (bool, "bool") or isinstance(p.default, bool)
        if is_bool and not eq:
            out[pname] = not neg
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                fail(f"--{key} needs a value", 2)
            value = args[i + 1]
            i += 1
        out[pname] = (value.lower() in ("1", "true", "yes")) if is_bool else _convert(p, value)
        i += 1
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in out]
    if missing:
        fail(f"missing {', '.join('--' + n for n in missing)}", 2)
    return out


def _target(app: Any, name: str | None) -> tuple[str, Any]:
    impl = app._impl
    if name is None:
        if len(impl._entrypoints) == 1:
            return "entrypoint", next(iter(impl._entrypoints.values()))
        if not impl._entrypoints and _web_functions(impl):  # Modal's `modal serve`
            return "serve", None
        if not impl._entrypoints and len(impl._functions) == 1 and not impl._classes:
            return "function", next(iter(app.registered_functions.values()))
        choices = sorted([*impl._entrypoints, *impl._functions])
        fail(f"name what to run: FILE::NAME, one of {', '.join(choices) or '(nothing)'}", 2)
    if name in impl._entrypoints:
        return "entrypoint", impl._entrypoints[name]
    if name in impl._functions:
        return "function", app.registered_functions[name]
    cls_name, _, meth = name.partition(".")
    if cls_name in impl._classes and meth:
        return "method", (app.registered_classes[cls_name], meth)
    fail(f"no local entrypoint, function or Class.method named {name!r} in the app", 2)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("target")
@click.option("--quiet", "-q", is_flag=True, help="do not stream the containers' output")
@click.pass_context
def run(ctx: click.Context, target: str, quiet: bool) -> None:
    """Run FILE[::NAME]: a local entrypoint, a function or a Class.method, with --arg value
    options as its arguments; the app's containers stop when it returns (or on Ctrl-C)."""
    from .. import enable_output

    path, _, name = target.partition("::")
    module = load_module(path)
    app = find_app(module)
    kind, obj = _target(app, name or None)
    fn = obj if kind != "method" else obj[0]._impl._user_cls.__dict__[obj[1]].raw_f
    raw = obj.get_raw_f() if kind == "function" else fn
    kwargs = parse_args(raw, list(ctx.args)) if kind != "serve" else {}
    if kind == "method":
        kwargs.pop("self", None)
    status = _Status(quiet)
    try:
        with enable_output(), status.during("starting the app"):
            run_ctx = app.run(show_output=not quiet)
            run_ctx.__enter__()
    except KeyboardInterrupt:
        click.echo("\nsbx: interrupted", err=True)
        raise click.exceptions.Exit(130) from None
    for tag in sorted(_web_functions(app._impl)):
        target = app._impl._functions.get(tag) or app._impl._classes[tag]
        click.echo(f"web endpoint {tag}: {target._web_url}", err=True)
    interrupted = False
    try:
        result = _call(kind, obj, kwargs)
        if result is not None and kind != "entrypoint":
            click.echo(repr(result))
    except KeyboardInterrupt:
        interrupted = True
        click.echo("\nsbx: interrupted: stopping the app", err=True)
    finally:  # the app stops however the run ends: its containers go, its calls end
        try:
            run_ctx.__exit__(None, None, None)
        except KeyboardInterrupt:
            pass
    if interrupted:
        raise click.exceptions.Exit(130)


def _web_functions(impl: Any) -> list[str]:
    return ([t for t, f in impl._functions.items() if f._options.get("web")]
            + [t for t, c in impl._classes.items() if c._web_attr])


def _call(kind: str, obj: Any, kwargs: dict[str, Any]) -> Any:
    if kind == "serve":  # the endpoints serve until Ctrl-C
        click.echo("serving the web endpoints above; Ctrl-C stops the app", err=True)
        import time

        while True:
            time.sleep(3600)
    if kind == "entrypoint":
        result = obj(**kwargs)
        if inspect.iscoroutine(result):
            import asyncio

            result = asyncio.run(result)
        return result
    if kind == "function":
        if obj._impl._is_generator:
            for item in obj.remote_gen(**kwargs):
                click.echo(repr(item))
            return None
        return obj.remote(**kwargs)
    cls, meth = obj
    return getattr(cls(), meth).remote(**kwargs)


class _Status:
    """A rich spinner on stderr while the app starts (image builds print above it)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def during(self, what: str) -> Any:
        import contextlib

        if self.quiet or not sys.stderr.isatty():
            return contextlib.nullcontext()
        from rich.console import Console

        return Console(stderr=True).status(f"[bold]{what}[/bold] (building images as needed)...")


@click.command()
@click.argument("path")
@click.option("--name", default=None, help="deploy under this name (default: the App's name)")
def deploy(path: str, name: str | None) -> None:
    """Deploy the App in FILE (a redeploy replaces its functions; calls in flight finish)."""
    from .. import enable_output

    module = load_module(path)
    app = find_app(module)
    if not (name or app.name):
        fail("a deployed app needs a name: App('my-app'), or --name", 2)
    with enable_output(), _Status(False).during("deploying"):
        app.deploy(name=name)
    impl = app._impl
    click.echo(f"deployed app {impl.name} ({impl.app_id})")
    for tag, target in sorted({**impl._functions, **impl._classes}.items()):
        url = getattr(target, "_web_url", None)
        click.echo(f"  {tag}: {target._function_id}" + (f"  {url}" if url else ""))
    click.echo(f"call them with Function.from_name({impl.name!r}, NAME); stop with "
               f"`sbx app stop {impl.name}`")


def register(main: SbxGroup) -> None:
    main.add_command(run)
    main.add_command(deploy)
