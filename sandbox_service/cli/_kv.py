"""`sbx dict ...` and `sbx queue ...`: Modal's `modal dict` / `modal queue` (public layer;
must not import the server). Values are shown with `repr` after unpickling them here, so a
value of a type this machine lacks prints as an error line, not a crash.
"""

from __future__ import annotations

import time

import click

from ._common import SbxGroup, api_call, fail, format_age, print_json, table


def _group(kinds: str, what: str) -> click.Group:
    @click.group(kinds[:-1], cls=SbxGroup)
    def group() -> None:
        pass
    group.help = f"Create, list, inspect and remove named {what}s (`modal {kinds[:-1]}`)."

    def lookup(name: str, create: bool = False) -> str:
        return api_call("POST", f"/v1/{kinds}/lookup",
                        json_body={"name": name, "create_if_missing": create})["object_id"]

    @group.command("create")
    @click.argument("name")
    def create(name: str) -> None:
        """Create the named object (nothing happens if it exists)."""
        click.echo(f"{what} {name}: {lookup(name, True)}")

    @group.command("ls")
    @click.option("--json", "as_json", is_flag=True)
    def ls(as_json: bool) -> None:
        """The named objects of this principal, with how many entries each holds."""
        data = api_call("GET", f"/v1/{kinds}")
        if as_json:
            print_json(data)
            return
        now = time.time()
        click.echo(table(["NAME", "ID", "ENTRIES", "AGE"],
              [[o["name"], o["object_id"], str(o.get("entries", "")),
                format_age(now - o["created_at"])] for o in data["objects"]]))

    @group.command("rm")
    @click.argument("name")
    @click.option("--allow-missing", is_flag=True)
    def rm(name: str, allow_missing: bool) -> None:
        """Delete the named object and everything in it."""
        from ..wire import errors as E

        try:
            oid = lookup(name)
        except E.NotFoundError:
            if allow_missing:
                return
            fail(f"no {what} named {name!r}", 1)
        api_call("DELETE", f"/v1/{kinds}/{oid}")
        click.echo(f"{what} {name} deleted")

    @group.command("clear")
    @click.argument("name")
    def clear(name: str) -> None:
        """Remove every entry (all partitions of a Queue)."""
        body = {"partition": "", "all": True} if kinds == "queues" else None
        api_call("POST", f"/v1/{kinds}/{lookup(name)}/clear", json_body=body)
        click.echo(f"{what} {name} cleared")

    group.lookup = lookup  # type: ignore[attr-defined]
    return group


def _show(b64: str) -> str:
    from .._kv_object import dec

    try:
        return repr(dec(b64))
    except Exception as e:  # a type this machine cannot unpickle
        return f"<cannot unpickle here: {e}>"


dict_group = _group("dicts", "Dict")
queue_group = _group("queues", "Queue")


@dict_group.command("items")
@click.argument("name")
@click.option("-n", "limit", default=20, show_default=True, help="at most this many")
def dict_items(name: str, limit: int) -> None:
    """Print up to N entries (key, value)."""
    page = api_call("GET", f"/v1/dicts/{dict_group.lookup(name)}/entries")
    for e in page["entries"][:limit]:
        click.echo(f"{_show(e['key_b64'])}: {_show(e['value_b64'])}")


@queue_group.command("peek")
@click.argument("name")
@click.option("--partition", default="", help="the partition (default: the default one)")
@click.option("-n", "limit", default=20, show_default=True, help="at most this many")
def queue_peek(name: str, partition: str, limit: int) -> None:
    """Print the oldest N items of a partition without removing them."""
    data = api_call("POST", f"/v1/queues/{queue_group.lookup(name)}/next",
                    json_body={"partition": partition, "after_seq": 0, "timeout_s": 0})
    for _, value in data["items"][:limit]:
        click.echo(_show(value))


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", default="")
def queue_len(name: str, partition: str) -> None:
    """Items in a partition (all partitions without --partition)."""
    data = api_call("GET", f"/v1/queues/{queue_group.lookup(name)}/len",
                    params={"partition": partition, "total": not partition})
    click.echo(str(data["len"]))
