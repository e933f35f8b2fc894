"""Hostile programs run inside real sandboxes (the attacks test_hostile.py does not
already cover, or covers from another angle). Each asserts the concrete outcome; the
autouse `survives` fixture (conftest.py) asserts that the service still serves other
sandboxes afterwards."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest
from _secutil import quiet_terminate, rss_kib, run, sh, wait_state

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(180)


# ---- resource exhaustion -------------------------------------------------------------------
def test_bash_fork_bomb_is_contained_and_usually_gets_eagain(server):
    """Processes that fork and die without exec churn host threads fastest. With the host's
    pids.max at 40x RLIMIT_NPROC, bash's fork usually gets EAGAIN and the sandbox lives;
    under heavy host load the churn can still reach pids.max, and then this sandbox (only
    it: the autouse fixture checks the service and a bystander) ends as `failed`."""
    sb = sbx.Sandbox.create(timeout=120)
    try:
        p = sb.exec("bash", "-c", ":(){ :|:& };:; sleep 1; echo survived", timeout=30)
        try:
            out, err = p.stdout.read(), p.stderr.read()
            code = p.wait()
        except sbx.SandboxTerminatedError:
            out, err, code = "", "", None
        state = sb.refresh().state
        if state == "running":
            # bash's forks got EAGAIN ("fork: retry" on its stderr) and the script went on
            # (its exit code depends on how the bomb's leftovers end with it)
            assert out == "survived\n", (code, out, err[-500:])
        else:
            assert state == "failed", state  # recorded, typed; never a hung sandbox
    finally:
        sb.terminate()


def test_fork_bomb_hits_nproc_with_eagain(victim):
    code, out, err = run(victim, r"""
import os, time
pids, err = [], None
while len(pids) < 20000:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        try:
            os.execv('/bin/sleep', ['sleep', '60'])
        finally:
            os._exit(0)
    pids.append(pid)
print(len(pids), err)
for p in pids:
    os.kill(p, 9)
for p in pids:
    os.waitpid(p, 0)
""", timeout=90)
    assert code == 0, err
    n, e = out.split()
    assert e == str(errno.EAGAIN), out
    assert 10 < int(n) < 20000, out
    # the sandbox survived and its process table is usable again
    assert sh(victim, "echo survived") == (0, "survived\n", "")


def test_memory_hog_via_rest_exec_is_typed_oom(server, api):
    r = api.post("/v1/sandboxes", json={"memory_mib": 128, "timeout_s": 120})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    try:
        r = api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": [
            "python3", "-c", "x = []\nwhile True: x.append(bytearray(8 << 20))"]})
        if r.status_code == 200:
            assert r.json()["exit_code"] == 137, r.text
        else:
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "sandbox_oom", r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = api.get(f"/v1/sandboxes/{sid}").json()
            if info["state"] != "running":
                break
            time.sleep(0.2)
        assert info["state"] == "oom", info
        assert info["exit_code"] == 137, info
        r = api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["true"]})
        assert r.status_code == 409, r.text
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def test_disk_fill_of_root_overlay_is_contained(server):
    """Writing files under / until something gives: the sandbox's disk quota (ENOSPC to the
    writer, the sandbox lives on), never its memory, the host's memory or the host's disk
    beyond the quota."""
    sb = sbx.Sandbox.create(memory=192, ephemeral_disk=256, timeout=120)
    try:
        p = sb.exec("python3", "-c", r"""
import os
os.makedirs('/var/fill', exist_ok=True)
chunk = b'\xab' * (1 << 20)
n = 0
try:
    while n < 2048:
        with open('/var/fill/f%d' % n, 'wb') as f:
            f.write(chunk)
        n += 1
    print('wrote', n)
except OSError as e:
    print('stopped', n, e.errno)
