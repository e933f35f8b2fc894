"""Hostile programs in real sandboxes. Each test asserts that the damage stays inside the
sandbox AND that the server and other sandboxes keep working afterwards."""

from __future__ import annotations

import os
import stat
import threading
import time

import httpx
import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(240)


def _service_still_works(server) -> None:
    t0 = time.monotonic()
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200
    assert time.monotonic() - t0 < 5
    assert server.proc.poll() is None, "the server process died"
    fresh = sbx.Sandbox.create(timeout=60)
    try:
        p = fresh.exec("python3", "-c", "print(6 * 7)")
        assert p.stdout.read() == "42\n"
        assert p.wait() == 0
    finally:
        fresh.terminate()


def _wait_state(sb, states, timeout_s: float = 15.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sb.refresh()
        if sb.info.state in states:
            return sb.info.state
        time.sleep(0.1)
    return sb.refresh().state


def _terminate_quietly(sb) -> None:
    try:
        sb.terminate()
    except sbx.SandboxError:
        pass


class _HealthProbe:
    """Measures /health latency in the background while something hostile runs."""

    def __init__(self, url: str):
        self.url = url
        self.worst = 0.0
        self.failures = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=15) as c:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    if c.get(self.url + "/health").status_code != 200:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1
                self.worst = max(self.worst, time.monotonic() - t0)
                self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(20)


def test_all_sandboxes_together_leave_the_host_pids(server):
    """Each sandbox's pids.max stops one fork bomb; the parent cgroup's cap stops several at
    once from taking the PIDs the host itself needs."""
    import hashlib

    from runtimes.gvisor._cgroups import CGROUP_ROOT, host_pids_cap, version
    sbx.Sandbox.create(timeout=60).terminate()  # the runtime made its parent cgroup
    parent = "sbx-" + hashlib.sha256(os.path.abspath(os.path.join(server.home, "runtime")).encode()).hexdigest()[:10]
    path = (os.path.join(CGROUP_ROOT, parent, "pids.max") if version() == 2
            else os.path.join(CGROUP_ROOT, "pids", parent, "pids.max"))
    with open(path) as f:
        cap = int(f.read().strip())
    with open("/proc/sys/kernel/pid_max") as f:
        assert cap == host_pids_cap() < int(f.read())


def test_fork_bomb_contained(server):
    sb = sbx.Sandbox.create(timeout=120)
    bystander = sbx.Sandbox.create(timeout=120)
    try:
        with _HealthProbe(server.url) as probe:
            t0 = time.monotonic()
            p = sb.exec("python3", "-c", "import os\nwhile True: os.fork()", timeout=10)
            try:
                p.wait()  # any exit: EAGAIN (1), killed, ...; containment is the point
            except (sbx.ExecTimeoutError, sbx.SandboxOOMError, sbx.SandboxTerminatedError):
                pass
            elapsed = time.monotonic() - t0
        assert elapsed < 60, elapsed
        assert probe.failures == 0
        assert probe.worst < 5, f"/health took {probe.worst:.1f}s during the fork bomb"
        # the bombed sandbox either survived (and works) or is recorded as finished
        state = sb.refresh().state
        if state == "running":
            q = sb.exec("echo", "survived")
            assert q.stdout.read() == "survived\n"
        else:
            assert state in ("oom", "failed")
        # a sandbox running beside it was untouched
        q = bystander.exec("echo", "bystander-ok")
        assert q.stdout.read() == "bystander-ok\n"
        assert q.wait() == 0
    finally:
        _terminate_quietly(sb)
        _terminate_quietly(bystander)
    _service_still_works(server)


def test_memory_hog_is_oom(server):
    sb = sbx.Sandbox.create(memory=256, timeout=120)
    try:
        p = sb.exec("python3", "-c",
                    "x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))")
        try:
            code = p.wait()
            assert code == 137
        except sbx.SandboxOOMError as e:
            assert isinstance(e, MemoryError)
        assert _wait_state(sb, ("oom",)) == "oom"
        assert sb.info.exit_code == 137
        assert "memory" in (sb.info.reason or "")
        with pytest.raises(sbx.SandboxOOMError):
            sb.wait()
        assert sb.wait(raise_on_termination=False) == 137
        with pytest.raises(sbx.SandboxTerminatedError):
            sb.exec("true").wait()
    finally:
        _terminate_quietly(sb)
    _service_still_works(server)


