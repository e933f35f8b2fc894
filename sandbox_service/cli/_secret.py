"""`sbx secret ...`: create, ls, rm named secrets (public layer; must not import the server).

Values go to the server once, at creation, and are never shown again: `ls` prints names,
key names and times only.
"""

from __future__ import annotations

import time

import click

from ._common import SbxGroup, api_call, fail, format_age, print_json, table


@click.group(cls=SbxGroup)
def secret() -> None:
    """Create, list and remove named secrets (encrypted at rest, values never shown)."""


@secret.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option("--from-dotenv", "dotenv", type=click.Path(exists=True, dir_okay=False),
              help="read KEY=VALUE lines from a .env file (before the KEY=VALUE arguments)")
@click.option("--force", is_flag=True, help="replace a secret of that name if there is one")
def create(name: str, pairs: tuple[str, ...], dotenv: str | None, force: bool) -> None:
    """Store secret NAME; `KEY=-` reads that value from stdin (keeps it out of the shell
    history and the process list)."""
    from .._secret import parse_dotenv

    env: dict[str, str] = {}
    if dotenv:
        with open(dotenv, encoding="utf-8") as f:
            env.update(parse_dotenv(f.read()))
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{item.split('=')[0]!r}: arguments look like KEY=VALUE", 2)
        if value == "-":
            value = click.get_text_stream("stdin").read().rstrip("\n")
        env[key] = value
    if not env:
        fail("a secret needs at least one KEY=VALUE (or --from-dotenv FILE)", 2)
    info = api_call("POST", "/v1/secrets", json_body={"name": name, "env": env, "overwrite": force})
    click.echo(f"secret {info['name']} {'written' if force else 'created'} "
               f"(keys: {', '.join(info['keys'])})")


@secret.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls(as_json: bool) -> None:
    """List secrets: names, key names and times (never values)."""
    data = api_call("GET", "/v1/secrets")
    if as_json:
        print_json(data)
        return
    now = time.time()
    rows = [[s["name"], ", ".join(s["keys"]), format_age(now - s["created_at"]),
             format_age(now - s["updated_at"])] for s in data["secrets"]]
    click.echo(table(["NAME", "KEYS", "CREATED", "UPDATED"], rows))


@secret.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm(names: tuple[str, ...]) -> None:
    """Delete secrets; sandboxes already running keep the environment they got."""
    for name in names:
        api_call("DELETE", f"/v1/secrets/{name}")
        click.echo(f"removed {name}")