""", timeout=90)
        out = p.stdout.read()
        assert p.wait() == 0, out
        word, n, err = out.split()
        assert (word, err) == ("stopped", str(errno.ENOSPC)), out
        assert 200 < int(n) <= 256, out  # more than memory=192: it is not in memory
        assert sb.refresh().state == "running"
        assert sh(sb, "echo alive")[1] == "alive\n"
        # what landed on the host's disk is bounded by the quota: the sandbox's sparse
        # disk file, whose allocated blocks never exceed its size
        img = os.path.join(server.home, "runtime", "sandboxes", sb.object_id, "disk.img")
        st = os.stat(img)
        assert st.st_size == 256 << 20
        assert 200 << 20 < st.st_blocks * 512 <= st.st_size, st.st_blocks * 512
    finally:
        quiet_terminate(sb)


def test_output_flood_100mb_streams_with_bounded_server_memory(server, victim):
    before = rss_kib(server.proc.pid)
    p = victim.exec("sh", "-c", "head -c 104857600 /dev/zero", text=False, timeout=120)
    total = 0
    peak = before
    for i, chunk in enumerate(p.stdout):
        total += len(chunk)
        if i % 64 == 0:
            peak = max(peak, rss_kib(server.proc.pid))
    assert p.wait() == 0
    assert total == 100 * 1024 * 1024
    peak = max(peak, rss_kib(server.proc.pid))
    assert peak - before < 100 * 1024, f"server RSS grew {(peak - before) // 1024} MiB"


def test_output_flood_100mb_via_rest_exec_is_truncated(server, api, victim):
    before = rss_kib(server.proc.pid)
    r = api.post(f"/v1/sandboxes/{victim.object_id}/exec",
                 json={"argv": ["sh", "-c", "head -c 104857600 /dev/zero | tr '\\0' a"],
                       "max_output_bytes": 1 << 20})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["exit_code"] == 0
    assert body["stdout_truncated"] is True
    assert len(body["stdout"]) == 1 << 20
    assert rss_kib(server.proc.pid) - before < 100 * 1024


def test_unread_flood_does_not_grow_server(server, victim):
    """A 100 MB writer whose output nobody reads: backpressure, not server memory."""
    before = rss_kib(server.proc.pid)
    p = victim.exec("sh", "-c", "head -c 104857600 /dev/zero; echo done >&2", text=False,
                    timeout=60)
    time.sleep(3)
    assert rss_kib(server.proc.pid) - before < 100 * 1024
    p.terminate()
    try:
        p.wait()
    except sbx.SandboxError:
        pass


SPIN = r"""
import os, time
def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n
r, w = os.pipe()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        os.write(w, b'%d\n' % spin(3.0))
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
os.close(w)
print(sum(int(x) for x in os.read(r, 1000).split()))
"""


def test_cpu_spin_is_held_to_quota(server):
    """Two processes spinning for 3 s: with cpu=0.5 they get about a quarter of the work
    that the same program gets with cpu=2 (the host has >= 2 cores)."""
    work = {}
    for cpu in (0.5, 2.0):
        sb = sbx.Sandbox.create(cpu=cpu, timeout=120)
        try:
            code, out, err = run(sb, SPIN, timeout=60)
            assert code == 0, err
            work[cpu] = int(out)
        finally:
            quiet_terminate(sb)
    assert work[0.5] < 0.7 * work[2.0], work


def test_zombie_storm_is_reaped_by_pid1(victim):
    code, out, err = run(victim, r"""
import os
for _ in range(200):
    if os.fork() == 0:          # middle child: forks a grandchild and exits at once
        if os.fork() == 0:
            os._exit(0)         # the grandchild exits while orphaned: a zombie for PID 1
        os._exit(0)
for _ in range(200):
    os.wait()
print('spawned')
""")
    assert code == 0, err
    time.sleep(1.0)
    code, out, err = run(victim, r"""
import os
z = 0
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            if open('/proc/%s/stat' % d).read().rsplit(')', 1)[1].split()[0] == 'Z':
                z += 1
        except OSError:
            pass
