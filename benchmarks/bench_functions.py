"""Functions benchmark: Modal-style `@app.function` calls, with baselines measured in the
same run.

    python benchmarks/bench_functions.py [--quick] [--calls 200] [--map-n 500] [--cold-runs 5]

Starts its own `sbx serve` on a free port with a fresh SBX_HOME (the base image comes from
$SBX_IMAGE_CACHE, default /var/cache/sandbox-service/images, as in the tests), runs the apps
of benchmarks/fn_app.py and fn_app_numpy.py (real module files: the SDK ships them into
the containers), and prints a markdown table (measurement | value | baseline):
  - warm `.remote()` round trip p50/p95/p99 vs an SDK `sb.exec("true").wait()` round trip
    on one idle sandbox
  - `.map` over N trivial inputs: total seconds and per-input overhead, the first map of
    each function (the autoscaler starts its containers meanwhile) and, once they are all
    ready, the median of 3 more (warm), with (a) one input per container and
    max_containers=4, (b) @modal.concurrent(max_inputs=50) on one container, (c)
    @modal.batched(max_batch_size=50, wait_ms=10) on one container; vs N x the
    sequential warm `.remote()` (mean, measured above)
  - cold start, call -> first result, each run in a fresh `app.run()`: a function with
    network (the default) and one with block_network=True, vs a cold `Sandbox.create()`
    on the same image (the function's image: base + its code file, so never the warm pool)
    with the same network + `exec python3 -c pass` + wait; the same for a module that
    imports numpy at top level (image debian_slim().pip_install("numpy"); falls back to
    apt_install("python3-numpy") and says so) vs `exec python3 -c "import numpy"`
  - memory (memory cgroup, usage) per idle warm function container (min_containers=4) vs
    an idle plain sandbox and a plain sandbox with an idle python3 process, same image
`--skip warm,cold,numpy,memory` leaves sections out; BENCH_KEEP_HOME=1 keeps SBX_HOME (and
its server.log) for a look afterwards. Every section is measured even when an earlier one
failed (its row says FAILED and why). On exit (normal, error, Ctrl-C, SIGTERM) every app
is stopped and every sandbox terminated through the API, then the server is stopped and
its SBX_HOME removed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, BENCH)  # fn_app, fn_app_numpy: imported by their own names, as in a container

from bench_core import pct  # noqa: E402
from sbxtest import Server  # noqa: E402  (the tests' real server; sets SBX_IMAGE_CACHE)

MiB = 2 ** 20


# ---- helpers --------------------------------------------------------------------------------
def ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(ms_since(t))
    return out


def p3(ms: list[float]) -> str:
    return (f"{statistics.median(ms):.1f} / {pct(ms, 0.95):.1f} / {pct(ms, 0.99):.1f} ms "
            f"(p50 / p95 / p99, n={len(ms)})")


def med(ms: list[float]) -> str:
    return (f"{statistics.median(ms):.0f} ms (median of {len(ms)}; min {min(ms):.0f}, "
            f"max {max(ms):.0f})")


def cgroup_memory(home: str, sandbox_id: str) -> int | None:
    """The sandbox's memory cgroup usage (runtimes/gvisor/_cgroups.py: one parent per
    SBX_HOME, `sbx-` + sha256(<home>/runtime)[:10], the sandbox id below it)."""
    state_dir = os.path.abspath(os.path.join(home, "runtime"))
    parent = "sbx-" + hashlib.sha256(state_dir.encode()).hexdigest()[:10]
    for path in (f"/sys/fs/cgroup/memory/{parent}/{sandbox_id}/memory.usage_in_bytes",  # v1
                 f"/sys/fs/cgroup/{parent}/{sandbox_id}/memory.current"):              # v2
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    return None


def mem_cell(values: list[int]) -> str:
    return (f"{statistics.median(values) / MiB:.1f} MiB (median of {len(values)}; "
            f"{min(values) / MiB:.1f}-{max(values) / MiB:.1f})")


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.notes: list[str] = []

    def row(self, name: str, value: str, baseline: str = "") -> None:
        self.rows.append((name, value, baseline))
        print(f"  {name}: {value}" + (f"  [baseline: {baseline}]" if baseline else ""),
              file=sys.stderr, flush=True)

    def failed(self, section: str, e: BaseException) -> None:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        self.rows.append((section, f"FAILED: {msg}".replace("|", "/"), ""))
        print(f"[{section}] FAILED:", file=sys.stderr)
        traceback.print_exc()

    def print(self, header: str) -> None:
        print(header)
        print()
        print("| measurement | value | baseline |")
        print("|---|---|---|")
        for name, value, base in self.rows:
            print(f"| {name} | {value} | {base} |")
        for n in self.notes:
            print(f"- {n}")


def log(msg: str) -> None:
    print(f"[bench_functions {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- sections ---------------------------------------------------------------------------------
def settle(fn, server, timeout_s: float = 120) -> int:
    """Wait until every container of `fn` is ready (none booting), then 1 s more (the warm
    pool's refills and the runners' start are done). Returns the number of containers."""
    deadline = time.monotonic() + timeout_s
    with server.api() as api:
        while True:
            total = fn.get_current_stats()["num_total_runners"]
            cs = api.get("/v1/containers").json()["containers"]
            ready = [c for c in cs if c["function_id"] == fn.object_id and c["state"] == "ready"]
            if len(ready) >= total or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    time.sleep(1.0)
    return total


def warm_and_map(modal, fn_app, server, rep: Report, calls: int, map_n: int,
                 warm_reps: int) -> float | None:
    """Warm `.remote()` vs `sb.exec("true")`, then the three maps. Returns the mean warm
    `.remote()` in ms (the maps' baseline)."""
    mean_remote = None
    try:
        with fn_app.app.run():
            t = time.perf_counter()
            assert fn_app.noop.remote(1) == 1
            log(f"first .remote() (container start, same app run): {ms_since(t):.0f} ms")
            for _ in range(10):  # warm-up
                fn_app.noop.remote(1)
            remote = timed(lambda: fn_app.noop.remote(1), calls)
            mean_remote = statistics.fmean(remote)

            sb = modal.Sandbox.create()
            try:
                time.sleep(2)  # the warm pool's replacement boot is done: measure exec alone
                for _ in range(10):
                    sb.exec("true").wait()
                execs = timed(lambda: sb.exec("true").wait(), calls)
            finally:
                sb.terminate()
            rep.row("warm `.remote()` round trip (noop(x): return x)", p3(remote),
                    f"SDK `sb.exec('true').wait()` on one sandbox: {p3(execs)}")

            for label, fn in (
                    (f"(a) default: 1 input per container, max_containers={fn_app.MAP_CONTAINERS}",
                     fn_app.noop),
                    ("(b) @modal.concurrent(max_inputs=50), max_containers=1",
                     fn_app.noop_concurrent),
                    ("(c) @modal.batched(max_batch_size=50, wait_ms=10), max_containers=1",
                     fn_app.noop_batched)):
                try:
                    def run_map() -> float:
                        t = time.perf_counter()
                        out = list(fn.map(range(map_n)))
                        dt = time.perf_counter() - t
                        if out != list(range(map_n)):
                            raise AssertionError(f"map returned {out[:5]}... ({len(out)} items)")
                        return dt
                    before = fn.get_current_stats()["num_total_runners"]
                    first = run_map()  # the autoscaler starts containers meanwhile
                    runners = settle(fn, server)  # no container still booting skews the next
                    warm = [run_map() for _ in range(warm_reps)]
                    w = statistics.median(warm)
                    base = (f"{map_n} x sequential warm `.remote()` (mean): "
                            f"{map_n * mean_remote / 1000:.2f} s, {mean_remote:.1f} ms/input")
                    rep.row(f"`.map` {map_n} inputs {label}, warm ({runners} container(s))",
                            f"{w:.2f} s, {w * 1000 / map_n:.2f} ms/input (median of "
                            f"{len(warm)}: {min(warm):.2f}-{max(warm):.2f} s)", base)
                    rep.row(f"`.map` {map_n} inputs {label}, first (from {before} running "
                            "container(s); the autoscaler starts the rest meanwhile)",
                            f"{first:.2f} s, {first * 1000 / map_n:.2f} ms/input", "")
                except Exception as e:
                    rep.failed(f"`.map` {label}", e)
    except Exception as e:
        rep.failed("warm `.remote()` / `.map`", e)
    return mean_remote


def cold_starts(modal, fn_app, rep: Report, runs: int) -> None:
    code_image = modal.Image.debian_slim().add_local_file(fn_app.__file__, "/root/fn_app.py")
    try:
        # warm-up: the code layer exists and the host's caches are warm (not timed)
        with fn_app.app.run():
            fn_app.noop.remote(0)
        modal.Sandbox.create(image=code_image, block_network=False).terminate()
    except Exception as e:
        rep.failed("cold start warm-up", e)
        return
    fn_net, fn_nonet, sb_net, sb_nonet, enter = [], [], [], [], []

    def fn_cold(fn, out):
        t = time.perf_counter()
        with fn_app.app.run():
            enter.append(ms_since(t))
            t = time.perf_counter()
            assert fn.remote(7) == 7
            out.append(ms_since(t))
        time.sleep(0.5)  # not timed: the stopped container's teardown is done

    def sb_cold(block_network, out):
        t = time.perf_counter()
        sb = modal.Sandbox.create(image=code_image, block_network=block_network)
        try:
            if sb.exec("python3", "-c", "pass").wait() != 0:
                raise AssertionError("python3 -c pass failed")
            out.append(ms_since(t))
        finally:
            sb.terminate()
        time.sleep(0.5)

    try:
        for _ in range(runs):  # interleaved, so drift hits both sides alike
            fn_cold(fn_app.noop, fn_net)
            sb_cold(False, sb_net)
            fn_cold(fn_app.noop_nonet, fn_nonet)
            sb_cold(True, sb_nonet)
        rep.row("cold start, call -> first result (network on, the default)", med(fn_net),
                f"cold `Sandbox.create(block_network=False)` same image + `exec python3 -c "
                f"pass` + wait: {med(sb_net)}")
        rep.row("cold start, call -> first result (block_network=True)", med(fn_nonet),
                f"cold `Sandbox.create()` same image (not pooled) + `exec python3 -c pass` "
                f"+ wait: {med(sb_nonet)}")
        rep.row("`with app.run()` enter (deploy request, image cached)", med(enter), "")
    except Exception as e:
        rep.failed("cold start", e)


def numpy_cold(modal, rep: Report, runs: int) -> None:
    import fn_app_numpy as npm

    choices = (("pip_install('numpy')", npm.app, npm.np_version, npm.PIP_IMAGE),
               ("apt_install('python3-numpy') (pip_install failed)", npm.apt_app,
                npm.np_version_apt, npm.APT_IMAGE))
    chosen = None
    for how, app, fn, image in choices:
        try:
            t = time.perf_counter()
            with app.run():
                build = ms_since(t)
                version = fn.remote(0)
            chosen = (how, app, fn, image)
            rep.row(f"numpy image build: debian_slim().{how.split(' ')[0]}, first `app.run()`",
                    f"{build / 1000:.1f} s (numpy {version})", "")
            break
        except Exception as e:
            rep.failed(f"numpy function via {how}", e)
    if chosen is None:
        return
    how, app, fn, image = chosen
    code_image = image.add_local_file(npm.__file__, "/root/fn_app_numpy.py")
    fn_ms, sb_ms = [], []
    try:
        modal.Sandbox.create(image=code_image, block_network=False).terminate()  # resolved once
        for _ in range(runs):
            with app.run():
                t = time.perf_counter()
                fn.remote(0)
                fn_ms.append(ms_since(t))
            time.sleep(0.5)
            t = time.perf_counter()
            sb = modal.Sandbox.create(image=code_image, block_network=False)
            try:
                if sb.exec("python3", "-c", "import numpy").wait() != 0:
                    raise AssertionError("python3 -c 'import numpy' failed in the sandbox")
                sb_ms.append(ms_since(t))
            finally:
                sb.terminate()
            time.sleep(0.5)
        rep.row(f"cold start, call -> first result, module imports numpy ({how})", med(fn_ms),
                f"cold `Sandbox.create()` same image + `exec python3 -c 'import numpy'` + "
                f"wait: {med(sb_ms)}")
    except Exception as e:
        rep.failed("numpy cold start", e)


def memory(modal, fn_app, server, rep: Report, settle_s: float) -> None:
    n = fn_app.MIN_WARM
    code_image = modal.Image.debian_slim().add_local_file(fn_app.__file__, "/root/fn_app.py")
    try:
        with fn_app.warm_app.run() as a, server.api() as api:
            deadline = time.monotonic() + 180
            while True:
                cs = api.get("/v1/containers", params={"app_id": a.app_id}).json()["containers"]
                ready = [c["container_id"] for c in cs if c["state"] == "ready"]
                if len(ready) >= n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(ready)} of {n} min_containers ready after 180 s")
                time.sleep(0.5)
            time.sleep(settle_s)
            fn_mem = [m for m in (cgroup_memory(server.home, c) for c in ready) if m]
        if not fn_mem:
            raise RuntimeError("no memory cgroup found for the function containers")
    except Exception as e:
        rep.failed("memory per idle warm function container", e)
        return
    try:
        plain = [modal.Sandbox.create(image=code_image, block_network=False) for _ in range(n)]
        py = [modal.Sandbox.create("python3", "-c", "import time; time.sleep(3600)",
                                   image=code_image, block_network=False) for _ in range(n)]
        try:
            time.sleep(settle_s)
            plain_mem = [m for m in (cgroup_memory(server.home, s.object_id) for s in plain) if m]
            py_mem = [m for m in (cgroup_memory(server.home, s.object_id) for s in py) if m]
        finally:
            for s in plain + py:
                s.terminate()
        rep.row(f"memory per idle warm function container (min_containers={n}; memory "
                f"cgroup usage)", mem_cell(fn_mem),
                f"idle plain sandbox, same image: {mem_cell(plain_mem)}; plain sandbox whose "
                f"main process is an idle `python3` (time.sleep): {mem_cell(py_mem)}")
    except Exception as e:
        rep.failed("memory baselines", e)


