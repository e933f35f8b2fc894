"""Code interpreter latency: a cell in a persistent context against a fresh python3 per
call (the stateless way), measured in the same run.

    python benchmarks/bench_interpreter.py [--runs 30]

Starts its own `sbx serve` on a free port with a fresh SBX_HOME (the base image comes from
$SBX_IMAGE_CACHE when set), then prints a markdown table (median / p95 ms, SDK, sync API):
  - create_context (a new python3 process in the sandbox, ready for cells)
  - run_code("x += 1; x") in a warm context
  - run_code that imports json and dumps a dict (import already cached after the first)
  - baseline: exec `python3 -c 'print(1 + 1)'` to completion (one HTTP request)
  - baseline: exec `echo` to completion (one HTTP request)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bench_core import row, timed  # noqa: E402
from sbxtest import Server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp")
    srv = Server(home, product_defaults=True)
    srv.start()
    os.environ.update(SBX_URL=srv.url, SBX_TOKEN=srv.token)
    import sandbox_service as sbx

    try:
        sb = sbx.Sandbox.create(timeout=900)
        create = timed(lambda: sb.create_context(), min(args.runs, 20))
        ctx = sb.create_context()
        sb.run_code("x = 0", context=ctx)
        cell = timed(lambda: sb.run_code("x += 1\nx", context=ctx), args.runs)
        js = timed(lambda: sb.run_code("import json\njson.dumps({'a': x})", context=ctx), args.runs)
        py = timed(lambda: sb.exec_output("python3", "-c", "print(1 + 1)"), args.runs)
        echo = timed(lambda: sb.exec_output("echo", "hi"), args.runs)
        sb.terminate()
        print("| operation (ms, median / p95) | interpreter | baseline | baseline ms |")
        print("|---|---|---|---|")
        print(row("create_context", create))
        print(row("run_code `x += 1; x`", cell, "exec python3 -c", py))
        print(row("run_code `import json; json.dumps(...)`", js, "exec echo", echo))
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