print(z, len([d for d in os.listdir('/proc') if d.isdigit()]))
""")
    zombies, procs = map(int, out.split())
    assert zombies == 0, out
    assert procs < 10, out


def test_fd_exhaustion_is_local(victim):
    code, out, err = run(victim, r"""
import os, errno
fds = []
try:
    while len(fds) < 2000000:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    print(len(fds), e.errno)
""", timeout=120)
    assert code == 0, err
    n, e = out.split()
    assert int(e) in (errno.EMFILE, errno.ENFILE), out
    assert int(n) < 2000000


# ---- host data ---------------------------------------------------------------------------
def test_host_shadow_not_visible(victim):
    with open("/etc/shadow") as f:
        host = f.read()
    _, out, _ = sh(victim, "cat /etc/shadow 2>/dev/null; true")
    assert out != host
    host_hashes = {ln.split(":")[1] for ln in host.splitlines()
                   if ln.count(":") > 2 and len(ln.split(":")[1]) > 10}
    for h in host_hashes:
        assert h not in out
    # the files API reads the same (sandbox) file, not the host's
    try:
        via_api = victim.filesystem.read_text("/etc/shadow")
    except sbx.SandboxFileNotFoundError:
        via_api = ""
    assert via_api != host


def test_host_marker_file_not_visible_anywhere(victim, host_marker):
    path, content = host_marker
    _, out, _ = sh(victim, f"cat {path} /proc/1/root{path} /proc/self/root{path} "
                              f"/.sbx/run/../../..{path} 2>&1; grep -rl {content} /tmp /proc/1/root/tmp 2>/dev/null; true")
    assert content not in out


def test_proc_has_no_host_processes(server, victim):
    code, out, err = run(victim, r"""
import os
cmds = []
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            cmds.append(open('/proc/%s/cmdline' % d, 'rb').read().replace(b'\0', b' ').decode())
        except OSError:
            pass
print('\n'.join(cmds))
print('PID1=' + open('/proc/1/cmdline', 'rb').read().replace(b'\0', b' ').decode())
""")
    assert code == 0, err
    assert "sandbox_service" not in out
    assert "runsc" not in out
    assert "pytest" not in out
    assert "sbxagent" in out.rsplit("PID1=", 1)[1]
    assert not os.path.exists(f"/proc/{server.proc.pid}") or str(server.proc.pid) not in \
        [ln for ln in out.splitlines()]


def test_sys_firmware_and_kernel_knobs_masked(victim):
    code, out, err = run(victim, r"""
import os
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError as e:
        return 'err%d' % e.errno
print('firmware', ls('/sys/firmware'))
print('net', ls('/sys/class/net'))
for p in ('/proc/sysrq-trigger', '/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches',
          '/sys/kernel/mm/transparent_hugepage/enabled'):
    try:
        with open(p, 'w') as f:
            f.write('1')
        print('wrote', p)
    except OSError as e:
        print('denied', p, e.errno)
try:
    print('kcore', len(open('/proc/kcore', 'rb').read(16)))
except OSError as e:
    print('kcore err', e.errno)
""")
    assert code == 0, err
    lines = out.splitlines()
    fw = lines[0].split(" ", 1)[1]
    assert fw in ("[]",) or fw.startswith("err"), fw
    assert lines[1] == "net ['lo']" or lines[1].startswith("net err"), lines[1]
    assert not any(ln.startswith("wrote") for ln in lines), out
    assert "kcore 16" not in out


def test_host_core_pattern_unchanged(victim):
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    sh(victim, "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern; "
               "echo pwned > /proc/sys/kernel/hostname; true")
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == before
    assert socket.gethostname() != "pwned"


# ---- privileged operations -----------------------------------------------------------------
PRIV = r"""
import ctypes, ctypes.util, os, socket, errno
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
def res(rc):
    return 'ok' if rc == 0 else 'err%d' % ctypes.get_errno()
