"""Core latency benchmark: the SDK against raw runsc, measured in the same run.

    python benchmarks/bench_core.py [--runs 30] [--parallel 20]

Starts its own `sbx serve` on a free port with a fresh SBX_HOME (the base image comes
from $SBX_IMAGE_CACHE when set), then prints a markdown table:
  - create -> first exec done (SDK; from the default profile's warm pool, cold, and from
    the pool of a profile asked for before) vs `runsc run --detach` + first `runsc exec echo`
  - exec `echo` round trip (SDK, WebSocket) vs the in-sandbox agent alone vs `runsc exec`
  - exec `python3 -c 'print(1)'` (SDK) vs `runsc exec`
  - N sandboxes created at once (default 30): each create's latency, failures and the wall
    time, against N raw `runsc run --detach` at once; idle memory per sandbox (memory cgroup)
"""

from __future__ import annotations

import argparse
import asyncio
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

from sbxtest import Server  # noqa: E402  (the same real server the tests use)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ms: list[float], baseline_name: str = "", base: list[float] | None = None) -> str:
    cell = f"{statistics.median(ms):.1f} / {pct(ms, 0.95):.1f}"
    bcell = f"{statistics.median(base):.1f} / {pct(base, 0.95):.1f}" if base else ""
    return f"| {name} | {cell} | {baseline_name} | {bcell} |"


class RawRunsc:
    """The baseline: the same hardened bundle driven with plain runsc commands."""

    def __init__(self, rootfs: str, workdir: str, platform: str | None = None):
        if platform is None:  # what the server picks (SBX_PLATFORM, else auto)
            from runtimes.gvisor import detect_features, find_runsc

            feats = asyncio.run(detect_features(find_runsc() or "runsc"))
            platform = feats.platform(os.environ.get("SBX_PLATFORM", "auto"))
        from runtimes import ContainerSpec
        from runtimes.gvisor import AGENT_DIR
        from runtimes.gvisor._spec import build_spec

        self.root = os.path.join(workdir, "runsc-root")
        self.bundle = os.path.join(workdir, "bundle")
        os.makedirs(os.path.join(workdir, "run"), exist_ok=True)
        os.makedirs(self.bundle, exist_ok=True)
        spec = build_spec(ContainerSpec("raw", rootfs), rootfs=rootfs, agent_dir=AGENT_DIR,
                          run_dir=os.path.join(workdir, "run"), cgroups_path="", python=None)
        spec["linux"].pop("cgroupsPath")
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        self.flags = ["runsc", "--root", self.root, f"--platform={platform}", "--network=none",
                      "--overlay2=root:memory"]
        self.n = 0

    def run(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.flags, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=check)

    def boot(self) -> str:
        self.n += 1
        cid = f"raw-{self.n:06d}"
        self.run("run", "--detach", "--bundle", self.bundle, cid)
        return cid

    def remove(self, cid: str) -> None:
        self.run("kill", cid, "KILL", check=False)
        self.run("delete", "--force", cid, check=False)


async def agent_echo(sandbox_id: str, home: str, runs: int) -> list[float]:
    from runtimes import ExecSpec, ExitFrame
    from runtimes._agent_client import AgentClient

    client = AgentClient(os.path.join(home, "runtime", "sandboxes", sandbox_id, "run", "agent.sock"))
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        stream = await client.exec(ExecSpec(["echo", "hi"]))
        async for ev in stream.events():
            if isinstance(ev, ExitFrame):
                break
        await stream.close()
        out.append((time.perf_counter() - t) * 1000)
    return out


