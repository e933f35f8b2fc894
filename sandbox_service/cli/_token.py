"""`sbx token ...`: API keys and scoped tokens (public layer; must not import the server)."""

from __future__ import annotations

import time

import click

from ._audit import _seconds
from ._common import SbxGroup, api_call, print_json, table


@click.group(cls=SbxGroup)
def token() -> None:
    """Create, list and revoke API keys and scoped tokens."""


@token.command("create")
@click.option("--principal", default=None, help="user keys: the name it acts for")
@click.option("--scope", type=click.Choice(["user", "sandbox", "app"]), default="user",
              show_default=True)
@click.option("--sandbox", "sandbox_id", default=None, help="sandbox scope: its id")
@click.option("--app", "app_id", default=None, help="app scope: its id")
@click.option("--ttl", default=None, help="lifetime: 90s, 15m, 2h, 30d (default: none)")
@click.option("--name", default=None, help="a note to recognise it by")
@click.option("--json", "as_json", is_flag=True)
def create(principal: str | None, scope: str, sandbox_id: str | None, app_id: str | None,
           ttl: str | None, name: str | None, as_json: bool) -> None:
    """Create a key; it is printed once and never shown again."""
    body = {"scope": scope, "principal": principal, "sandbox_id": sandbox_id,
            "app_id": app_id, "ttl_s": _seconds(ttl, "--ttl"), "name": name}
    data = api_call("POST", "/v1/tokens", json_body={k: v for k, v in body.items() if v is not None})
    if as_json:
        print_json(data)
        return
    click.echo(data["token"])
    click.echo(f"id {data['id']} for {data['principal']} ({data['scope']}"
               + (f" {data['target']}" if data.get("target") else "") + "); store it now: "
               "only its hash is kept", err=True)


@token.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls(as_json: bool) -> None:
    """List keys (never their secrets)."""
    data = api_call("GET", "/v1/tokens")["tokens"]
    if as_json:
        print_json(data)
        return
    now = time.time()

    def state(t: dict) -> str:
        if t["revoked_at"]:
            return "revoked"
        if t["expires_at"] and t["expires_at"] <= now:
            return "expired"
        return f"expires in {int(t['expires_at'] - now)}s" if t["expires_at"] else "active"

    click.echo(table(["ID", "PRINCIPAL", "SCOPE", "TARGET", "NAME", "STATE"],
                     [[t["id"], t["principal"], t["scope"], t["target"] or "-", t["name"] or "-",
                       state(t)] for t in data]))


@token.command("revoke")
@click.argument("token_ids", nargs=-1, required=True)
def revoke(token_ids: tuple[str, ...]) -> None:
    """Revoke keys now (requests with them fail within a second)."""
    for tid in token_ids:
        api_call("DELETE", f"/v1/tokens/{tid}")
        click.echo(f"revoked {tid}")