# ---- cleanup ----------------------------------------------------------------------------------
def stop_everything(server) -> None:
    """Every app stopped, every sandbox terminated, through the API (the server leaves
    running sandboxes running when it stops)."""
    try:
        with server.api() as api:
            for a in api.get("/v1/apps").json().get("apps", []):
                if a.get("state") != "stopped":
                    api.post(f"/v1/apps/{a['app_id']}/stop")
            for s in api.get("/v1/sandboxes", params={"limit": 10000}).json().get("sandboxes", []):
                if s.get("state") in ("creating", "running"):
                    api.delete(f"/v1/sandboxes/{s['sandbox_id']}")
    except Exception as e:
        log(f"cleanup through the API failed: {e}")


def machine_note(args) -> str:
    runsc = subprocess.run(["runsc", "--version"], capture_output=True, text=True,
                           check=False).stdout
    cg = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    mode = "quick" if args.quick else "full"
    return (f"runsc: {runsc.splitlines()[0] if runsc else '?'}; {os.cpu_count()} cores; "
            f"kernel {platform.release()}; cgroup {cg}; Python {platform.python_version()}; "
            f"{mode} run: calls={args.calls}, map_n={args.map_n}, cold_runs={args.cold_runs}")


def _on_signal(signum, frame):  # SIGTERM/SIGHUP: unwind through every finally/`with`
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a short run (fewer calls, inputs, runs)")
    ap.add_argument("--calls", type=int, default=None, help="warm round trips (200; quick 30)")
    ap.add_argument("--map-n", type=int, default=None, help="inputs per map (500; quick 100)")
    ap.add_argument("--cold-runs", type=int, default=None, help="cold starts each (5; quick 2)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: "
                    "warm,cold,numpy,memory")
    args = ap.parse_args()
    args.calls = args.calls or (30 if args.quick else 200)
    args.map_n = args.map_n or (100 if args.quick else 500)
    args.cold_runs = args.cold_runs or (2 if args.quick else 5)
    skip = set(filter(None, args.skip.split(",")))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    home = tempfile.mkdtemp(prefix="sbx-benchfn-", dir="/tmp")
    server = Server(home, product_defaults=True)
    rep = Report()
    interrupted: BaseException | None = None
    load0 = os.getloadavg()[0]
    try:
        server.start()
        os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
        import fn_app
        import sandbox_service as modal

        log(f"server {server.url}, SBX_HOME {home}; base image ...")
        modal.Sandbox.create().terminate()  # base image ready (from the cache), caches warm
        if "warm" not in skip:
            log("warm .remote() and .map")
            warm_and_map(modal, fn_app, server, rep, args.calls, args.map_n,
                         2 if args.quick else 3)
        if "cold" not in skip:
            log("cold starts")
            cold_starts(modal, fn_app, rep, args.cold_runs)
        if "numpy" not in skip:
            log("numpy cold starts (builds the image first)")
            numpy_cold(modal, rep, args.cold_runs)
        if "memory" not in skip:
            log("memory")
            memory(modal, fn_app, server, rep, 2.0 if args.quick else 5.0)
    except BaseException as e:
        rep.failed("benchmark", e)
        if not isinstance(e, Exception):
            rep.notes.append(f"interrupted ({type(e).__name__}): the table is partial")
            interrupted = e
    finally:
        log("stopping apps, sandboxes and the server")
        stop_everything(server)
        server.stop()
        if os.environ.get("BENCH_KEEP_HOME"):
            log(f"kept {home} (server log: {server.log_path})")
        else:
            shutil.rmtree(home, ignore_errors=True)
    rep.notes.append(f"load average (1 min) at start {load0:.2f}, at end "
                     f"{os.getloadavg()[0]:.2f}: other work on the machine skews the numbers")
    rep.print(machine_note(args))
    if interrupted is not None:
        sys.exit(130 if isinstance(interrupted, KeyboardInterrupt)
                 else getattr(interrupted, "code", None) or 1)


if __name__ == "__main__":
    main()
