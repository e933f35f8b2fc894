"""What the security layers cost, each against its own baseline in the same run.

    python benchmarks/bench_security.py [--runs 15] [--name deb.debian.org]

Starts its own `sbx serve` (fresh SBX_HOME; the base image from $SBX_IMAGE_CACHE when
set) and prints a markdown table:
  - create -> first exec (cold: memory=1000 bypasses the warm pool) with no network
    (baseline), open egress (a netns + veth + nftables entry), a cidr_allowlist, and a
    domain_allowlist (plus a resolver listener);
  - a DNS lookup inside a sandbox (timed in the sandbox): through the service's pinning
    resolver (domain_allowlist) vs the host's resolver (open egress);
  - exec echo round trip with the admin token (baseline) vs a user API key (key lookup,
    ownership check);
  - an HTTP GET through the authenticated port proxy vs the same request made inside the
    sandbox by an exec (what an agent would do without the proxy).
Needs the machine's DNS to resolve `--name` for the DNS rows (skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from bench_core import pct, timed  # noqa: E402  (same statistics as the core table)
from sbxtest import Server  # noqa: E402

LOOKUP = ("import json, socket, sys, time\nname, n = sys.argv[1], int(sys.argv[2])\nout = []\n"
          "for _ in range(n):\n    t = time.perf_counter()\n"
          "    try:\n        socket.getaddrinfo(name, 443, socket.AF_INET)\n"
          "    except OSError:\n        print(json.dumps(None)); sys.exit(0)\n"
          "    out.append((time.perf_counter() - t) * 1000)\nprint(json.dumps(out))\n")
GET = ("import time, urllib.request\nt = time.perf_counter()\n"
       "urllib.request.urlopen('http://127.0.0.1:8000/').read()\n"
       "print((time.perf_counter() - t) * 1000)\n")


def cell(ms: list[float] | None) -> str:
    return f"{statistics.median(ms):.1f} / {pct(ms, 0.95):.1f}" if ms else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--name", default="deb.debian.org")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-bench-sec-", dir="/tmp")
    server = Server(home, product_defaults=True)
    server.start()
    os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
    import sandbox_service as sbx

    rows: list[tuple[str, list[float] | None, str, list[float] | None]] = []
    try:
        sbx.Sandbox.create().terminate()  # base image ready

        made: list = []

        def create(**kw):
            def run():
                sb = sbx.Sandbox.create(memory=1000, **kw)
                sb.exec("true").wait()
                made.append(sb)
            return run

        def measure(**kw) -> list[float]:
            try:
                return timed(create(**kw), args.runs)
            finally:  # not timed
                while made:
                    made.pop().terminate()
        base = measure()
        for name, kw in (("open egress", {}), ("cidr_allowlist", {"cidr_allowlist": ["192.0.2.0/24"]}),
                         ("domain_allowlist", {"domain_allowlist": [args.name]})):
            rows.append((f"create -> first exec, {name} (cold)",
                         measure(block_network=False, **kw), "no network (cold)", base))

        def lookups(**kw) -> list[float] | None:
            sb = sbx.Sandbox.create(block_network=False, **kw)
            try:
                p = sb.exec("python3", "-c", LOOKUP, args.name, str(args.runs * 2))
                out = p.stdout.read()
                p.wait()
                return json.loads(out)
            finally:
                sb.terminate()
        rows.append((f"DNS lookup in sandbox, pinning resolver ({args.name})",
                     lookups(domain_allowlist=[args.name]), "host resolver (open egress)",
                     lookups()))

        sb = sbx.Sandbox.create(memory=1000)
        admin = timed(lambda: sb.exec("echo", "hi").wait(), args.runs * 2)
        sb.terminate()
        with server.api() as api:
            key = api.post("/v1/tokens", json={"scope": "user", "principal": "bench"}).json()
        os.environ["SBX_TOKEN"] = key["token"]  # the SDK's default client follows the env
        try:
            sbu = sbx.Sandbox.create(memory=1000)
            keyed = timed(lambda: sbu.exec("echo", "hi").wait(), args.runs * 2)
            sbu.terminate()
        finally:
            os.environ["SBX_TOKEN"] = server.token
        rows.append(("exec echo round trip, user API key", keyed, "admin token", admin))

        sb = sbx.Sandbox.create("python3", "-m", "http.server", "8000", "--bind", "127.0.0.1",
                                encrypted_ports=[8000], memory=1000)
        try:
            url = sb.tunnels()[8000].url
            hdr = {"Authorization": f"Bearer {server.token}"}
            with httpx.Client(timeout=30) as h:
                for _ in range(50):  # until the server inside listens
                    if h.get(url + "/", headers=hdr).status_code == 200:
                        break
                    time.sleep(0.1)
                proxied = timed(lambda: h.get(url + "/", headers=hdr).raise_for_status(),
                                args.runs * 2)

            def inside():
                p = sb.exec("python3", "-c", GET)
                p.stdout.read()
                p.wait()
            via_exec = timed(inside, args.runs)
        finally:
            sb.terminate()
        rows.append(("HTTP GET through the port proxy", proxied,
                     "same GET by an exec inside the sandbox", via_exec))
    finally:
        server.stop()

    print("| measurement | ms (p50 / p95) | baseline | baseline ms (p50 / p95) |")
    print("|---|---|---|---|")
    for name, ms, bname, bms in rows:
        print(f"| {name} | {cell(ms)} | {bname} | {cell(bms)} |")


if __name__ == "__main__":
    main()