def test_memory_limit_allows_below_limit(server):
    sb = sbx.Sandbox.create(memory=256, timeout=120)
    try:
        p = sb.exec("python3", "-c", "x = bytearray(64 * 1024 * 1024); print(len(x))")
        assert p.stdout.read() == str(64 * 1024 * 1024) + "\n"
        assert p.wait() == 0
        assert sb.refresh().state == "running"
    finally:
        _terminate_quietly(sb)


def test_infinite_output_times_out(server, sandbox):
    t0 = time.monotonic()
    p = sandbox.exec("yes", timeout=3)
    n = 0
    for chunk in p.stdout:
        n += len(chunk)
    with pytest.raises(sbx.ExecTimeoutError):
        p.wait()
    assert p.returncode == 124
    assert n > 0
    assert time.monotonic() - t0 < 30
    # the sandbox itself is fine afterwards
    q = sandbox.exec("echo", "after-yes")
    assert q.stdout.read() == "after-yes\n"
    _service_still_works(server)


def test_infinite_output_unread_times_out(server, sandbox):
    """Nobody reads the output: the timeout still fires and nothing piles up."""
    p = sandbox.exec("sh", "-c", "yes >&2", timeout=3)
    t0 = time.monotonic()
    with pytest.raises(sbx.ExecTimeoutError):
        p.wait()
    assert p.returncode == 124
    assert time.monotonic() - t0 < 30
    _service_still_works(server)


def test_kill_init_marks_failed(server):
    sb = sbx.Sandbox.create(timeout=120)
    try:
        p = sb.exec("sh", "-c", "kill -9 1; sleep 5")
        try:
            p.wait()
        except sbx.SandboxError:
            pass
        t0 = time.monotonic()
        state = _wait_state(sb, ("failed",), timeout_s=10)
        assert state == "failed", (state, sb.info.reason)
        assert time.monotonic() - t0 < 10
        assert sb.info.exit_code == 137
        assert sb.poll() == 137
        with pytest.raises(sbx.SandboxTerminatedError):
            sb.exec("true").wait()
        assert sb.object_id not in {s.object_id for s in sbx.Sandbox.list()}
    finally:
        _terminate_quietly(sb)
    _service_still_works(server)


def test_proc_shows_sandbox_not_host(sandbox):
    p = sandbox.exec("python3", "-c",
                     "import os\n"
                     "print(open('/proc/1/cmdline','rb').read().replace(b'\\0', b' ').decode())\n"
                     "print(len([d for d in os.listdir('/proc') if d.isdigit()]))\n"
                     "print(open('/proc/sys/kernel/hostname').read().strip())\n"
                     "print(open('/proc/self/mounts').read())\n")
    out = p.stdout.read()
    assert p.wait() == 0
    lines = out.splitlines()
    init_cmd, nprocs, hostname = lines[0], int(lines[1]), lines[2]
    mounts = "\n".join(lines[3:])
    assert "sbxagent" in init_cmd
    assert "/.sbx/" in init_cmd
    with open("/proc/1/cmdline", "rb") as f:
        host_init = f.read().split(b"\0")[0].decode()
    assert host_init not in init_cmd
    host_procs = len([d for d in os.listdir("/proc") if d.isdigit()])
    assert nprocs < 10 < host_procs, (nprocs, host_procs)
    assert hostname == "sandbox"
    # no host path (like the server's home) is visible in the mount table
    assert "/tmp/sbx-t-" not in mounts


def test_proc_hides_host_paths(server, sandbox):
    p = sandbox.exec("sh", "-c", "cat /proc/self/mountinfo /proc/1/mountinfo /proc/mounts")
    out = p.stdout.read()
    p.wait()
    assert server.home not in out
    assert "/work/main" not in out


def test_only_loopback_network(sandbox):
    p = sandbox.exec("python3", "-c",
                     "import socket\n"
                     "print(sorted(n for _, n in socket.if_nameindex()))\n"
                     "s = socket.socket(); s.settimeout(2)\n"
                     "try:\n"
                     "    s.connect(('1.1.1.1', 80)); print('connected')\n"
                     "except OSError as e:\n"
                     "    print('blocked', e.errno)\n")
    out = p.stdout.read().splitlines()
    assert p.wait() == 0
    assert out[0] == "['lo']"
    assert out[1].startswith("blocked")


