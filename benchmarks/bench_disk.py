"""Disk-quota benchmark: what a per-sandbox disk (runtimes/gvisor/_disk.py) costs against
the in-memory overlay, measured in the same run on the same runtime.

    python benchmarks/bench_disk.py [--runs 20] [--parallel 10] [--disk-mib 4096]

Starts `sbx serve` once only to get the base image's rootfs (from $SBX_IMAGE_CACHE when
set), stops it, then drives the gVisor runtime directly (no server, no pool) and prints a
markdown table, memory overlay (baseline) vs disk quota:
  - create (boot until the agent answers) and destroy
  - the disk setup alone (sparse file + mkfs.ext4 + loop mount + overlay mount) and its
    teardown
  - N sandboxes created in parallel (wall)
  - inside a sandbox: `python3 -c pass` (reads through the overlay; first in a fresh
    sandbox, then again), write 200 MiB sequentially (fsync), create 2000 files of 4 KiB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from sbxtest import Server  # noqa: E402

from runtimes import ContainerSpec, ExecSpec, ExitFrame  # noqa: E402
from runtimes.gvisor import GVisorRuntime  # noqa: E402
from runtimes.gvisor import _disk  # noqa: E402
from sandbox_service.wire._ids import new_id  # noqa: E402

WRITE = ("python3", "-c", "import os\nf = open('/var/big', 'wb')\nb = b'x' * (1 << 20)\n"
         "for _ in range(200): f.write(b)\nf.flush(); os.fsync(f.fileno())")
SMALL = ("python3", "-c", "import os\nos.mkdir('/var/many')\nb = b'y' * 4096\n"
         "for i in range(2000):\n    open('/var/many/%d' % i, 'wb').write(b)")
PYSTART = ("python3", "-c", "pass")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def cell(ms: list[float]) -> str:
    return f"{statistics.median(ms):.1f} / {pct(ms, 0.95):.1f}"


async def run(rt: GVisorRuntime, cid: str, argv) -> float:
    t = time.perf_counter()
    stream = await rt.exec(cid, ExecSpec(list(argv)))
    code = None
    async for ev in stream.events():
        if isinstance(ev, ExitFrame):
            code = ev.exit_code
    await stream.close()
    assert code == 0, (argv, code)
    return (time.perf_counter() - t) * 1000


async def bench(rootfs: str, state: str, runs: int, parallel: int, disk_mib: int) -> list[str]:
    rt = GVisorRuntime(state)
    await rt.start()
    if rt.disk_quota_unavailable:
        raise SystemExit(f"disk quotas unavailable: {rt.disk_quota_unavailable}")
    res: dict[str, dict[str, list[float]]] = {"memory": {}, "disk": {}}
    try:
        for i in range(runs):  # interleaved, so drift on a noisy machine hits both alike
            for mode in ("memory", "disk"):
                r = res[mode]
                cid = new_id("sandbox")
                spec = ContainerSpec(cid, rootfs, memory_mib=512,
                                     disk_mib=disk_mib if mode == "disk" else None)
                t = time.perf_counter()
                await rt.create(spec)
                r.setdefault("create", []).append((time.perf_counter() - t) * 1000)
                r.setdefault("first `python3 -c pass`", []).append(await run(rt, cid, PYSTART))
                r.setdefault("next `python3 -c pass`", []).append(await run(rt, cid, PYSTART))
                if i < max(3, runs // 4):
                    for name, argv in (("write 200 MiB + fsync", WRITE),
                                       ("create 2000 files of 4 KiB", SMALL)):
                        r.setdefault(name, []).append(await run(rt, cid, argv))
                t = time.perf_counter()
                await rt.destroy(cid)
                r.setdefault("destroy", []).append((time.perf_counter() - t) * 1000)
        setup, teardown = [], []
        for _ in range(runs):
            base = tempfile.mkdtemp(dir=state)
            t = time.perf_counter()
            await _disk.create(base, rootfs, disk_mib)
            setup.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            assert await _disk.destroy(base)
            teardown.append((time.perf_counter() - t) * 1000)
            shutil.rmtree(base)
        res["disk"]["disk setup alone"], res["disk"]["disk teardown alone"] = setup, teardown
        for mode in ("memory", "disk"):
            ids = [new_id("sandbox") for _ in range(parallel)]
            t = time.perf_counter()
            await asyncio.gather(*(rt.create(ContainerSpec(
                c, rootfs, memory_mib=256, disk_mib=disk_mib if mode == "disk" else None))
                for c in ids))
            res[mode][f"{parallel} creates in parallel (wall)"] = [(time.perf_counter() - t) * 1000]
            await asyncio.gather(*(rt.destroy(c) for c in ids))
    finally:
        await rt.collect(set())
        await rt.close()
    rows = ["| step | memory overlay (baseline) ms, median / p95 | disk quota ms, median / p95 |",
            "|---|---|---|"]
    for name in res["disk"]:
        base = res["memory"].get(name)
        rows.append(f"| {name} | {cell(base) if base else ''} | {cell(res['disk'][name])} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--disk-mib", type=int, default=4096)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp")
    server = Server(home, product_defaults=True)
    server.start()
    try:
        import httpx

        with httpx.Client(base_url=server.url, timeout=900,
                          headers={"Authorization": f"Bearer {server.token}"}) as c:
            r = c.post("/v1/sandboxes", json={})
            r.raise_for_status()
            c.delete(f"/v1/sandboxes/{r.json()['sandbox_id']}")
    finally:
        server.stop()
    image_dir = os.path.join(home, "images")
    rootfs = next(os.path.join(image_dir, d, "rootfs") for d in os.listdir(image_dir)
                  if d.startswith("im-"))
    try:
        rows = asyncio.run(bench(rootfs, os.path.join(home, "bench-rt"), args.runs,
                                 args.parallel, args.disk_mib))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"disk quota of {args.disk_mib} MiB vs the in-memory overlay "
          f"({args.runs} runs, {os.cpu_count()} CPUs)\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
