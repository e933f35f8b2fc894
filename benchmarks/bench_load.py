"""Load benchmark: unread output streams and create churn, each with a baseline in the run.

    python benchmarks/bench_load.py [--streams 200] [--clients 50] [--seconds 180]
                                    [--server-repo PATH]

Starts its own `sbx serve` (fresh SBX_HOME; the base image from $SBX_IMAGE_CACHE) and prints
markdown tables:
  1. Unread streams: server RSS with no streams (baseline), then with N exec WebSockets
     running `cat /dev/zero` whose clients never read (raw sockets: the upgrade, one request
     frame, then no recv); and a bystander's `exec echo` latency, idle vs meanwhile.
  2. Churn: C clients each looping create -> exec echo -> terminate for S seconds; creates/s,
     failures by error, latency; the baseline is one client doing the same. Also counts the
     server log's "Unknown child process" warnings (a stolen exit status).
`--server-repo` runs the server from another checkout (e.g. an older commit, for a before /
after figure); the clients are always this checkout's.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from bench_core import pct, timed  # noqa: E402
from rawws import open_unread_exec  # noqa: E402
from sbxtest import Server  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {pct(values, 0.95):.1f}" if values else "-"


def unread_streams(server: Server, sbx, n: int, hold_s: float) -> list[str]:
    boxes = [sbx.Sandbox.create(timeout=1800) for _ in range(max(1, n // 20))]
    bystander = sbx.Sandbox.create(timeout=1800)
    for sb in boxes + [bystander]:
        sb.exec("true").wait()
    time.sleep(2)
    idle_rss = rss_mib(server.proc.pid)
    idle_echo = timed(lambda: bystander.exec("echo", "hi").wait(), 30)

    def hold(argv: list[str]) -> tuple[float, list]:
        socks = [open_unread_exec(server.port, server.token, boxes[i % len(boxes)].object_id,
                                  argv) for i in range(n)]
        time.sleep(hold_s)  # every buffer on the way is as full as it will get
        return rss_mib(server.proc.pid), socks

    quiet_rss, socks = hold(["sleep", "600"])  # the streams' bookkeeping, no output
    for s in socks:
        s.close()
    time.sleep(3)
    busy_rss, socks = hold(["cat", "/dev/zero"])
    busy_echo = timed(lambda: bystander.exec("echo", "hi").wait(), 30)
    for s in socks:
        s.close()
    for sb in boxes + [bystander]:
        sb.terminate()
    grown, quiet = busy_rss - idle_rss, quiet_rss - idle_rss
    return [
        "| measurement | value | baseline | baseline value |",
        "|---|---|---|---|",
        f"| server RSS, {n} unread `cat /dev/zero` streams, after {hold_s:.0f} s | {busy_rss:.0f} MiB "
        f"(+{grown:.0f} MiB, {grown * 1024 / n:.0f} KiB per stream) | no streams | "
        f"{idle_rss:.0f} MiB |",
        f"| server RSS, {n} streams of `sleep 600` (no output: bookkeeping only) | "
        f"{quiet_rss:.0f} MiB (+{quiet:.0f} MiB, {quiet * 1024 / n:.0f} KiB per stream) | "
        f"no streams | {idle_rss:.0f} MiB |",
        f"| bystander exec echo, ms (p50 / p95), meanwhile | {ms(busy_echo)} | idle server | "
        f"{ms(idle_echo)} |",
    ]


def churn(sbx, clients: int, seconds: float) -> dict:
    ok: list[float] = []
    errors: collections.Counter = collections.Counter()
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def loop():
        while time.monotonic() < stop:
            t = time.perf_counter()
            sb = None
            try:
                sb = sbx.Sandbox.create(timeout=300)
                sb.exec("echo", "hi").wait()
                took = (time.perf_counter() - t) * 1000
                with lock:
                    ok.append(took)
            except sbx.SandboxError as e:
                with lock:
                    errors[f"{type(e).__name__}: {str(e)[:80]}"] += 1
            finally:
                if sb is not None:
                    try:
                        sb.terminate()
                    except sbx.SandboxError:
                        pass

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    return {"ok": ok, "errors": errors, "rate": len(ok) / wall, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--hold-s", type=float, default=30,
                    help="how long the unread streams run before RSS is read")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--server-repo", default=REPO)
    ap.add_argument("--skip-churn", action="store_true")
    ap.add_argument("--skip-streams", action="store_true")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp")
    server = Server(home, product_defaults=True)
    base_env = server.env
    server.env = lambda: {**base_env(), "SBX_MAX_STREAMS": str(max(1024, args.streams * 2)),
                          "SBX_MAX_SANDBOXES": "1000", "SBX_CREATES_PER_MINUTE": "100000",
                          "SBX_MAX_SANDBOXES_PER_PRINCIPAL": "1000",
                          "SBX_STREAM_STALL_S": str(args.hold_s + 600)}  # held, not dropped
    import sbxtest
    sbxtest.REPO = args.server_repo  # the server runs from this checkout (python -m, cwd)
    server.start()
    os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
    import sandbox_service as sbx

    out = []
    try:
        sbx.Sandbox.create().terminate()  # base image ready, caches warm
        if not args.skip_streams:
            out += unread_streams(server, sbx, args.streams, args.hold_s) + [""]
        if not args.skip_churn:
            one = churn(sbx, 1, min(60.0, args.seconds))
            many = churn(sbx, args.clients, args.seconds)
            log = server.tail(50_000_000)
            stolen = log.count("Unknown child process")
            out += [
                "| churn: create -> exec echo -> terminate | value | baseline | baseline value |",
                "|---|---|---|---|",
                f"| {args.clients} clients, {args.seconds:.0f} s: creates/s without error | "
                f"{many['rate']:.2f} ({len(many['ok'])} ok, {sum(many['errors'].values())} "
                f"failed) | 1 client, {one['wall']:.0f} s | {one['rate']:.2f} "
                f"({len(one['ok'])} ok, {sum(one['errors'].values())} failed) |",
                f"| create -> first exec done, ms (p50 / p95) | {ms(many['ok'])} | 1 client | "
                f"{ms(one['ok'])} |",
                f"| 'Unknown child process' warnings in the server log | {stolen} | | |",
            ]
            for err, n in (many["errors"] + one["errors"]).most_common(8):
                out.append(f"| failure: {err} | {n} | | |")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    rev = subprocess.run(["git", "-C", args.server_repo, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    print(f"server from {args.server_repo} ({rev}); {os.cpu_count()} cores; "
          f"runsc {subprocess.run(['runsc', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
