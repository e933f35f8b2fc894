"""Sandbox lifecycle through the SDK against a real server and real runsc sandboxes:
create, get/from_id, list by tags and app, terminate, main commands, timeouts, names."""

from __future__ import annotations

import re
import time
import uuid

import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(180)

ID_RE = re.compile(r"^sb-[a-z0-9]{20}$")


def _poll_until(sb, pred, timeout_s: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sb.refresh()
        if pred(sb.info):
            return sb.info
        time.sleep(step)
    sb.refresh()
    return sb.info


def _safe_terminate(sb) -> None:
    try:
        sb.terminate()
    except sbx.SandboxError:
        pass


def test_create_is_running_with_fixed_length_id(sandbox):
    assert ID_RE.match(sandbox.object_id), sandbox.object_id
    assert sandbox.info.state == "running"
    assert sandbox.returncode is None
    assert sandbox.poll() is None
    assert sandbox.info.memory_mib == 1024
    assert sandbox.info.timeout_s == 600
    p = sandbox.exec("echo", "alive")
    assert p.stdout.read() == "alive\n"
    assert p.wait() == 0


def test_from_id_and_get(sandbox, api):
    again = sbx.Sandbox.from_id(sandbox.object_id)
    assert again.object_id == sandbox.object_id
    assert again.info.state == "running"
    p = again.exec("sh", "-c", "echo via-from-id")
    assert p.stdout.read() == "via-from-id\n"
    assert p.wait() == 0
    r = api.get(f"/v1/sandboxes/{sandbox.object_id}")
    assert r.status_code == 200
    assert r.json()["sandbox_id"] == sandbox.object_id
    assert r.json()["state"] == "running"


def test_from_id_unknown_raises_not_found(server):
    with pytest.raises(sbx.NotFoundError):
        sbx.Sandbox.from_id("sb-" + "0" * 20)
    with pytest.raises(sbx.NotFoundError):
        sbx.Sandbox.from_id("not-an-id")


def test_list_by_tags(server):
    tag = uuid.uuid4().hex[:12]
    a = sbx.Sandbox.create(tags={"suite": tag, "role": "a"}, timeout=120)
    b = sbx.Sandbox.create(tags={"suite": tag, "role": "b"}, timeout=120)
    other = sbx.Sandbox.create(tags={"suite": "other-" + tag}, timeout=120)
    try:
        both = {s.object_id for s in sbx.Sandbox.list(tags={"suite": tag})}
        assert both == {a.object_id, b.object_id}
        only_b = [s.object_id for s in sbx.Sandbox.list(tags={"suite": tag, "role": "b"})]
        assert only_b == [b.object_id]
        assert sbx.Sandbox.list(tags={"suite": tag, "role": "nope"}) == []
        listed = sbx.Sandbox.list(tags={"suite": tag, "role": "a"})[0]
        assert listed.info.tags == {"suite": tag, "role": "a"}
        # a listed sandbox is usable
        p = listed.exec("echo", "listed")
        assert p.stdout.read() == "listed\n"
        # terminated sandboxes drop out of the default (running) listing
        a.terminate()
        assert [s.object_id for s in sbx.Sandbox.list(tags={"suite": tag})] == [b.object_id]
        finished = {s.object_id: s.info.state
                    for s in sbx.Sandbox.list(tags={"suite": tag}, include_finished=True)}
        assert finished == {a.object_id: "terminated", b.object_id: "running"}
    finally:
        for s in (a, b, other):
            _safe_terminate(s)


def test_terminate_then_exec_raises(server):
    sb = sbx.Sandbox.create(timeout=120)
    p = sb.exec("sleep", "100")
    time.sleep(0.3)
    sb.terminate()
    assert sb.info.state == "terminated"
    assert sb.returncode == 137
    assert sb.poll() == 137
    assert sb.wait() == 137
    # the running exec was cut short like a SIGKILL
    assert p.wait() == 137
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.exec("echo", "hi").wait()
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.filesystem.read_text("/etc/hostname")
    # terminate is idempotent
    sb.terminate()
    assert sbx.Sandbox.from_id(sb.object_id).info.state == "terminated"


def test_terminate_via_context_manager(server):
    with sbx.Sandbox.create(timeout=120) as sb:
        assert sb.exec("true").wait() == 0
    assert sbx.Sandbox.from_id(sb.object_id).info.state == "terminated"


def test_main_command_exit_code_and_stdout(server):
    sb = sbx.Sandbox.create("python3", "-c",
                            "print('x'); import sys; print('e', file=sys.stderr); sys.exit(5)")
    assert sb.info.has_command is True
    assert sb.wait() == 5
    assert sb.info.state == "exited"
    assert sb.returncode == 5
    assert sb.stdout.read() == "x\n"
    assert sb.stderr.read() == "e\n"
    assert sbx.Sandbox.from_id(sb.object_id).info.exit_code == 5


def test_main_command_output_streams_while_running(server):
    sb = sbx.Sandbox.create(
        "python3", "-u", "-c",
        "import time\nfor i in range(3):\n    print('line', i)\n    time.sleep(0.7)\n",
        timeout=60)
    try:
        t0 = time.monotonic()
        it = iter(sb.stdout)
        first = next(it)
        assert first.startswith("line 0")
        assert time.monotonic() - t0 < 1.4, "first line arrived only at the end"
        rest = first + "".join(it)
        assert rest == "line 0\nline 1\nline 2\n"
        assert sb.wait() == 0
    finally:
        _safe_terminate(sb)


def test_main_command_workdir(server):
    sb = sbx.Sandbox.create("sh", "-c", "pwd", workdir="/srv/work/dir")
    assert sb.wait() == 0
    assert sb.stdout.read() == "/srv/work/dir\n"


def test_main_command_not_found_is_typed_error(server):
    with pytest.raises(sbx.InvalidRequestError):
        sbx.Sandbox.create("definitely-not-a-command-xyz")


def test_sandbox_timeout(server):
    t0 = time.monotonic()
    sb = sbx.Sandbox.create(timeout=2)
    assert sb.info.state == "running"
    code = sb.wait()
    elapsed = time.monotonic() - t0
    assert code == 124
    assert sb.info.state == "timeout"
    assert 1.5 <= elapsed < 8, elapsed
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.exec("true").wait()


def test_sandbox_timeout_kills_running_exec(server):
    sb = sbx.Sandbox.create(timeout=2)
    p = sb.exec("sleep", "60")
    t0 = time.monotonic()
    assert p.wait() == 137
    assert time.monotonic() - t0 < 8
    assert sb.wait() == 124
    assert sb.info.state == "timeout"


def test_idle_timeout(server):
    t0 = time.monotonic()
    sb = sbx.Sandbox.create(idle_timeout=2, timeout=60)
    assert sb.wait() == 124
    assert sb.info.state == "idle_timeout"
    assert time.monotonic() - t0 < 8


def test_idle_timeout_not_triggered_by_running_exec(server):
    sb = sbx.Sandbox.create(idle_timeout=2, timeout=60)
    try:
        p = sb.exec("sleep", "4")
        assert p.wait() == 0  # a 4 s command outlives a 2 s idle timeout
        info = sb.refresh()
        assert info.state == "running"
        # then, idle, it ends
        assert sb.wait() == 124
        assert sb.info.state == "idle_timeout"
    finally:
        _safe_terminate(sb)


def test_app_lookup_and_list_by_app(server):
    name = "app-" + uuid.uuid4().hex[:10]
    app = sbx.App.lookup(name, create_if_missing=True)
    assert app.app_id.startswith("ap-")
    assert sbx.App.lookup(name).app_id == app.app_id  # same app the second time
    sb = sbx.Sandbox.create(app=app, timeout=120)
    loose = sbx.Sandbox.create(timeout=120)
    try:
        assert sb.info.app_id == app.app_id
        listed = [s.object_id for s in sbx.Sandbox.list(app_id=app.app_id)]
        assert listed == [sb.object_id]
    finally:
        _safe_terminate(sb)
        _safe_terminate(loose)


def test_app_lookup_missing_without_create(server):
    with pytest.raises(sbx.NotFoundError):
        sbx.App.lookup("missing-" + uuid.uuid4().hex[:10])


def test_name_uniqueness_conflict(server):
    name = "uniq-" + uuid.uuid4().hex[:10]
    a = sbx.Sandbox.create(name=name, timeout=120)
    try:
        assert a.info.name == name
        with pytest.raises(sbx.ConflictError):
            sbx.Sandbox.create(name=name, timeout=120)
        a.terminate()
        # the name is free again once the first one finished
        b = sbx.Sandbox.create(name=name, timeout=120)
        assert b.info.name == name
        b.terminate()
    finally:
        _safe_terminate(a)


def test_names_are_per_app_and_from_name_finds_the_running_one(server):
    app_name = "named-" + uuid.uuid4().hex[:8]
    app = sbx.App.lookup(app_name, create_if_missing=True)
    name = "worker"
    a = sbx.Sandbox.create(app=app, name=name, timeout=120)
    b = sbx.Sandbox.create(name=name, timeout=120)  # no app: another namespace, no conflict
    try:
        found = sbx.Sandbox.from_name(app_name, name)
        assert found.object_id == a.object_id
        with pytest.raises(sbx.NotFoundError, match="no running sandbox named"):
            sbx.Sandbox.from_name(app_name, "nobody")
        a.terminate()
        with pytest.raises(sbx.NotFoundError):
            sbx.Sandbox.from_name(app_name, name)
    finally:
        _safe_terminate(a)
        _safe_terminate(b)


def test_set_and_get_tags(server):
    key = "t" + uuid.uuid4().hex[:8]
    sb = sbx.Sandbox.create(tags={key: "one"}, timeout=120)
    try:
        assert sb.get_tags() == {key: "one"}
        sb.set_tags({key: "two", "owner": "me"})
        assert sb.get_tags() == {key: "two", "owner": "me"}
        listed = [s.object_id for s in sbx.Sandbox.list(tags={key: "two"})]
        assert listed == [sb.object_id]
        assert sbx.Sandbox.list(tags={key: "one"}) == []
        with pytest.raises(sbx.InvalidRequestError, match="tag"):
            sb.set_tags({"bad key!": "x"})
        sb.terminate()
        with pytest.raises(sbx.SandboxTerminatedError):
            sb.set_tags({key: "three"})
    finally:
        _safe_terminate(sb)


def test_sandbox_env_and_secrets(server):
    sb = sbx.Sandbox.create(env={"FOO": "bar", "OVER": "sandbox"},
                            secrets=[sbx.Secret.from_dict({"TOKEN_X": "s3cret"})], timeout=120)
    try:
        p = sb.exec("sh", "-c", 'printf "%s|%s|%s" "$FOO" "$OVER" "$TOKEN_X"')
        assert p.stdout.read() == "bar|sandbox|s3cret"
        p = sb.exec("sh", "-c", 'printf "%s|%s" "$FOO" "$OVER"', env={"OVER": "exec"})
        assert p.stdout.read() == "bar|exec"
    finally:
        _safe_terminate(sb)


def test_sandbox_workdir_is_default_exec_cwd(server):
    sb = sbx.Sandbox.create(workdir="/work/here", timeout=120)
    try:
        assert sb.exec("pwd").stdout.read() == "/work/here\n"
        assert sb.exec("pwd", workdir="/tmp").stdout.read() == "/tmp\n"
    finally:
        _safe_terminate(sb)


def test_memory_and_cpu_recorded(server):
    sb = sbx.Sandbox.create(memory=300, cpu=1, timeout=120)
    try:
        assert sb.info.memory_mib == 300
        assert sb.info.cpu == 1
    finally:
        _safe_terminate(sb)


def test_async_create_exec_terminate(server):
    import asyncio

    async def go():
        sb = await sbx.Sandbox.create.aio(timeout=120)
        try:
            p = await sb.exec.aio("sh", "-c", "echo async-ok")
            out = await p.stdout.read.aio()
            code = await p.wait.aio()
            return out, code
        finally:
            await sb.terminate.aio()

    out, code = asyncio.run(go())
    assert out == "async-ok\n"
    assert code == 0
