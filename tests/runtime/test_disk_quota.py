"""Writable-disk quota per sandbox (`ephemeral_disk=` MiB, wire `disk_mib`), separate from
memory: a write past it gets ENOSPC and the sandbox lives on; /tmp shares the quota; disk
use does not count against memory; nothing (mounts, loop devices, files) outlives the
sandbox, also across a server restart."""

from __future__ import annotations

import glob
import os

import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(240)

FILL = r"""
import os, sys
path, limit = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
chunk = b'\xab' * (1 << 20)
n = 0
try:
    with open(path, 'wb') as f:
        while n < limit:
            f.write(chunk)
            n += 1
        f.flush()
        os.fsync(f.fileno())
    print('wrote', n)
except OSError as e:
    print('stopped', n, e.errno, e.strerror)
"""


def _fill(sb, path: str, limit_mib: int) -> list[str]:
    p = sb.exec("python3", "-c", FILL, path, str(limit_mib), timeout=120)
    out = p.stdout.read()
    assert p.wait() == 0, (out, p.stderr.read())
    return out.split(maxsplit=3)


def _sh(sb, script: str) -> str:
    p = sb.exec("sh", "-c", script, timeout=60)
    out = p.stdout.read()
    assert p.wait() == 0, (out, p.stderr.read())
    return out


def _host_state(server, sid: str) -> dict[str, list[str]]:
    """This sandbox's mounts, loop devices and directory on the host."""
    base = os.path.join(server.home, "runtime", "sandboxes", sid)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if base in line.split()[4]]
    loops = []
    for bf in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(bf) as f:
                if f.read().startswith(base + "/"):
                    loops.append(bf.split("/")[3])
        except OSError:
            pass
    return {"mounts": mounts, "loops": loops, "dir": [base] if os.path.exists(base) else []}


def test_filling_the_disk_gives_enospc_and_the_sandbox_lives(server):
    sb = sbx.Sandbox.create(ephemeral_disk=64, memory=256, timeout=180)
    try:
        assert sb.info.disk_mib == 64
        # df inside sees the quota, not the host's disk
        size_kib = int(_sh(sb, "df -k / | tail -1 | awk '{print $2}'"))
        assert 48 * 1024 < size_kib <= 64 * 1024, size_kib
        word, n, err, msg = _fill(sb, "/var/fill/big", 200)
        assert word == "stopped", (word, n)
        assert int(err) == 28 and msg.strip() == "No space left on device", (err, msg)
        assert 40 <= int(n) <= 64, n
        assert sb.refresh().state == "running"
        assert _sh(sb, "echo alive") == "alive\n"
        # the file API says what to do
        with pytest.raises(sbx.SandboxError) as exc:
            sb.filesystem.write_bytes(b"x" * (4 << 20), "/root/more")
        assert "ephemeral_disk" in str(exc.value), exc.value
        # space freed is space usable again: a write within the quota works
        _sh(sb, "rm /var/fill/big")
        assert _fill(sb, "/var/fill/small", 20) == ["wrote", "20"]
        assert _sh(sb, "stat -c %s /var/fill/small") == f"{20 << 20}\n"
    finally:
        sb.terminate()


def test_tmp_shares_the_quota(server):
    sb = sbx.Sandbox.create(ephemeral_disk=48, timeout=180)
    try:
        # /tmp is on the sandbox's disk, not an in-memory tmpfs
        same = _sh(sb, "python3 -c \"import os; a, b = os.statvfs('/'), os.statvfs('/tmp'); "
                       "print(a.f_blocks == b.f_blocks and a.f_blocks > 0)\"")
        assert same == "True\n"
        assert _sh(sb, "stat -c %a /tmp") == "1777\n"
        _fill(sb, "/root/first", 20)
        word, n, err, _ = _fill(sb, "/tmp/fill", 200)
        assert (word, err) == ("stopped", "28"), (word, n, err)
        assert int(n) < 30, n  # the 20 MiB under /root counted against the same quota
        assert _sh(sb, "echo alive") == "alive\n"
    finally:
        sb.terminate()


def test_disk_writes_do_not_count_against_memory(server):
    """400 MiB written to a 512 MiB disk in a sandbox with 128 MiB of memory: with writes
    in memory this is an OOM kill."""
    sb = sbx.Sandbox.create(ephemeral_disk=512, memory=128, timeout=180)
    try:
        assert _fill(sb, "/data/blob", 400) == ["wrote", "400"]
        assert _fill(sb, "/tmp/blob", 60) == ["wrote", "60"]
        assert sb.refresh().state == "running"
        assert _sh(sb, "stat -c %s /data/blob") == f"{400 << 20}\n"
    finally:
        sb.terminate()


