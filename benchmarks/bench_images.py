"""Image benchmark: builds and boots, with baselines measured in the same run.

    python benchmarks/bench_images.py [--runs 15] [--builds 3]

Starts its own `sbx serve` (fresh SBX_HOME; base image from $SBX_IMAGE_CACHE when set) and
prints a markdown table:
  - cold build of debian_slim().pip_install("requests") (the pip layer forced to rebuild)
    vs `pip install requests` into a fresh venv on the host (no sandbox, same network)
  - warm rebuild of the same recipe (every layer cached)
  - create -> first exec done for a 5-layer image vs the base image (SDK, warm pool
    bypassed for both), interleaved
  - raw `runsc run --detach` + `exec echo` on: the base rootfs, the 5-layer image's
    flattened (hard-linked) rootfs, and the same 5 layers stacked by an overlayfs mount
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bench_core import RawRunsc, pct  # noqa: E402
from sbxtest import Server  # noqa: E402  (the same real server the tests use)


def cell(ms: list[float]) -> str:
    return f"{statistics.median(ms):.1f} / {pct(ms, 0.95):.1f}"


def raw_boot(raw: RawRunsc) -> float:
    t = time.perf_counter()
    cid = raw.boot()
    raw.run("exec", cid, "echo", "hi")
    ms = (time.perf_counter() - t) * 1000
    raw.remove(cid)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--builds", type=int, default=3)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-benchimg-", dir="/tmp")
    server = Server(home, product_defaults=True)
    server.start()
    os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
    import sandbox_service as sbx

    rows = []
    mounted = None
    try:
        sbx.Sandbox.create().terminate()
        # ---- builds --------------------------------------------------------------------
        cold = []
        for i in range(args.builds):  # the first is new; later ones force the pip layer
            img = sbx.Image.debian_slim().pip_install("requests", force_build=i > 0)
            t = time.perf_counter()
            img.build()
            cold.append((time.perf_counter() - t) * 1000)
        venv_ms = []
        for _ in range(args.builds):
            d = tempfile.mkdtemp(prefix="sbx-bench-venv-")
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", d], check=True)
            subprocess.run([os.path.join(d, "bin", "pip"), "install", "-q", "--no-cache-dir",
                            "requests"], check=True, stdout=subprocess.DEVNULL)
            venv_ms.append((time.perf_counter() - t) * 1000)
            shutil.rmtree(d)
        warm = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sbx.Image.debian_slim().pip_install("requests").build()
            warm.append((time.perf_counter() - t) * 1000)
        rows.append(f"| cold build: debian_slim().pip_install('requests') | {cell(cold)} | "
                    f"host venv + pip install requests | {cell(venv_ms)} |")
        rows.append(f"| warm rebuild (all layers cached) | {cell(warm)} | | |")

        # ---- boots ---------------------------------------------------------------------
        five = sbx.Image.debian_slim()
        for i in range(4):
            five = five.run_commands(f"mkdir -p /layer{i} && seq 1 1000 > /layer{i}/data")
        five.build()
        with server.api() as api:
            info = api.get(f"/v1/images/{five.object_id}").json()
        assert info["layers"] == 5, info

        def sdk_boot(image):
            t = time.perf_counter()
            sb = sbx.Sandbox.create(image=image, memory=1000)  # non-default: no warm pool
            sb.exec("echo", "hi").wait()
            ms = (time.perf_counter() - t) * 1000
            sb.terminate()
            return ms
        base_sdk, five_sdk = [], []
        for _ in range(args.runs):
            base_sdk.append(sdk_boot(None))
            five_sdk.append(sdk_boot(five))
        ratio = statistics.median(five_sdk) / statistics.median(base_sdk)
        rows.append(f"| create -> first exec, 5-layer image (SDK, cold) | {cell(five_sdk)} | "
                    f"base image, same path | {cell(base_sdk)} |")
        rows.append(f"| 5-layer / base boot time | {ratio:.2f}x | | |")

        layers = os.path.join(home, "images", "layers")
        top = os.path.join(layers, _top_key(home, five.object_id))
        base_rootfs = glob.glob(os.path.join(home, "images", "im-*", "rootfs"))[0]
        chain = _chain(layers, os.path.basename(top))
        mounted = os.path.join(home, "stack")
        os.makedirs(mounted)
        lower = ":".join([os.path.join(layers, k, "diff") for k in chain[:-1]]
                         + [os.path.join(layers, chain[-1], "rootfs")])
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", mounted],
                       check=True)
        variants = {"base rootfs": RawRunsc(base_rootfs, os.path.join(home, "raw-base")),
                    "5 layers, flattened (hard links)": RawRunsc(os.path.join(top, "rootfs"),
                                                                 os.path.join(home, "raw-flat")),
                    "5 layers, overlayfs stack": RawRunsc(mounted, os.path.join(home, "raw-ovl"))}
        results: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.runs):
            for name, raw in variants.items():
                results[name].append(raw_boot(raw))
        for name, ms in results.items():
            rows.append(f"| raw runsc run + exec echo: {name} | {cell(ms)} | | |")
    finally:
        if mounted:
            subprocess.run(["umount", mounted], check=False)
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("| measurement | ms (p50 / p95) | baseline | baseline ms (p50 / p95) |")
    print("|---|---|---|---|")
    print("\n".join(rows))


def _top_key(home: str, image_id: str) -> str:
    import sqlite3

    db = sqlite3.connect(os.path.join(home, "state.db"))
    (data,) = db.execute("SELECT data FROM images WHERE id=?", (image_id,)).fetchone()
    return json.loads(data)["top"]


def _chain(layers: str, key: str) -> list[str]:
    out = []
    while key:
        out.append(key)
        with open(os.path.join(layers, key, "layer.json")) as f:
            key = json.load(f).get("parent")
    return out


if __name__ == "__main__":
    main()
