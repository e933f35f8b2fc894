"""`sbx app ls|logs|stop|history` and `sbx container ls|logs|exec|stop` (public layer; must
not import the server): apps with functions, and the containers that serve them.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

import click

from ._common import SbxGroup, api_call, fail, format_age, print_json, table


def resolve_app(ref: str) -> dict[str, Any]:
    """An app summary by id (`ap-...`) or by the name of a deployed (or running) app."""
    apps = api_call("GET", "/v1/apps")["apps"]
    if ref.startswith("ap-"):
        for a in apps:
            if a["app_id"] == ref:
                return a
        return api_call("GET", f"/v1/apps/{ref}")
    named = [a for a in apps if a["name"] == ref and a["state"] != "stopped"]
    named.sort(key=lambda a: (a["state"] != "deployed", -a["created_at"]))
    if not named:
        fail(f"no running or deployed app named {ref!r}: `sbx app ls` lists them")
    return named[0]


@click.group(cls=SbxGroup)
def app() -> None:
    """Apps of functions: list, follow logs, stop, history."""


@app.command("ls")
@click.option("--all", "show_all", is_flag=True, help="stopped apps too")
@click.option("--json", "as_json", is_flag=True)
def app_ls(show_all: bool, as_json: bool) -> None:
    """List apps with functions (running, deployed; --all: stopped too)."""
    apps = [a for a in api_call("GET", "/v1/apps")["apps"]
            if show_all or a["state"] != "stopped"]
    if as_json:
        print_json(apps)
        return
    now = time.time()
    click.echo(table(["APP ID", "NAME", "STATE", "VERSION", "FUNCTIONS", "CONTAINERS", "AGE",
                      "NEXT RUN"],
                     [[a["app_id"], a["name"] or "-", a["state"], str(a["version"]),
                       ",".join(a["functions"]) or "-", str(a["containers"]),
                       format_age(now - a["created_at"]), _next_run(a, now)] for a in apps]))


def _next_run(app: dict, now: float) -> str:
    """The soonest scheduled run: 'in 4m (nightly)', or '-'."""
    runs = app.get("next_runs") or {}
    if not runs:
        return "-"
    name, at = min(runs.items(), key=lambda kv: kv[1])
    return f"in {format_age(max(0.0, at - now))} ({name})"


@app.command("stop")
@click.argument("ref")
def app_stop(ref: str) -> None:
    """Stop an app (name or id): its containers end, its queued calls are cancelled."""
    a = resolve_app(ref)
    out = api_call("POST", f"/v1/apps/{a['app_id']}/stop")
    click.echo(f"stopped {out['name'] or out['app_id']} ({out['app_id']})")


@app.command("history")
@click.argument("ref")
def app_history(ref: str) -> None:
    """The deployments of an app."""
    a = resolve_app(ref)
    hist = api_call("GET", f"/v1/apps/{a['app_id']}/history")["history"]
    rows = []
    for h in hist:
        when = h.get("deployed_at") or h.get("stopped_at") or 0
        rows.append([str(h["version"]), "stopped" if "stopped_at" in h else "deployed",
                     datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S"),
                     ",".join(h.get("functions", [])) or "-"])
    click.echo(table(["VERSION", "EVENT", "AT", "FUNCTIONS"], rows))


@app.command("logs")
@click.argument("ref")
@click.option("--follow", "-f", is_flag=True, help="keep printing new output")
def app_logs(ref: str, follow: bool) -> None:
    """The recent output of an app's containers (stdout and stderr)."""
    a = resolve_app(ref)
    seq = 0
    while True:
        page = api_call("GET", f"/v1/apps/{a['app_id']}/logs",
                        params={"after_seq": seq, "timeout_s": 20 if follow else 0})
        for e in page["entries"]:
            out = sys.stderr if e["stream"] == "stderr" else sys.stdout
            out.write(e["data"])
            out.flush()
        seq = page["next_seq"]
        if not follow:
            return


@click.group(cls=SbxGroup)
def container() -> None:
    """The containers that serve functions: list, logs, exec, stop."""


@container.command("ls")
@click.option("--app", "app_ref", default=None, help="only this app's (name or id)")
@click.option("--json", "as_json", is_flag=True)
def container_ls(app_ref: str | None, as_json: bool) -> None:
    """List running function containers."""
    params = {"app_id": resolve_app(app_ref)["app_id"]} if app_ref else {}
    rows = api_call("GET", "/v1/containers", params=params)["containers"]
    if as_json:
        print_json(rows)
        return
    now = time.time()
    click.echo(table(["CONTAINER ID", "APP ID", "FUNCTION", "STATE", "INPUTS", "AGE"],
                     [[c["container_id"], c["app_id"], c["function_name"], c["state"],
                       str(c["running_inputs"]), format_age(now - c["started_at"])]
                      for c in rows]))


@container.command("logs")
@click.argument("container_id")
def container_logs(container_id: str) -> None:
    """A container's output so far (its runner's stdout and stderr)."""
    for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        data = api_call("GET", f"/v1/sandboxes/{container_id}/logs", params={"stream": stream, "follow": False})
        if isinstance(data, (bytes, bytearray)):
            out.write(data.decode("utf-8", "replace"))
        elif isinstance(data, dict):
            out.write(str(data.get(stream) or data.get("data") or ""))
        out.flush()


@container.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def container_exec(container_id: str, command: tuple[str, ...]) -> None:
    """Run `-- CMD ARGS...` inside a function container (it is a sandbox)."""
    import asyncio

    from ._sandbox import _exec

    code = asyncio.run(_exec(container_id, list(command), timeout=None, workdir=None, env=None))
    raise click.exceptions.Exit(code)


@container.command("stop")
@click.argument("container_id")
def container_stop(container_id: str) -> None:
    """Stop a function container (its running inputs end as terminated, or are retried)."""
    api_call("POST", f"/v1/containers/{container_id}/stop")
    click.echo(f"stopped {container_id}")


def register(main: SbxGroup) -> None:
    main.add_command(app)
    main.add_command(container)
