"""Dict and Queue benchmark: operations per second through the SDK, with the baseline of
the same SDK's cheapest request (`GET /v1/info`) measured in the same run.

    python benchmarks/bench_kv.py [--ops 500]

Starts its own `sbx serve` (fresh SBX_HOME, removed after) and prints a markdown table:
sequential Dict put / get (small values), Dict put of a 1 MiB value, `update` of 1000
keys in one request, Queue put / get one at a time, `put_many` + `get_many` of 1000,
and a Queue hand-off (a blocked `get` woken by a `put` from another thread).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from sbxtest import Server  # noqa: E402


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} ops/s ({seconds / n * 1000:.2f} ms each)"


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=500)
    n = ap.parse_args().ops
    home = tempfile.mkdtemp(prefix="sbx-benchkv-", dir="/tmp")
    server = Server(home, product_defaults=True)
    rows: list[tuple[str, str]] = []
    try:
        server.start()
        os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
        import sandbox_service as modal
        from sandbox_service._client import default_client
        from sandbox_service._sync import LOOP

        info = timed(lambda i: LOOP.run(default_client().request("GET", "/v1/info")), n)
        rows.append(("baseline: SDK `GET /v1/info` round trip", rate(n, info)))
        with modal.Dict.ephemeral() as d:
            rows.append(("Dict put (small value)", rate(n, timed(lambda i: d.put(i, i), n))))
            rows.append(("Dict get", rate(n, timed(lambda i: d.get(i), n))))
            big = b"x" * (1 << 20)
            t = timed(lambda i: d.put("big", big), 20)
            rows.append(("Dict put, 1 MiB value", f"{20 * 1 / t:,.0f} MiB/s "
                         f"({t / 20 * 1000:.1f} ms each)"))
            t0 = time.perf_counter()
            d.update({f"k{i}": i for i in range(1000)})
            rows.append(("Dict update of 1000 keys (one request)",
                         f"{(time.perf_counter() - t0) * 1000:.0f} ms"))
        with modal.Queue.ephemeral() as q:
            rows.append(("Queue put", rate(n, timed(lambda i: q.put(i), n))))
            rows.append(("Queue get", rate(n, timed(lambda i: q.get(), n))))
            t0 = time.perf_counter()
            q.put_many(list(range(1000)))
            got = q.get_many(1000)
            assert len(got) == 1000
            rows.append(("Queue put_many + get_many of 1000",
                         f"{(time.perf_counter() - t0) * 1000:.0f} ms"))
            lat = []
            for _ in range(20):
                t = threading.Timer(0.05, lambda: q.put(time.perf_counter()))
                t.start()
                sent = q.get(timeout=10)
                lat.append((time.perf_counter() - sent) * 1000)
                t.join()
            rows.append(("Queue hand-off: put -> a blocked get returns, p50",
                         f"{statistics.median(lat):.1f} ms"))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
