"""Volume benchmark, with its baselines in the same run.

    python benchmarks/bench_volume.py [--mib 256]

Starts its own `sbx serve` (fresh SBX_HOME, removed after; volume quota 4 GiB) and prints
a markdown table:
  - inside one sandbox, `dd` writes (fsync at the end) and reads of `--mib` MiB on the
    mounted volume against the same on the sandbox's own disk (/tmp: its quota'd ext4),
    and small files (1000 x 4 KiB from one Python process: create + sync, read back)
  - from this client: a file through the volume API (upload, download) against the
    same bytes through the sandbox files API (sb.filesystem)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from sbxtest import Server  # noqa: E402

SCRIPT = r"""
set -e
d=$1; n=$2
t0=$(date +%s%N); dd if=/dev/zero of=$d/f bs=1M count=$n conv=fsync 2>/dev/null; t1=$(date +%s%N)
dd if=$d/f of=/dev/null bs=1M 2>/dev/null; t2=$(date +%s%N)
rm -f $d/f
echo "write=$(( (t1-t0)/1000 )) read=$(( (t2-t1)/1000 ))"
python3 -c "$SMALL" $d
"""
# 1000 files of 4 KiB in one process (a shell loop would time fork+exec, not the disk)
SMALL = r"""
import os, sys, time
d = os.path.join(sys.argv[1], "small"); os.makedirs(d)
t0 = time.perf_counter()
for i in range(1000):
    with open(f"{d}/{i}", "wb") as f:
        f.write(b"x" * 4096)
os.sync(); t1 = time.perf_counter()
for i in range(1000):
    with open(f"{d}/{i}", "rb") as f:
        f.read()
t2 = time.perf_counter()
for i in range(1000):
    os.remove(f"{d}/{i}")
os.rmdir(d)
print(f"small_w={int((t1 - t0) * 1e6)} small_r={int((t2 - t1) * 1e6)}")
"""


def parse(out: str) -> dict[str, float]:
    return {k: int(v) / 1e6 for k, v in re.findall(r"(\w+)=(\d+)", out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="sbx-benchvol-", dir="/tmp")
    os.environ["SBX_VOLUME_QUOTA_MIB"] = "4096"
    server = Server(home, product_defaults=True)
    try:
        server.start()
        os.environ.update(SBX_URL=server.url, SBX_TOKEN=server.token)
        import sandbox_service as modal

        with modal.Volume.ephemeral() as vol:
            sb = modal.Sandbox.create(volumes={"/data": vol}, ephemeral_disk=2048,
                                      memory=1024, timeout=600)
            try:
                res: dict[str, list[dict[str, float]]] = {"/data": [], "/tmp": []}
                for _ in range(args.runs):
                    for where in res:
                        p = sb.exec("sh", "-c", SCRIPT, "sh", where, str(args.mib),
                                    env={"SMALL": SMALL})
                        out = p.stdout.read()
                        assert p.wait() == 0, p.stderr.read()
                        res[where].append(parse(out))
                med = {w: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]}
                       for w, rs in res.items()}
                mib = args.mib
                rows = [("measurement", "volume (/data)", "sandbox disk (/tmp)")]
                rows.append((f"write {mib} MiB (dd, fsync), MiB/s",
                             *(f"{mib / med[w]['write']:,.0f}" for w in ("/data", "/tmp"))))
                rows.append((f"read {mib} MiB (dd, page cache warm), MiB/s",
                             *(f"{mib / med[w]['read']:,.0f}" for w in ("/data", "/tmp"))))
                rows.append(("1000 files of 4 KiB: create + sync, ms",
                             *(f"{med[w]['small_w'] * 1000:,.0f}" for w in ("/data", "/tmp"))))
                rows.append(("1000 files of 4 KiB: read, ms",
                             *(f"{med[w]['small_r'] * 1000:,.0f}" for w in ("/data", "/tmp"))))
                blob = os.urandom(64 << 20)
                t0 = time.perf_counter()
                with vol.batch_upload(force=True) as batch:
                    batch.put_file(io.BytesIO(blob), "blob.bin")
                up = time.perf_counter() - t0
                t0 = time.perf_counter()
                got = b"".join(vol.read_file("blob.bin"))
                down = time.perf_counter() - t0
                assert got == blob
                t0 = time.perf_counter()
                sb.filesystem.write_bytes(blob, "/tmp/blob.bin")
                sb_up = time.perf_counter() - t0
                t0 = time.perf_counter()
                assert sb.filesystem.read_bytes("/tmp/blob.bin") == blob
                sb_down = time.perf_counter() - t0
                rows.append(("", "volume API", "sandbox files API (baseline)"))
                rows.append(("upload 64 MiB from the client, MiB/s", f"{64 / up:,.0f}",
                             f"{64 / sb_up:,.0f}"))
                rows.append(("download 64 MiB to the client, MiB/s", f"{64 / down:,.0f}",
                             f"{64 / sb_down:,.0f}"))
            finally:
                sb.terminate()
        print(f"| {' | '.join(rows[0])} |")
        print("|---|---|---|")
        for r in rows[1:]:
            print(f"| {' | '.join(r)} |")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
