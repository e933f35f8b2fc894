"""The session-end leak check (tests/conftest.py runs it in the `server` fixture's teardown,
so after every test and every fixture that used the session's server): after every
sandbox of this session is terminated through the API, nothing of them may remain on the
host: runsc state, bundle directories, cgroups, runsc processes, zombies of the server,
open file descriptors, and of image builds: network namespaces, veths, the nftables table
and overlay mounts; of sandboxes' disks: mounts and loop devices. The server's log must
hold no unhandled errors.

A plain module (not conftest), like sbxtest.py; conftest.py registers it for pytest's
assertion rewriting.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import time

import sandbox_service as sbx
from runtimes.gvisor._procs import _stat

try:
    ExceptionGroup
except NameError:  # Python 3.10: pytest's own dependency
    from exceptiongroup import ExceptionGroup

CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup_parent(server) -> str:
    state_dir = os.path.abspath(os.path.join(server.home, "runtime"))
    return "sbx-" + hashlib.sha256(state_dir.encode()).hexdigest()[:10]


def _session_ids(api) -> set[str]:
    r = api.get("/v1/sandboxes", params={"all": "true", "limit": 10000})
    assert r.status_code == 200
    return {s["sandbox_id"] for s in r.json()["sandboxes"]}


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _leftovers(server, ids: set[str]) -> dict[str, list[str]]:
    runtime = os.path.join(server.home, "runtime")
    found: dict[str, list[str]] = {}
    state = [n for n in os.listdir(os.path.join(runtime, "runsc"))
             if n.startswith("sb-")] if os.path.isdir(os.path.join(runtime, "runsc")) else []
    if state:
        found["runsc state files"] = state
    sb_dirs = os.path.join(runtime, "sandboxes")
    if os.path.isdir(sb_dirs) and os.listdir(sb_dirs):
        found["sandbox dirs"] = os.listdir(sb_dirs)
    parent = _cgroup_parent(server)
    cg = []
    for d in glob.glob(f"{CGROUP_ROOT}/*/{parent}") + glob.glob(f"{CGROUP_ROOT}/{parent}"):
        cg += [os.path.join(d, c) for c in os.listdir(d) if os.path.isdir(os.path.join(d, c))]
    # and under any other server's parent: none of this session's ids
    for d in glob.glob(f"{CGROUP_ROOT}/*/sbx-*") + glob.glob(f"{CGROUP_ROOT}/sbx-*"):
        if os.path.isdir(d):
            cg += [os.path.join(d, c) for c in os.listdir(d) if c in ids]
    if cg:
        found["cgroups"] = sorted(set(cg))
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        cmd = _cmdline(pid)
        if "runsc" in cmd and (server.home in cmd or any(i in cmd for i in ids)):
            procs.append(f"{pid}: {cmd[:200]}")
    if procs:
        found["runsc processes"] = procs
    zombies = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            st = _stat(int(pid))
            if st and st[1] == server.proc.pid and st[0] == "Z":
                zombies.append(pid)
    if zombies:
        found["zombie children of the server"] = zombies
    # image builds: their network namespaces and veths, nftables table, overlay mounts
    key = _cgroup_parent(server)[4:]
    netns = [n for n in os.listdir("/run/netns") if n.startswith(f"sbx{key[:6]}-")] \
        if os.path.isdir("/run/netns") else []
    if netns:
        found["network namespaces"] = netns
    veths = [n for n in os.listdir("/sys/class/net") if n.startswith("sbxh")]
    if veths:
        found["host veths"] = veths
    volumes = os.path.join(server.home, "volumes") + "/"
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if server.home in line]
    # each principal's volume filesystem stays mounted (once) while the server runs
    vol_fs = [m for m in mounts if m.startswith(volumes) and m.endswith("/fs")
              and m.count("/") == volumes.count("/") + 1]
    if len(vol_fs) != len(set(vol_fs)):
        found["volume filesystems mounted twice"] = vol_fs
    mounts = [m for m in mounts if m not in vol_fs]
    if mounts:
        found["mounts under SBX_HOME"] = mounts
    loops = []  # sandboxes' disks (runtimes/gvisor/_disk.py)
    vol_loops: list[str] = []  # volume filesystems: one loop device each
    for bf in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(bf) as f:
                backing = f.read().strip()
            if backing.startswith(server.home) and not (
                    backing.startswith(volumes) and backing.endswith("/disk.img")):
                loops.append(bf.split("/")[3])
            elif backing.startswith(volumes):
                vol_loops.append(backing)
        except OSError:
            pass
    if loops:
        found["loop devices backed by SBX_HOME"] = loops
    if len(vol_loops) != len(set(vol_loops)):
        found["volume images attached to two loop devices"] = vol_loops
    if subprocess.run(["nft", "list", "table", "inet", f"sbx_{key}"], capture_output=True,
                      check=False).returncode == 0:
        found["nftables table"] = [f"inet sbx_{key}"]
    return found


def terminate_everything(server) -> set[str]:
    """Some fresh activity of every kind (so the check means something even when the
    session ran few tests), then every running sandbox terminated through the API.
    Returns every sandbox id of the session."""
    with server.api() as api:
        idle = sbx.Sandbox.create(timeout=120)
        busy = sbx.Sandbox.create(timeout=120)
        busy_exec = busy.exec("sh", "-c", "sleep 100 & sleep 100 & wait")
        main = sbx.Sandbox.create("sleep", "100", timeout=120)
        done = sbx.Sandbox.create("true", timeout=120)
        assert done.wait() == 0
        oom = sbx.Sandbox.create(memory=128, timeout=120)
        try:
            oom.exec("python3", "-c", "x=[]\nwhile True: x.append(bytearray(8 << 20))").wait()
        except sbx.SandboxError:
            pass
        assert oom.wait(raise_on_termination=False) == 137

        running = api.get("/v1/sandboxes", params={"limit": 10000}).json()["sandboxes"]
        assert {idle.object_id, busy.object_id, main.object_id} <= {s["sandbox_id"] for s in running}
        for s in running:
            r = api.delete(f"/v1/sandboxes/{s['sandbox_id']}")
            assert r.status_code == 200, r.text
            assert r.json()["state"] not in ("creating", "running")
        assert busy_exec.wait() == 137
        assert api.get("/v1/sandboxes").json()["sandboxes"] == []

        ids = _session_ids(api)
        assert {idle.object_id, busy.object_id, main.object_id, done.object_id, oom.object_id} <= ids
        for info in api.get("/v1/sandboxes", params={"all": "true", "limit": 10000}).json()["sandboxes"]:
            assert info["state"] not in ("creating", "running"), info
        return ids


def check_server_fds(server) -> None:
    """After everything is terminated the server holds few file descriptors: sockets to
    agents, pipes of runsc calls and log files were all closed."""
    with server.api() as api:
        assert api.get("/v1/sandboxes").json()["sandboxes"] == []
    fds = os.listdir(f"/proc/{server.proc.pid}/fd")
    assert len(fds) < 100, len(fds)
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/{server.proc.pid}/fd/{fd}"))
        except OSError:
            pass
    logs = [t for t in targets if t.startswith(os.path.join(server.home, "logs"))]
    assert logs == [], logs


def check_nothing_left(server, ids: set[str]) -> None:
    """With the server stopped gracefully (which removes the warm pool's pre-booted
    sandboxes: they belong to the server, not to any caller), nothing at all is left."""
    deadline = time.monotonic() + 10
    found = _leftovers(server, ids)
    while found and time.monotonic() < deadline:
        time.sleep(0.25)
        found = _leftovers(server, ids)
    assert found == {}, found


def check_server_log(server) -> None:
    log = server.tail(5_000_000)
    assert "unhandled error" not in log
    assert "monitor: checking" not in log
    assert "collector failed" not in log


def check_session_end(server) -> None:
    """Every check above, in order; stops the server. Each check runs even when an earlier
    one failed (the host checks need the session's ids: without them, those in the API
    when it still answers); raises the failure, or an ExceptionGroup of all of them."""
    failures: list[BaseException] = []
    ids: set[str] = set()

    def run(check, *args):
        try:
            return check(*args)
        except Exception as e:  # noqa: BLE001 (all are reported together below)
            if hasattr(e, "add_note"):  # Python 3.11+
                e.add_note(f"leak check: {check.__name__} failed")
            failures.append(e)
            return None

    alive = server.proc is not None and server.proc.poll() is None
    if not alive:
        failures.append(AssertionError("the session's server was not running at the end"))
    else:
        ids = run(terminate_everything, server) or set()
        if not ids:
            try:
                with server.api() as api:
                    ids = _session_ids(api)
            except Exception:  # noqa: BLE001 (already reported)
                pass
        run(check_server_fds, server)
    server.stop()
    run(check_nothing_left, server, ids)
    run(check_server_log, server)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ExceptionGroup("the session leaked", failures)
