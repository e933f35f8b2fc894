"""The gVisor runtime on its own: hardening, the no-python fallback, collector, teardown."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest

from runtimes import ContainerSpec, ExecSpec, ExitFrame
from runtimes.gvisor import _cgroups
from sandbox_service.wire._ids import new_id


@pytest.fixture(scope="module")
def base_rootfs(server):
    return glob.glob(os.path.join(server.home, "images", "im-*", "rootfs"))[0]


async def run(rt, cid, argv, **kw):
    stream = await rt.exec(cid, ExecSpec(argv, **kw))
    out, err, exit_ = b"", b"", None
    async for ev in stream.events():
        if isinstance(ev, ExitFrame):
            exit_ = ev
        elif ev[0] == "stdout":
            out += ev[1]
        else:
            err += ev[1]
    await stream.close()
    return out, err, exit_


async def test_spec_is_hardened(runtime, base_rootfs):
    cid = new_id("sandbox")
    await runtime.create(ContainerSpec(cid, base_rootfs, memory_mib=256, cpu=0.5, nproc=64))
    try:
        with open(os.path.join(runtime.state_dir, "sandboxes", cid, "bundle", "config.json")) as f:
            spec = json.load(f)
        assert "--overlay2=root:memory" in runtime.runsc.argv("run", cid=cid)
        assert spec["process"]["noNewPrivileges"] is True
        assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["bounding"]
        assert spec["linux"]["resources"]["memory"]["limit"] == 256 * 2**20
        assert spec["linux"]["resources"]["cpu"]["quota"] == 50_000
        rl = {r["type"]: r["hard"] for r in spec["process"]["rlimits"]}
        assert rl["RLIMIT_NPROC"] == 64
        # the limits reach the host cgroup
        with open(f"/sys/fs/cgroup/memory/{runtime.cgroup_parent}/{cid}/memory.limit_in_bytes") as f:
            assert int(f.read()) == 256 * 2**20
        # the rootfs is read-only but the overlay is writable
        out, err, ex = await run(runtime, cid, ["sh", "-c", "echo x > /etc/probe && cat /etc/probe"])
        assert ex.exit_code == 0 and out == b"x\n"
        assert not os.path.exists(os.path.join(base_rootfs, "etc", "probe"))
        # NPROC is enforced inside gVisor: forking past it fails instead of killing the sandbox
        out, err, ex = await run(runtime, cid, ["python3", "-c",
                                 "import os\nn=0\ntry:\n  while n<200:\n    pid=os.fork()\n"
                                 "    if pid==0: os._exit(0)\n    n+=1\nexcept OSError as e: print('EAGAIN', n)\n"
                                 "else: print('forked', n)"])
        assert ex.exit_code == 0, err
        assert (await runtime.status(cid)).running
    finally:
        await runtime.destroy(cid)


async def test_devices_cgroup_denies_host_devices(runtime):
    if _cgroups.version() != 1:
        pytest.skip("devices lockdown check is for cgroup v1")
    assert runtime.devices_locked
    with open(f"/sys/fs/cgroup/devices/{runtime.cgroup_parent}/devices.list") as f:
        rules = f.read().split("\n")
    assert "a *:* rwm" not in rules
    assert "c 1:3 rwm" in rules


async def test_image_without_python_falls_back_to_runsc_exec(runtime, base_rootfs, tmp_path):
    rootfs = str(tmp_path / "nopython")
    subprocess.run(["cp", "-al", base_rootfs, rootfs], check=True)
    for p in glob.glob(rootfs + "/usr/bin/python3*"):
        os.unlink(p)
    cid = new_id("sandbox")
    await runtime.create(ContainerSpec(cid, rootfs))
    try:
        out, err, ex = await run(runtime, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (out, err, ex.exit_code) == (b"out\n", b"err\n", 3)
        stream = await runtime.exec(cid, ExecSpec(["cat"]))
        await stream.write_stdin(b"piped")
        await stream.close_stdin()
        got = b""
        async for ev in stream.events():
            if not isinstance(ev, ExitFrame):
                got += ev[1]
        assert got == b"piped"
        out, err, ex = await run(runtime, cid, ["sleep", "30"], timeout_s=0.5)
        assert ex.exit_code == 124 and ex.timed_out
    finally:
        await runtime.destroy(cid)
        shutil.rmtree(rootfs, ignore_errors=True)


async def test_collector_reaps_unknown_and_destroy_is_idempotent(runtime, base_rootfs):
    known, stray = new_id("sandbox"), new_id("sandbox")
    await runtime.create(ContainerSpec(known, base_rootfs))
    await runtime.create(ContainerSpec(stray, base_rootfs))
    reaped = await runtime.collect({known})
    assert reaped == [stray]
    assert stray not in runtime.runsc.known_ids()
    assert not os.path.exists(os.path.join(runtime.state_dir, "sandboxes", stray))
    assert stray not in _cgroups.children(runtime.cgroup_parent)
    assert (await runtime.status(known)).running
    await runtime.destroy(known)
    await runtime.destroy(known)  # twice is fine
    assert runtime.runsc.known_ids() == set()
    assert _cgroups.children(runtime.cgroup_parent) == set()
