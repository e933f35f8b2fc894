"""Web endpoint benchmark, with its baseline in the same run.

    python benchmarks/bench_web.py [--requests 300]

Starts its own `sbx serve` (fresh SBX_HOME, removed after), runs benchmarks/web_app.py and
prints a markdown table:
  - a warm endpoint (one container, kept warm): GET round trip p50/p99 from a client on
    this machine, vs the same request made inside the container straight to the app
  - requests/s with 32 concurrent clients, `@modal.concurrent(max_inputs=64)`, 1 container
  - first request after scale to zero for a FastAPI app (its container starts on it)
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
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bench_core import pct  # noqa: E402
from sbxtest import Server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    n = ap.parse_args().requests
    home = tempfile.mkdtemp(prefix="sbx-benchweb-", dir="/tmp")
    server = Server(home, product_defaults=True)
    rows: list[tuple[str, str, str]] = []
    try:
        server.start()
        os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
        import httpx

        import web_app

        with web_app.app.run():
            url = web_app.web.get_web_url()
            with httpx.Client(timeout=120) as c:
                for _ in range(20):
                    c.get(url)  # warm
                lat = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    assert c.get(url).status_code == 200
                    lat.append((time.perf_counter() - t0) * 1000)
            inside = web_app.inside.remote(n)
            rows.append(("warm GET round trip, p50 / p99",
                         f"{pct(lat, 0.5):.2f} / {pct(lat, 0.99):.2f} ms",
                         f"in the container, straight to the app: {pct(inside, 0.5):.3f} / "
                         f"{pct(inside, 0.99):.3f} ms"))

            async def load() -> float:
                async with httpx.AsyncClient(timeout=120,
                                             limits=httpx.Limits(max_connections=32)) as ac:
                    sem = asyncio.Semaphore(32)

                    async def one():
                        async with sem:
                            r = await ac.get(url)
                            assert r.status_code == 200
                    t0 = time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(n * 3)))
                    return time.perf_counter() - t0
            secs = asyncio.run(load())
            rows.append(("32 concurrent clients, 1 container (max_inputs=64)",
                         f"{n * 3 / secs:,.0f} requests/s", ""))
            furl = web_app.fast.get_web_url()
            assert httpx.get(furl, timeout=300).status_code == 200  # builds, starts
            colds = []
            for _ in range(3):
                fid = web_app.fast.object_id
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    with server.api() as api:
                        if not [x for x in api.get("/v1/containers").json()["containers"]
                                if x["function_id"] == fid]:
                            break
                    time.sleep(0.5)
                t0 = time.perf_counter()
                assert httpx.get(furl, timeout=300).status_code == 200
                colds.append((time.perf_counter() - t0) * 1000)
            rows.append(("first request after scale to zero, FastAPI app (median of 3)",
                         f"{statistics.median(colds):.0f} ms", ""))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("| measurement | endpoint | baseline |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
