"""`sbx audit`: read the service's append-only audit log (public layer; must not import
the server)."""

from __future__ import annotations

import datetime
import json
import re

import click

from ._common import api_call, fail, print_json, table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str | None, option: str = "--since") -> float | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not m:
        fail(f"{option} {text!r}: use a duration like 90s, 15m, 2h or 7d", 2)
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


@click.command()
@click.option("--object", "obj", default=None, help="an object id (sb-..., im-..., a secret name)")
@click.option("--action", default=None, help="an action (sandbox.exec) or a prefix (sandbox)")
@click.option("--principal", default=None, help="who did it")
@click.option("--since", default=None, help="how far back: 90s, 15m, 2h, 7d")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
def audit(obj: str | None, action: str | None, principal: str | None, since: str | None,
          limit: int, as_json: bool) -> None:
    """Who created, exec'd into, read files of and terminated what (newest last)."""
    params = {k: v for k, v in {"object": obj, "action": action, "principal": principal,
                                "since_s": _seconds(since), "limit": limit}.items()
              if v is not None}
    records = api_call("GET", "/v1/audit", params=params)["records"]
    if as_json:
        print_json(records)
        return
    rows = [[datetime.datetime.fromtimestamp(r["ts"]).strftime("%Y-%m-%d %H:%M:%S"),
             r["principal"], r["action"], r["object"] or "-",
             str(r["status"]) if r["status"] is not None else "-",
             json.dumps(r["detail"], separators=(",", ":")) if r["detail"] else ""]
            for r in records]
    click.echo(table(["TIME", "PRINCIPAL", "ACTION", "OBJECT", "STATUS", "DETAIL"], rows))
