"""Restart recovery: the server is SIGKILLed and started again on the same port and home.
Running sandboxes (and their main commands) must survive and be re-attached; sandboxes
that died while the server was down must be recorded as such, never left "running"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(240)


def _logs(server, sid: str, stream: str = "stdout") -> bytes:
    with server.api() as c:
        r = c.get(f"/v1/sandboxes/{sid}/logs", params={"stream": stream, "follow": "false"})
        assert r.status_code == 200, r.text
        return r.content


def _wait_for_log(server, sid: str, needle: bytes, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in _logs(server, sid):
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in the logs of {sid}")


def _state_file(server, sid: str) -> str:
    return os.path.join(server.home, "runtime", "runsc", f"{sid}_sandbox:{sid}.state")


def _sandbox_pids(server, sid: str) -> list[int]:
    with open(_state_file(server, sid)) as f:
        st = json.load(f)
    pids = [st.get("goferPid"), (st.get("sandbox") or {}).get("pid")]
    return [p for p in pids if isinstance(p, int) and p > 0]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(")") + 2:].split()[0] not in ("Z", "X")


def _terminate_quietly(sb) -> None:
    try:
        sb.terminate()
    except sbx.SandboxError:
        pass


def test_running_sandbox_survives_server_crash(server):
    sb = sbx.Sandbox.create(timeout=300, tags={"recovery": "survive"})
    try:
        sb.filesystem.write_text("kept across the restart", "/tmp/keep.txt")
        p = sb.exec("sh", "-c", "echo $$ > /tmp/marker-pid; echo started")
        assert p.stdout.read() == "started\n"
        old_pid = server.proc.pid
        server.restart(kill=True)
        assert server.proc.pid != old_pid
        again = sbx.Sandbox.from_id(sb.object_id)
        assert again.info.state == "running"
        assert again.filesystem.read_text("/tmp/keep.txt") == "kept across the restart"
        q = again.exec("sh", "-c", "cat /tmp/keep.txt; echo; echo more")
        assert q.stdout.read() == "kept across the restart\nmore\n"
        assert q.wait() == 0
        # the old handle works too (it only knows the id)
        assert sb.exec("echo", "old-handle").stdout.read() == "old-handle\n"
        assert sb.object_id in {s.object_id for s in sbx.Sandbox.list(tags={"recovery": "survive"})}
        sb.terminate()
        assert sb.info.state == "terminated"
        assert not os.path.exists(_state_file(server, sb.object_id))
    finally:
        _terminate_quietly(sb)


def test_main_command_survives_and_output_is_collected(server):
    script = ("import time, sys\n"
              "print('before', flush=True)\n"
              "print('err-before', file=sys.stderr, flush=True)\n"
              "time.sleep(4)\n"
              "print('after', flush=True)\n"
              "sys.exit(7)\n")
    sb = sbx.Sandbox.create("python3", "-c", script, timeout=120)
    try:
        _wait_for_log(server, sb.object_id, b"before")
        server.restart(kill=True)
        assert sbx.Sandbox.from_id(sb.object_id).info.state in ("running", "exited")
        assert sb.wait() == 7
        assert sb.info.state == "exited"
        fresh = sbx.Sandbox.from_id(sb.object_id)
        assert fresh.stdout.read() == "before\nafter\n"
        assert fresh.stderr.read() == "err-before\n"
    finally:
        _terminate_quietly(sb)


def test_main_command_that_exits_while_server_down(server):
    sb = sbx.Sandbox.create("sh", "-c", "echo one; sleep 1; echo two; exit 9", timeout=120)
    try:
        _wait_for_log(server, sb.object_id, b"one")
        server.stop(kill=True)
        time.sleep(2.5)  # the command finishes while nobody is watching
        server.start()
        assert sb.wait() == 9
        assert sb.info.state == "exited"
        assert sbx.Sandbox.from_id(sb.object_id).stdout.read() == "one\ntwo\n"
    finally:
        _terminate_quietly(sb)


def test_exec_cut_by_crash_is_reported_and_killed(server):
    sb = sbx.Sandbox.create(timeout=120)
    try:
        p = sb.exec("sh", "-c", "echo go; sleep 100", bufsize=1)
        assert next(iter(p.stdout)) == "go\n"
        server.restart(kill=True)
        with pytest.raises(sbx.ServerUnreachableError):
            p.wait()
        # the orphaned command was killed: nothing is left sleeping in the sandbox
        script = ("import os\nn = 0\n"
                  "for pid in os.listdir('/proc'):\n"
                  "    if pid.isdigit():\n"
                  "        try:\n"
                  "            c = open('/proc/%s/cmdline' % pid, 'rb').read()\n"
                  "        except OSError: continue\n"
                  "        n += c.startswith(b'sleep')\n"
                  "print(n)\n")
        for _ in range(30):
            q = sb.exec("python3", "-c", script)
            left = q.stdout.read().strip()
            if left == "0":
                break
            time.sleep(0.1)
        assert left == "0"
    finally:
        _terminate_quietly(sb)


def test_lifetime_timeout_still_enforced_after_restart(server):
    sb = sbx.Sandbox.create(timeout=6)
    t0 = time.monotonic()
    try:
        server.restart(kill=True)
        assert sb.wait() == 124
        assert sb.info.state == "timeout"
        assert time.monotonic() - t0 < 60  # 6 s, plus a restart on a busy CI machine
    finally:
        _terminate_quietly(sb)


def test_sandbox_killed_while_server_down_is_marked_lost(server):
    doomed = sbx.Sandbox.create(timeout=300)
    survivor = sbx.Sandbox.create(timeout=300)
    try:
        pids = _sandbox_pids(server, doomed.object_id)
        assert pids and all(_alive(p) for p in pids)
        server.stop(kill=True)
        # kill the container behind the server's back
        subprocess.run(["runsc", "--root", os.path.join(server.home, "runtime", "runsc"),
                        "kill", doomed.object_id, "KILL"], capture_output=True, timeout=30)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
        server.start()
        info = sbx.Sandbox.from_id(doomed.object_id).info
        assert info.state in ("lost", "failed"), info
        assert info.exit_code == 137
        assert info.reason
        assert doomed.object_id not in {s.object_id for s in sbx.Sandbox.list()}
        with pytest.raises(sbx.SandboxTerminatedError):
            doomed.exec("true").wait()
        # its runtime state is gone
        assert not os.path.exists(_state_file(server, doomed.object_id))
        assert not os.path.exists(os.path.join(server.home, "runtime", "sandboxes",
                                               doomed.object_id))
        # the other sandbox was re-attached and works
        assert survivor.exec("echo", "fine").stdout.read() == "fine\n"
    finally:
        _terminate_quietly(doomed)
        _terminate_quietly(survivor)


def test_sandbox_killed_while_server_up_is_marked_failed(server):
    sb = sbx.Sandbox.create(timeout=300)
    try:
        for pid in _sandbox_pids(server, sb.object_id):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sb.refresh().state == "running":
            time.sleep(0.1)
        assert sb.info.state == "failed"
        assert sb.info.exit_code == 137
    finally:
        _terminate_quietly(sb)


def test_graceful_restart_keeps_sandboxes(server):
    sb = sbx.Sandbox.create(timeout=300)
    try:
        sb.filesystem.write_text("graceful", "/tmp/g.txt")
        server.restart(kill=False)
        assert sb.filesystem.read_text("/tmp/g.txt") == "graceful"
        assert sbx.Sandbox.from_id(sb.object_id).info.state == "running"
    finally:
        _terminate_quietly(sb)


def test_server_serves_after_restarts(server):
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200
    sb = sbx.Sandbox.create(timeout=60)
    try:
        p = sb.exec("echo", "post-restart")
        assert p.stdout.read() == "post-restart\n"
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_second_server_on_same_home_refuses(server):
    """Two servers on one SBX_HOME would reap each other's sandboxes: the second refuses."""
    from sbxtest import Server

    other = Server(server.home)
    other.log_path = os.path.join(server.home, "second-server.log")
    with pytest.raises(RuntimeError) as info:
        other.start()
    assert "already using" in str(info.value)
    # the first one is unharmed
    sb = sbx.Sandbox.create(timeout=60)
    try:
        assert sb.exec("true").wait() == 0
    finally:
        sb.terminate()
