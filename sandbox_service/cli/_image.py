"""`sbx image ...`: build, ls, get, rm, gc (public layer; must not import the server).

`sbx image build app.py::image` runs app.py (as Modal's CLI does), takes its Image variable
and builds it on the server with the build log streamed to the terminal.
"""

from __future__ import annotations

import os
import runpy
import time

import click

from ._common import SbxGroup, api_call, fail, format_age, print_json, table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@click.group(cls=SbxGroup)
def image() -> None:
    """Build, list and remove images; collect unused layers."""


@image.command("build")
@click.argument("target", metavar="FILE[::VAR]")
@click.option("--force-build", is_flag=True, help="rebuild every step, ignoring the cache")
@click.option("--json", "as_json", is_flag=True, help="print the image's info as JSON")
def build(target: str, force_build: bool, as_json: bool) -> None:
    """Build the Image held by variable VAR of a Python FILE (default: its only Image)."""
    import sandbox_service as sbx

    path, _, var = target.partition("::")
    if not os.path.isfile(path):
        fail(f"{path}: no such file (usage: sbx image build app.py::image)", 2)
    namespace = runpy.run_path(path, run_name="__sbx_image_build__")
    if var:
        img = namespace.get(var)
        if not isinstance(img, sbx.Image):
            fail(f"{path} has no Image named {var!r}", 2)
    else:
        found = [(k, v) for k, v in namespace.items() if isinstance(v, sbx.Image)]
        if len(found) != 1:
            names = ", ".join(k for k, _ in found) or "none"
            fail(f"{path} holds {len(found)} Images ({names}): name one as {path}::VAR", 2)
        img = found[0][1]
    t0 = time.monotonic()
    with sbx.enable_output():
        img.build(force_build=force_build)
    if as_json:
        print_json(api_call("GET", f"/v1/images/{img.object_id}"))
    else:
        click.echo(f"{img.object_id}  built in {time.monotonic() - t0:.1f}s")


@image.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls(as_json: bool) -> None:
    """List images, with each one's layers and size, and the disk all layers use."""
    data = api_call("GET", "/v1/images")
    if as_json:
        print_json(data)
        return
    now = time.time()
    rows = [[i["image_id"], i["source"], str(i["layers"]), _size(i["size_bytes"]),
             i.get("python") or "-", format_age(now - i["created_at"]) if i["created_at"] else "-"]
            for i in data["images"]]
    click.echo(table(["IMAGE", "SOURCE", "LAYERS", "SIZE", "PYTHON", "AGE"], rows))
    click.echo(f"layers on disk: {_size(data.get('disk_bytes', 0))} (shared files counted once "
               "per layer that changed them)")


@image.command("get")
@click.argument("image_id")
def get(image_id: str) -> None:
    """Show one image's config (env, workdir, entrypoint, cmd, user) as JSON."""
    print_json(api_call("GET", f"/v1/images/{image_id}"))


@image.command("rm")
@click.argument("image_ids", nargs=-1, required=True)
def rm(image_ids: tuple[str, ...]) -> None:
    """Forget images; their layers go at the next `sbx image gc` unless still used."""
    for image_id in image_ids:
        api_call("DELETE", f"/v1/images/{image_id}")
        click.echo(f"removed {image_id}")


@image.command("gc")
def gc() -> None:
    """Delete layers no image, running sandbox or build uses."""
    res = api_call("POST", "/v1/images/gc", timeout=600)
    click.echo(f"removed {res['removed_layers']} layers, freed {_size(res['freed_bytes'])}; "
               f"{res['kept_layers']} layers kept")