def test_no_host_devices(server, sandbox):
    p = sandbox.exec("python3", "-c", "import os; print(' '.join(sorted(os.listdir('/dev'))))")
    devs = set(p.stdout.read().split())
    assert p.wait() == 0
    assert {"null", "zero", "urandom"} <= devs
    for bad in ("sda", "vda", "vdb", "nvme0n1", "kmsg", "mem", "kvm", "port", "loop0"):
        assert bad not in devs, bad
    # device nodes the sandbox makes itself never reach host devices: host disk (254:0 is
    # this machine's vda; 8:0 sda), kernel log (1:11), physical memory (1:1)
    script = r"""
import os, stat
res = []
for d in ("/tmp", "/.sbx/run"):
    for name, kind, maj, mnr in (("disk", stat.S_IFBLK, 254, 0), ("sda", stat.S_IFBLK, 8, 0),
                                 ("kmsg", stat.S_IFCHR, 1, 11), ("mem", stat.S_IFCHR, 1, 1),
                                 ("zero", stat.S_IFCHR, 1, 5)):
        path = "%s/dev-%s" % (d, name)
        try:
            os.mknod(path, kind | 0o600, os.makedev(maj, mnr))
        except OSError as e:
            res.append("%s mknod-failed %d" % (path, e.errno)); continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            res.append("%s read %d %s" % (path, len(data), data.count(0) == len(data)))
        except OSError as e:
            res.append("%s open-failed %d" % (path, e.errno))
print("\n".join(res))
"""
    p = sandbox.exec("python3", "-c", script)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    results = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert len(results) == 10, out
    for path, res in results.items():
        if res[0] == "read":
            # only gVisor's own /dev/zero emulation may read, and it gives zeros, nothing else
            assert path.endswith("dev-zero"), (path, res)
            assert res[2] == "True", (path, res)
        else:
            assert res[0] in ("mknod-failed", "open-failed"), (path, res)
    # nothing was created on the host through the rw bind mount
    run_dir = os.path.join(server.home, "runtime", "sandboxes", sandbox.object_id, "run")
    if os.path.isdir(run_dir):
        for name in os.listdir(run_dir):
            mode = os.lstat(os.path.join(run_dir, name)).st_mode
            assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), name
    _service_still_works(server)


def test_agent_code_is_read_only(server, sandbox):
    p = sandbox.exec("sh", "-c", "echo 'import os' >> /.sbx/agent/sbxagent/proto.py")
    p.stderr.read()
    assert p.wait() != 0
    installed = os.path.join(server.home, "runtime", "agent", "sbxagent", "proto.py")
    with open(installed) as f:
        assert "import os\n" not in f.read()[-50:]


def test_agent_socket_is_not_hijackable_by_replacing(server):
    """Removing the agent socket from inside kills only the sandbox's own control
    channel; other sandboxes and the server are unaffected."""
    sb = sbx.Sandbox.create(timeout=60)
    try:
        p = sb.exec("sh", "-c", "rm -f /.sbx/run/agent.sock; echo done")
        p.stdout.read()
        try:
            p.wait()
        except sbx.SandboxError:
            pass
    finally:
        _terminate_quietly(sb)
    assert sbx.Sandbox.from_id(sb.object_id).info.state in ("terminated", "failed", "lost")
    _service_still_works(server)


def test_many_files_and_big_file_in_tmp(server):
    """Filling /tmp hits the sandbox's disk quota (ENOSPC to the writer), not its memory
    limit and not the host's disk: the sandbox lives on."""
    sb = sbx.Sandbox.create(memory=256, ephemeral_disk=128, timeout=120)
    try:
        p = sb.exec("sh", "-c", "head -c 600000000 /dev/zero > /tmp/fill; echo rc=$?",
                    timeout=60)
        out, err = p.stdout.read(), p.stderr.read()
        assert p.wait() == 0
        assert out == "rc=1\n" and "No space left on device" in err, (out, err)
        assert sb.refresh().state == "running"
        q = sb.exec("sh", "-c", "rm /tmp/fill; echo alive")
        assert q.stdout.read() == "alive\n"
    finally:
        _terminate_quietly(sb)
    _service_still_works(server)
