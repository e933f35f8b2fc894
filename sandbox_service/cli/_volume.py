"""`sbx volume ...`: Modal's `modal volume` (public layer; must not import the server).

Uploads and downloads go through the SDK's `Volume` (the same rules as a program's: an
existing file needs `--force`, an upload appears whole or not at all); SDK errors become one
`sbx: ...` line (SbxGroup).
"""

from __future__ import annotations

import os
import sys
import time

import click

from ..wire import volume_path_parts
from ._common import SbxGroup, api_call, fail, format_age, print_json, table


@click.group("volume", cls=SbxGroup)
def volume_group() -> None:
    """Create, list, fill, read and remove named volumes (`modal volume`)."""


def _vol(name: str):
    from .. import Volume

    return Volume.from_name(name)


def _lookup(name: str, create: bool = False) -> str:
    return api_call("POST", "/v1/volumes/lookup",
                    json_body={"name": name, "create_if_missing": create})["object_id"]


@volume_group.command("create")
@click.argument("name")
def create(name: str) -> None:
    """Create the named volume (nothing happens if it exists)."""
    click.echo(f"Volume {name}: {_lookup(name, True)}")


@volume_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """This principal's named volumes, and the space they use together."""
    data = api_call("GET", "/v1/volumes")
    if as_json:
        print_json(data)
        return
    now = time.time()
    click.echo(table(["NAME", "ID", "AGE"], [[o["name"], o["object_id"],
                                              format_age(now - o["created_at"])]
                                             for o in data["objects"]]))
    if data["objects"]:
        u = api_call("GET", f"/v1/volumes/{data['objects'][0]['object_id']}/usage")
        click.echo(f"\nused {u['used_bytes'] / (1 << 20):,.1f} MiB of "
                   f"{u['quota_bytes'] / (1 << 20):,.0f} MiB (all volumes of this principal"
                   f"{'' if u['enforced'] else '; the quota is not enforced on this host'})")