"""


def test_ptrace_pid1_denied(victim):
    code, out, err = run(victim, PRIV + r"""
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
rc = libc.ptrace(PTRACE_ATTACH, 1, None, None)
print(res(rc))
if rc == 0:
    libc.ptrace(PTRACE_DETACH, 1, None, None)
""")
    assert code == 0, err
    assert out.strip() in ("err1", "err13"), out  # EPERM / EACCES


def test_ptrace_of_another_exec_is_contained(victim):
    """Attaching to a process of another exec in the same sandbox: either refused, or it
    succeeds only within the sandbox (it can never name a host process)."""
    p = victim.exec("sleep", "60")
    try:
        code, out, err = run(victim, PRIV + r"""
import os
target = [int(d) for d in os.listdir('/proc') if d.isdigit()
          and open('/proc/%s/cmdline' % d, 'rb').read().startswith(b'sleep')][0]
rc = libc.ptrace(16, target, None, None)
print(res(rc), target)
if rc == 0:
    os.waitpid(target, 0x40000000)   # __WALL
    libc.ptrace(17, target, None, None)
# a host pid that surely does not exist inside
print(res(libc.ptrace(16, 4000000, None, None)))
""")
        assert code == 0, err
        first, second = out.splitlines()
        assert first.split()[0] in ("ok", "err1", "err13"), out
        assert second == "err3", out   # ESRCH: no such process in the sandbox
    finally:
        p.kill()


def test_mount_denied(victim):
    code, out, err = run(victim, PRIV + r"""
os.makedirs('/tmp/m', exist_ok=True)
for fs, src in (('tmpfs', 'tmpfs'), ('proc', 'proc'), ('sysfs', 'sysfs'), ('ext4', '/dev/vda')):
    print(fs, res(libc.mount(src.encode(), b'/tmp/m', fs.encode(), 0, None)))
""")
    assert code == 0, err
    for line in out.splitlines():
        _, r = line.split()
        assert r != "ok", out
        assert r in ("err1", "err2", "err13", "err19", "err38"), out


def test_raw_and_packet_sockets_denied(victim):
    code, out, err = run(victim, r"""