def test_default_disk_and_limits(server, api):
    sb = sbx.Sandbox.create(timeout=60)
    try:
        assert sb.info.disk_mib == 4096  # SBX_DEFAULT_DISK_MIB's default
    finally:
        sb.terminate()
    smallest = sbx.Sandbox.create(ephemeral_disk=16, timeout=60)  # the wire's minimum boots
    try:
        assert _sh(smallest, "echo small") == "small\n"
    finally:
        smallest.terminate()
    with pytest.raises(sbx.InvalidRequestError) as exc:
        sbx.Sandbox.create(ephemeral_disk=10 ** 6, timeout=60)
    assert "SBX_MAX_DISK_MIB" in str(exc.value) and "ask for less" in str(exc.value)
    for bad in (0, 8, -1, "big"):
        r = api.post("/v1/sandboxes", json={"disk_mib": bad})
        assert r.status_code in (400, 422), r.text
        assert "disk_mib" in r.text


def test_disk_teardown_leaves_nothing_also_after_a_restart(server):
    a = sbx.Sandbox.create(ephemeral_disk=32, timeout=180)
    b = sbx.Sandbox.create(ephemeral_disk=32, timeout=180)
    try:
        for sb in (a, b):
            st = _host_state(server, sb.object_id)
            # the disk, the overlay on it, and the agent's socket directory (a tmpfs)
            assert len(st["mounts"]) == 3 and len(st["loops"]) == 1, st
        a.filesystem.write_text("kept", "/root/keep.txt")
        a.terminate()
        assert _host_state(server, a.object_id) == {"mounts": [], "loops": [], "dir": []}
        # b's disk survives a server crash: still mounted, its files still there
        server.restart(kill=True)
        again = sbx.Sandbox.from_id(b.object_id)
        again.filesystem.write_text("after", "/root/after.txt")
        assert again.filesystem.read_text("/root/after.txt") == "after"
    finally:
        for sb in (a, b):
            try:
                sb.terminate()
            except sbx.SandboxError:
                pass
    assert _host_state(server, b.object_id) == {"mounts": [], "loops": [], "dir": []}


def test_pool_hands_out_only_sandboxes_with_the_asked_disk(server, api):
    from test_warm_pool import _wait_pool

    running = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    pool = _wait_pool(server, running)
    other = sbx.Sandbox.create(ephemeral_disk=100, timeout=60)
    default = sbx.Sandbox.create(timeout=60)
    try:
        assert other.object_id not in pool
        assert other.info.disk_mib == 100
        size_kib = int(_sh(other, "df -k / | tail -1 | awk '{print $2}'"))
        assert size_kib <= 100 * 1024, size_kib
        assert default.object_id in pool
        size_kib = int(_sh(default, "df -k / | tail -1 | awk '{print $2}'"))
        assert 3500 * 1024 < size_kib <= 4096 * 1024, size_kib
    finally:
        other.terminate()
        default.terminate()


async def test_collector_of_a_restarted_runtime_reaps_a_stray_disk(server, tmp_path):
    """A sandbox with a disk that no server knows (as after a crash mid-create) is reaped by
    the next runtime's collector: container, mounts, loop device and files."""
    from runtimes import ContainerSpec
    from runtimes.gvisor import GVisorRuntime
    from sandbox_service.wire._ids import new_id

    rootfs = glob.glob(os.path.join(server.home, "images", "im-*", "rootfs"))[0]
    first = GVisorRuntime(str(tmp_path / "rt"))
    await first.start()
    cid = new_id("sandbox")
    await first.create(ContainerSpec(cid, rootfs, memory_mib=128, disk_mib=32))
    base = os.path.join(first.state_dir, "sandboxes", cid)
    with open("/proc/self/mountinfo") as f:  # disk, overlay, the socket directory's tmpfs
        assert sum(base in line for line in f) == 3
    again = GVisorRuntime(str(tmp_path / "rt"))  # the next server's runtime
    await again.start()
    try:
        assert await again.collect(set()) == [cid]
        assert not (await again.status(cid)).running
        with open("/proc/self/mountinfo") as f:
            assert not [line for line in f if base in line]
        assert not any(open(bf).read().startswith(base)
                       for bf in glob.glob("/sys/block/loop*/loop/backing_file"))
        assert not os.path.exists(base)
    finally:
        await again.collect(set())
        await again.close()