@volume_group.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@click.option("--json", "as_json", is_flag=True)
def ls(name: str, path: str, as_json: bool) -> None:
    """The entries of PATH in the volume (one level)."""
    data = api_call("GET", f"/v1/volumes/{_lookup(name)}/files", params={"path": path})
    if as_json:
        print_json(data)
        return
    rows = [[e["path"] + ("/" if e["type"] == "directory" else ""), e["type"],
             str(e["size"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(e["mtime"]))]
            for e in data["entries"]]
    click.echo(table(["FILENAME", "TYPE", "SIZE", "MODIFIED"], rows))


@volume_group.command("put")
@click.argument("name")
@click.argument("local_path", type=click.Path(exists=True))
@click.argument("remote_path", default="/")
@click.option("-f", "--force", is_flag=True, help="overwrite files that exist")
def put(name: str, local_path: str, remote_path: str, force: bool) -> None:
    """Upload a file or a directory (recursively). A REMOTE_PATH ending with / keeps the
    file's name under it."""
    vol = _vol(name)
    is_dir = os.path.isdir(local_path)
    if not is_dir and remote_path.endswith("/"):
        remote_path += os.path.basename(local_path)
    if is_dir and not force:  # refuse before uploading anything, not halfway through
        _refuse_existing(vol, local_path, remote_path)
    try:
        with vol.batch_upload(force=force) as batch:
            if is_dir:
                batch.put_directory(local_path, remote_path)
            else:
                batch.put_file(local_path, remote_path)
    except FileExistsError as e:
        fail(str(e) if "--force" in str(e) else f"{e} (use --force to overwrite)")
    click.echo(f"uploaded {local_path} to {name}:{remote_path}")


def _norm(path: str) -> str:
    return "/".join(volume_path_parts(path))


def _refuse_existing(vol, local_dir: str, remote_dir: str) -> None:
    from ..wire import errors as E

    try:
        there = {_norm(e.path) for e in vol.listdir(remote_dir, recursive=True)}
    except E.NotFoundError:
        return
    mine = (_norm(f"{remote_dir}/{os.path.relpath(os.path.join(d, f), local_dir)}")
            for d, _, fs in os.walk(local_dir) for f in fs)
    clash = sorted(p for p in mine if p in there)
    if clash:
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        fail(f"{', '.join(clash[:3])}{more} already exist{'s' if len(clash) == 1 else ''} in "
             "the volume: nothing was uploaded; pass --force to overwrite")


@volume_group.command("get")
@click.argument("name")
@click.argument("remote_path")
@click.argument("local_destination", default=".")
@click.option("-f", "--force", is_flag=True, help="overwrite local files that exist")
def get(name: str, remote_path: str, local_destination: str, force: bool) -> None:
    """Download a file (`-` writes it to stdout) or a directory, recursively. Symlinks
    written by containers are skipped, never followed."""
    vol = _vol(name)
    base = _norm(remote_path)
    data = api_call("GET", f"/v1/volumes/{_lookup(name)}/files",
                    params={"path": remote_path, "recursive": "true"})
    if data.get("truncated"):
        fail(f"{remote_path} holds more entries than one listing returns: get its "
             "subdirectories one by one")
    entries = data["entries"]
    one = entries[0] if len(entries) == 1 and _norm(entries[0]["path"]) == base else None
    if one is not None and one["type"] != "file":
        fail(f"{remote_path} is a {one['type']}: only files and directories can be downloaded")
    if local_destination == "-":
        if one is None:
            fail(f"{remote_path} is a directory: only a file can go to stdout")
        for chunk in vol.read_file(remote_path):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    if one is not None:
        into = os.path.isdir(local_destination) or local_destination.endswith(("/", os.sep))
        pairs = [(one["path"], os.path.join(local_destination, os.path.basename(base))
                  if into else local_destination)]
        top = None
    else:  # a directory: LOCAL/<its name>/<paths below it>
        top = os.path.join(local_destination, os.path.basename(base))
        pairs = [(e["path"], os.path.join(top, os.path.relpath(_norm(e["path"]), base or ".")))
                 for e in entries if e["type"] == "file"]
        skipped = [e["path"] for e in entries if e["type"] not in ("file", "directory")]
        if skipped:
            click.echo(f"sbx: skipping {len(skipped)} symlink(s) or special file(s), e.g. "
                       f"{skipped[0]}", err=True)
    for _, target in pairs:
        if os.path.lexists(target) and not force:
            fail(f"{target} exists (use --force to overwrite it)")
    try:
        if top is not None:
            os.makedirs(top, exist_ok=True)
        for src, target in pairs:
            _download(vol, src, target)
            click.echo(f"{name}:{src} -> {target}")
    except OSError as e:
        fail(f"cannot write {e.filename or local_destination}: {e.strerror or e}")


def _download(vol, src: str, target: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.sbx-part-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            vol.read_file_into_fileobj(src, f)
        if os.path.isdir(target) and not os.path.islink(target):
            raise IsADirectoryError(21, "a directory is in the way", target)
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@volume_group.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="a directory and everything in it")
def rm(name: str, path: str, recursive: bool) -> None:
    """Remove a file (or, with -r, a directory) from the volume."""
    _vol(name).remove_file(path, recursive=recursive)
    click.echo(f"removed {name}:{path}")


@volume_group.command("cp")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="copy directories too")
def cp(name: str, paths: tuple[str, ...], recursive: bool) -> None:
    """Copy SRC... to DST inside the volume (cp's rules: into DST if it is a directory)."""
    if len(paths) < 2:
        fail("give one or more sources and a destination: sbx volume cp NAME SRC... DST")
    _vol(name).copy_files(list(paths[:-1]), paths[-1], recursive=recursive)
    click.echo(f"copied {', '.join(paths[:-1])} to {name}:{paths[-1]}")


@volume_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@click.option("--allow-missing", is_flag=True)
def delete(name: str, yes: bool, allow_missing: bool) -> None:
    """Delete the named volume and every file in it."""
    from ..wire import errors as E
    from ._common import stdin_is_tty

    try:
        oid = _lookup(name)
    except E.NotFoundError:
        if allow_missing:
            return
        fail(f"no Volume named {name!r}")
    if not yes:
        if not stdin_is_tty():
            fail(f"deleting {name!r} removes all its files: pass --yes to confirm")
        click.confirm(f"Delete volume {name!r} and all its files?", abort=True)
    api_call("DELETE", f"/v1/volumes/{oid}")
    click.echo(f"Volume {name} deleted")