import socket
for fam, typ, proto in ((socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                        (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                        (socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
                        (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)):
    try:
        socket.socket(fam, typ, proto).close()
        print('ok')
    except OSError as e:
        print('err%d' % e.errno)
""")
    assert code == 0, err
    for line in out.splitlines():
        assert line in ("err1", "err13", "err93", "err97"), out  # EPERM/EACCES/EPROTONOSUPPORT/EAFNOSUPPORT


def test_setuid_binary_does_not_escalate(victim):
    """A setuid-root copy of python run by an unprivileged user stays unprivileged."""
    code, out, err = run(victim, r"""
import os, shutil, subprocess
shutil.copy('/usr/bin/python3', '/tmp/suidpy')
os.chmod('/tmp/suidpy', 0o4755)
def demote():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
r = subprocess.run(['/tmp/suidpy', '-c', 'import os; print(os.geteuid(), os.getuid())'],
                   preexec_fn=demote, capture_output=True, text=True)
print(r.stdout.strip() or r.stderr.strip())
nnp = [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')]
print(nnp[0].split()[1] if nnp else '?')
""")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "65534 65534", out   # euid not raised to 0


def test_kernel_module_bpf_and_perf_denied(victim):
    code, out, err = run(victim, PRIV + r"""
import platform
NR = {'x86_64': {'init_module': 175, 'bpf': 321, 'perf_event_open': 298, 'kexec_load': 246,
                 'open_by_handle_at': 304, 'unshare': 272},
      'aarch64': {'init_module': 105, 'bpf': 280, 'perf_event_open': 241, 'kexec_load': 104,
                  'open_by_handle_at': 265, 'unshare': 97}}[platform.machine()]
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(256)
print('init_module', res(libc.syscall(NR['init_module'], buf, 256, b'')))
print('bpf', res(libc.syscall(NR['bpf'], 0, buf, 64)))
print('perf_event_open', res(libc.syscall(NR['perf_event_open'], buf, 0, -1, -1, 0)))
print('kexec_load', res(libc.syscall(NR['kexec_load'], 0, 0, None, 0)))
print('open_by_handle_at', res(libc.syscall(NR['open_by_handle_at'], -100, buf, 0)))
print('settime', res(libc.clock_settime(0, buf)))
""")
    assert code == 0, err
    for line in out.splitlines():
        _, r = line.split()
        assert r != "ok", out


def test_chroot_breakout_stays_in_sandbox(victim, host_marker):
    """The classic chroot escape (chroot into a subdir, then chdir .. past it) reaches the
    sandbox's own root, never the host's."""
    path, content = host_marker
    code, out, err = run(victim, r"""
import os
os.makedirs('/tmp/jail', exist_ok=True)
fd = os.open('/', os.O_RDONLY)
os.chroot('/tmp/jail')
os.fchdir(fd)
for _ in range(64):
    os.chdir('..')
os.chroot('.')
print(sorted(os.listdir('/')))
try:
    print(open(PATH).read())
except OSError as e:
    print('nofile', e.errno)
""".replace("PATH", repr(path)))
    assert code == 0, err
    # the sandbox's root (the agent mount), or (runsc 2024) an empty root above it: never
    # the host's
    root = out.splitlines()[0]
    assert ".sbx" in root or root == "[]", out
    assert "'etc'" not in root or ".sbx" in root
    assert content not in out


# ---- processes and PID 1 -------------------------------------------------------------------
def test_background_children_outlive_exec_which_returns_promptly(victim):
    t0 = time.monotonic()
    p = victim.exec("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo started", timeout=30)
    assert p.stdout.read() == "started\n"
    assert p.wait() == 0
    assert time.monotonic() - t0 < 10
    # README: background processes keep running after the exec returns
    _, out, _ = sh(victim, "ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline")
    assert "sleep" in out and "300" in out, out


def test_background_child_holding_stdout_does_not_hang_exec(victim):
    """A daemon that keeps the exec's stdout open: the exec ends when its main process does
    (or at its timeout), never hangs."""
    t0 = time.monotonic()
    p = victim.exec("sh", "-c", "(while true; do echo tick; sleep 1; done) & echo main", timeout=8)
    try:
        p.stdout.read()
        p.wait()
    except sbx.ExecTimeoutError:
        pass
    assert time.monotonic() - t0 < 20


def test_kill_pid1_via_rest_exec_is_typed(server, api):
    r = api.post("/v1/sandboxes", json={"timeout_s": 120})
    sid = r.json()["sandbox_id"]
    try:
        r = api.post(f"/v1/sandboxes/{sid}/exec", json={"argv": ["sh", "-c", "kill -9 1; sleep 5"]})
        assert r.status_code in (200, 409), r.text
        if r.status_code == 200:
            assert r.json()["exit_code"] == 137, r.text
        else:
            assert r.json()["error"]["code"] in ("sandbox_terminated", "conflict"), r.text
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            info = api.get(f"/v1/sandboxes/{sid}").json()
            if info["state"] != "running":
                break
            time.sleep(0.2)
        assert (info["state"], info["exit_code"]) == ("failed", 137), info
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def test_signals_to_pid1_handled_or_recorded(server):
    """Each signal a program can send to PID 1 (the agent): TERM/INT/HUP are handled and the
    agent keeps serving; any signal that does end PID 1 ends the sandbox as `failed` (like
    `kill -9 1`), promptly, never a hang or a half-dead sandbox."""
    survived, killer = [], None
    sb = sbx.Sandbox.create(timeout=120)
    try:
        for s in [15, 2, 1, 10, 12, 14, 3, 6, 13, 26, 27, 28, 29, 30, 31, 34, 40, 64]:
            try:
                p = sb.exec("python3", "-c", f"import os; os.kill(1, {s})", timeout=10)
                p.wait()
                time.sleep(0.2)
                q = sb.exec("echo", "alive", timeout=10)
                ok = q.stdout.read() == "alive\n" and q.wait() == 0
            except sbx.SandboxError:
                ok = False
            if not ok:
                killer = s
                break
            survived.append(s)
        assert {15, 2, 1} <= set(survived), (survived, killer)
        if killer is not None:
            state = wait_state(sb, ("failed",), timeout_s=15)
            assert state == "failed", (killer, state, sb.info.reason)
    finally:
        quiet_terminate(sb)


def test_exec_timeout_with_sigterm_ignoring_command(victim):
    t0 = time.monotonic()
    p = victim.exec("sh", "-c", "trap '' TERM; sleep 100", timeout=2)
    with pytest.raises(sbx.ExecTimeoutError):
        p.wait()
    assert p.returncode == 124
    assert time.monotonic() - t0 < 20


def test_sandbox_timeout_with_signal_ignoring_main(server):
    sb = sbx.Sandbox.create("sh", "-c", "trap '' TERM INT HUP; while true; do sleep 1; done",
                            timeout=3)
    try:
        state = wait_state(sb, ("timeout",), timeout_s=30)
        assert state == "timeout", (state, sb.info.reason)
        assert sb.info.exit_code == 124
        assert sb.wait() == 124
        with pytest.raises(sbx.SandboxTerminatedError):
            sb.exec("true").wait()
    finally:
        quiet_terminate(sb)


# ---- network from inside -----------------------------------------------------------------
CONNECT = r"""
import socket, sys
res = []
for host, port in %r:
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port))
        res.append('connected %%s %%d' %% (host, port))
    except OSError as e:
        res.append('blocked %%s %%d %%s' %% (host, port, e.errno))
    finally:
        s.close()
print('\n'.join(res))
"""


def _host_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    try:
        out = os.popen("ip -o -4 addr show 2>/dev/null").read()
        for line in out.splitlines():
            addrs.add(line.split()[3].split("/")[0])
    except OSError:
        pass
    return sorted(addrs)


def test_cannot_reach_service_api_or_host(server, victim):
    port = server.port
    targets = [(a, port) for a in _host_addresses()] + [("::1", port), ("10.0.2.2", port)]
    code, out, err = run(victim, CONNECT % (targets,), timeout=60)
    assert code == 0, err
    assert "connected" not in out, out
    assert len(out.splitlines()) == len(targets)


def test_cannot_reach_metadata_address(victim):
    targets = [("169.254.169.254", 80), ("169.254.169.254", 443), ("fd00:ec2::254", 80),
               ("100.100.100.200", 80)]
    code, out, err = run(victim, CONNECT % (targets,), timeout=60)
    assert code == 0, err
    assert "connected" not in out, out


def test_cannot_reach_another_sandbox(server, victim):
    """A server listening inside one sandbox is unreachable from another, even on the
    "shared-looking" loopback address."""
    other = sbx.Sandbox.create(timeout=120)
    try:
        other.exec("python3", "-c",
                         "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                         "socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 18080)); s.listen()\n"
                         "while True: s.accept()[0].close()")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, out, _ = run(other, CONNECT % ([("127.0.0.1", 18080)],))
            if out.startswith("connected"):
                break
            time.sleep(0.3)
        # reachable inside its own sandbox ...
        _, out, _ = run(other, CONNECT % ([("127.0.0.1", 18080)],))
        assert out.startswith("connected"), out
        # ... not from the victim
        _, out, _ = run(victim, CONNECT % ([("127.0.0.1", 18080)],))
        assert out.startswith("blocked"), out
    finally:
        quiet_terminate(other)