def cgroup_memory(home: str, sandbox_id: str) -> int | None:
    import hashlib

    parent = "sbx-" + hashlib.sha256(os.path.join(home, "runtime").encode()).hexdigest()[:10]
    try:
        with open(f"/sys/fs/cgroup/memory/{parent}/{sandbox_id}/memory.usage_in_bytes") as f:
            return int(f.read())
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--parallel", type=int, default=30)
    ap.add_argument("--platform", default="auto", help="SBX_PLATFORM for the server and the "
                    "same platform for raw runsc (auto: what the server picks)")
    args = ap.parse_args()
    from runtimes.gvisor import detect_features, find_runsc

    features = asyncio.run(detect_features(find_runsc() or "runsc"))
    platform = features.platform(args.platform)
    os.environ["SBX_PLATFORM"] = platform
    print(f"runsc: {features.version}, platform {platform}", flush=True)
    home = tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp")
    server = Server(home, product_defaults=True)
    server.start()
    os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
    import sandbox_service as sbx

    rows = []
    try:
        sbx.Sandbox.create().terminate()  # base image ready, caches warm
        image_dir = os.path.join(home, "images")
        rootfs = next(os.path.join(image_dir, d, "rootfs") for d in os.listdir(image_dir)
                      if d.startswith("im-"))
        raw = RawRunsc(rootfs, os.path.join(home, "raw"), platform)
        runs = args.runs

        # create -> first exec done: from the warm pool (a pause lets it refill, as between
        # an agent's sandboxes), and cold (non-default memory bypasses the pool)
        def sdk_create(**kw):
            def run():
                sb = sbx.Sandbox.create(**kw)
                sb.exec("echo", "hi").wait()
                sdk_create.sbs.append(sb)
            return run
        sdk_create.sbs = []

        def warm_one():
            time.sleep(1.0)  # not timed: the pool refills
            t = time.perf_counter()
            sdk_create()()
            return (time.perf_counter() - t) * 1000
        warm = [warm_one() for _ in range(max(5, runs // 3))]
        # cold: a memory size never asked for before each time (a profile asked for twice
        # gets a warm pool of its own, which the next row measures)
        sizes = iter(range(1001, 2000))
        cold = timed(lambda: sdk_create(memory=next(sizes))(), max(5, runs // 3))
        sdk_create(memory=700)()  # the first two of their kind: cold, and now demand
        sdk_create(memory=700)()

        def demand_one():
            time.sleep(1.0)  # not timed: that profile's pool refills
            t = time.perf_counter()
            sdk_create(memory=700)()
            return (time.perf_counter() - t) * 1000
        demand = [demand_one() for _ in range(max(5, runs // 3))]
        for sb in sdk_create.sbs:
            sb.terminate()

        raw_ids: list[str] = []

        def raw_cold():
            cid = raw.boot()
            raw.run("exec", cid, "echo", "hi")
            raw_ids.append(cid)
        raw_cold_ms = timed(raw_cold, max(5, runs // 3))
        for cid in raw_ids:
            raw.remove(cid)
        rows.append(row("create -> first exec done (warm pool)", warm, "runsc run --detach + exec echo", raw_cold_ms))
        rows.append(row("create -> first exec done (cold boot)", cold, "runsc run --detach + exec echo", raw_cold_ms))
        rows.append(row("create -> first exec done (memory=700, asked for before: its own warm pool)",
                        demand, "runsc run --detach + exec echo", raw_cold_ms))

        sb = sbx.Sandbox.create()
        cid = raw.boot()
        time.sleep(2)  # the pool's replacement boot is done: measure exec alone
        echo = timed(lambda: sb.exec("echo", "hi").wait(), runs)
        agent = asyncio.run(agent_echo(sb.object_id, home, runs))
        raw_echo = timed(lambda: raw.run("exec", cid, "echo", "hi"), runs)
        rows.append(row("exec echo round trip (SDK)", echo, "runsc exec echo", raw_echo))
        rows.append(row("exec echo (in-sandbox agent alone)", agent, "", None))
        py = timed(lambda: sb.exec("python3", "-c", "print(1)").wait(), runs)
        raw_py = timed(lambda: raw.run("exec", cid, "python3", "-c", "print(1)"), runs)
        rows.append(row("exec python3 -c 'print(1)' (SDK)", py, "runsc exec python3", raw_py))
        raw.remove(cid)
        sb.terminate()

        # parallel creates: each create's own latency (p50 / p95) and how many failed,
        # against as many raw `runsc run --detach` started together
        async def many(n: int) -> tuple[float, list, list[float], int]:
            async def one():
                t0 = time.perf_counter()
                sb = await sbx.Sandbox.create.aio()
                return sb, (time.perf_counter() - t0) * 1000
            t = time.perf_counter()
            got = await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
            wall = (time.perf_counter() - t) * 1000
            ok = [g for g in got if not isinstance(g, BaseException)]
            for g in got:
                if isinstance(g, BaseException):
                    print(f"  a parallel create failed: {type(g).__name__}: {g}", flush=True)
            return wall, [sb for sb, _ in ok], [ms for _, ms in ok], n - len(ok)

        n = args.parallel
        wall, sbs, each, failed = asyncio.run(many(n))
        time.sleep(2)
        mems = [m for m in (cgroup_memory(home, s.object_id) for s in sbs) if m]
        for s in sbs:
            s.terminate()
        time.sleep(2)

        def raw_one(i: int) -> tuple[subprocess.Popen, float]:
            return subprocess.Popen([*raw.flags, "run", "--detach", "--bundle", raw.bundle,
                                     f"par-{i:06d}"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), \
                time.perf_counter()
        t = time.perf_counter()
        procs = [raw_one(i) for i in range(n)]
        raw_each: list[float] = []
        pending = list(procs)
        while pending:  # each process's own time from its start to its exit
            for item in list(pending):
                if item[0].poll() is not None:
                    raw_each.append((time.perf_counter() - item[1]) * 1000)
                    pending.remove(item)
            time.sleep(0.002)
        raw_wall = (time.perf_counter() - t) * 1000
        raw_failed = sum(p.returncode != 0 for p, _ in procs)
        for i in range(n):
            raw.remove(f"par-{i:06d}")
        rows.append(f"| {n} sandboxes created at once, each create "
                    f"({failed} failed) | {statistics.median(each):.0f} / {pct(each, 0.95):.0f} | "
                    f"{n} x runsc run --detach at once, each ({raw_failed} failed) | "
                    f"{statistics.median(raw_each):.0f} / {pct(raw_each, 0.95):.0f} |")
        rows.append(f"| {n} sandboxes created at once (wall) | {wall:.0f} | "
                    f"{n} x runsc run --detach at once (wall) | {raw_wall:.0f} |")
        if mems:
            rows.append(f"| idle memory per sandbox (memory cgroup) | "
                        f"{statistics.median(mems) / 2**20:.1f} MiB | | |")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"runsc: {subprocess.run(['runsc', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}; "
          f"{os.cpu_count()} cores; runs={args.runs}")
    print("| measurement | sandbox-service ms (p50 / p95) | baseline | baseline ms (p50 / p95) |")
    print("|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
