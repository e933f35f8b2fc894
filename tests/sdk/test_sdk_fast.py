"""The public SDK against the real app on the fake runtime (tests/fakes.py): create, exec,
files, terminate, lookups and the `.aio` twins. `fake_sdk` points SBX_URL/SBX_TOKEN at
the fake server for one test only. No root or runsc: `make test-fast`."""

from __future__ import annotations

import time

import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]


@pytest.fixture
def sb(fake_sdk):
    return sbx.Sandbox.create(timeout=120)


def test_create_exec_read_wait(fake_sdk, sb):
    assert sb.info.state == "running" and sb.returncode is None
    assert list(fake_sdk.runtime.containers) == [sb.object_id]
    p = sb.exec("sh", "-c", "echo one; echo two >&2; echo three; exit 4")
    assert p.stdout.read() == "one\nthree\n"
    assert p.stderr.read() == "two\n"
    assert p.wait() == 4
    assert (p.returncode, p.poll()) == (4, 4)


def test_exec_stdin_and_bytes_mode(sb):
    p = sb.exec("cat")
    p.stdin.write("héllo ")
    p.stdin.write(b"bytes")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "héllo bytes"
    assert p.wait() == 0
    p = sb.exec("printf", "\\377\\000", text=False)
    assert p.stdout.read() == b"\xff\x00"


def test_exec_timeout_raises_and_is_124(sb):
    t0 = time.monotonic()
    p = sb.exec("sleep", "30", timeout=0.3)
    with pytest.raises(sbx.ExecTimeoutError) as ei:
        p.wait()
    assert isinstance(ei.value, TimeoutError)
    assert p.returncode == 124
    assert time.monotonic() - t0 < 5


def test_exec_exit_codes_and_signals(sb):
    assert sb.exec("definitely-not-a-command-xyz").wait() == 127
    p = sb.exec("sleep", "30")
    p.terminate()
    assert p.wait() == 143
    with pytest.raises(sbx.InvalidRequestError):
        sb.exec("echo", 1)  # type: ignore[arg-type]


def test_exec_workdir_and_env(sb):
    sb.mkdir("/work")
    with sb.open("/work/name", "w") as f:
        f.write("file")
    p = sb.exec("sh", "-c", 'printf "%s-%s" "$GREETING" "$(cat name)"', workdir="/work",
                env={"GREETING": "hi"})
    assert p.stdout.read() == "hi-file"


def test_open_write_read(sb):
    with sb.open("/tmp/f.txt", "w") as f:
        f.write("hello\nworld\n")
    with sb.open("/tmp/f.txt") as f:
        assert f.read() == "hello\nworld\n"
    with sb.open("/tmp/f.txt", "a") as f:
        f.write("more\n")
    with sb.open("/tmp/b.bin", "wb") as f:
        f.write(bytes(range(256)))
    with sb.open("/tmp/b.bin", "rb") as f:
        assert f.read() == bytes(range(256))
    # commands see the same file (the fake maps relative paths under the sandbox's cwd)
    assert sb.exec("cat", "f.txt", workdir="/tmp").stdout.read() == "hello\nworld\nmore\n"


def test_ls_mkdir_rm_and_filesystem(sb):
    sb.mkdir("/data/sub", parents=True)
    sb.filesystem.write_text("x", "/data/b.txt")
    sb.filesystem.write_bytes(b"yy", "/data/a.bin")
    assert sb.ls("/data") == ["a.bin", "b.txt", "sub"]
    assert sb.filesystem.stat("/data/a.bin").size == 2
    assert sb.filesystem.exists("/data/b.txt") and not sb.filesystem.exists("/data/nope")
    with pytest.raises(sbx.SandboxFileError):
        sb.rm("/data")  # not empty
    sb.rm("/data", recursive=True)
    assert "data" not in sb.ls("/")


def test_file_errors_are_typed(sb):
    with pytest.raises(sbx.SandboxFileNotFoundError) as ei:
        sb.filesystem.read_text("/tmp/missing.txt")
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, sbx.NotFoundError)
    with pytest.raises(sbx.SandboxFileError):
        sb.filesystem.read_bytes("/tmp")
    with pytest.raises(sbx.InvalidRequestError):
        sb.filesystem.read_text("etc/hostname")


def test_terminate_then_everything_raises_terminated(sb):
    p = sb.exec("sleep", "30")
    time.sleep(0.2)
    sb.terminate()
    assert (sb.info.state, sb.returncode, sb.poll(), sb.wait()) == ("terminated", 137, 137, 137)
    assert p.wait() == 137  # cut short like SIGKILL
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.exec("echo", "hi").wait()
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.filesystem.read_text("/etc/hostname")
    sb.terminate()  # idempotent


def test_context_manager_terminates(fake_sdk):
    with sbx.Sandbox.create() as sb:
        assert sb.exec("true").wait() == 0
    assert sbx.Sandbox.from_id(sb.object_id).info.state == "terminated"
    assert fake_sdk.runtime.containers == {}


def test_main_command_wait_stdout_returncode(fake_sdk):
    sb = sbx.Sandbox.create("sh", "-c", "echo x; echo e >&2; exit 5")
    assert sb.info.has_command is True
    assert sb.wait() == 5
    assert (sb.info.state, sb.returncode) == ("exited", 5)
    assert sb.stdout.read() == "x\n"
    assert sb.stderr.read() == "e\n"


def test_main_command_not_found_is_typed(fake_sdk):
    with pytest.raises(sbx.InvalidRequestError):
        sbx.Sandbox.create("definitely-not-a-command-xyz")


def test_oom_makes_wait_raise(fake_sdk, sb):
    fake_sdk.runtime.kill(sb.object_id, oom=True)
    with pytest.raises(sbx.SandboxOOMError):
        sb.wait()
    assert (sb.info.state, sb.returncode) == ("oom", 137)
    assert sb.wait(raise_on_termination=False) == 137


def test_from_id_and_list_by_tags(fake_sdk):
    a = sbx.Sandbox.create(tags={"suite": "s", "role": "a"})
    b = sbx.Sandbox.create(tags={"suite": "s", "role": "b"})
    same = sbx.Sandbox.from_id(a.object_id)
    assert (same.object_id, same.info.tags) == (a.object_id, {"suite": "s", "role": "a"})
    with pytest.raises(sbx.NotFoundError):
        sbx.Sandbox.from_id("sb-" + "0" * 20)
    assert {s.object_id for s in sbx.Sandbox.list(tags={"suite": "s"})} == {a.object_id, b.object_id}
    assert [s.object_id for s in sbx.Sandbox.list(tags={"role": "b"})] == [b.object_id]
    a.terminate()
    assert [s.object_id for s in sbx.Sandbox.list()] == [b.object_id]
    assert {s.object_id: s.info.state for s in sbx.Sandbox.list(include_finished=True)} == \
        {a.object_id: "terminated", b.object_id: "running"}
    b.set_tags({"role": "c"})
    assert b.get_tags() == {"role": "c"}


def test_exec_output_helper(sb):
    res = sb.exec_output("sh", "-c", "cat; exit 2", stdin="in")
    assert (res["stdout"], res["exit_code"], res["timed_out"]) == ("in", 2, False)


def test_without_the_env_the_sdk_does_not_reach_the_fake(fake_server, monkeypatch):
    monkeypatch.setenv("SBX_URL", fake_server.url)
    monkeypatch.setenv("SBX_TOKEN", "wrong")
    with pytest.raises(sbx.AuthenticationError):
        sbx.Sandbox.list()


async def test_async_twins(fake_sdk):
    sb = await sbx.Sandbox.create.aio(tags={"mode": "aio"})
    p = await sb.exec.aio("sh", "-c", "echo async")
    assert await p.stdout.read.aio() == "async\n"
    assert await p.wait.aio() == 0
    p = await sb.exec.aio("sleep", "30", timeout=0.3)
    with pytest.raises(sbx.ExecTimeoutError):
        await p.wait.aio()
    f = await sb.open.aio("/tmp/a.txt", "w")
    await f.write.aio("aio-data")
    await f.close.aio()
    assert await sb.filesystem.read_text.aio("/tmp/a.txt") == "aio-data"
    assert await sb.ls.aio("/tmp") == ["a.txt"]
    assert [s.object_id for s in await sbx.Sandbox.list.aio(tags={"mode": "aio"})] == [sb.object_id]
    assert (await sbx.Sandbox.from_id.aio(sb.object_id)).object_id == sb.object_id
    await sb.terminate.aio()
    assert sb.returncode == 137
    with pytest.raises(sbx.SandboxTerminatedError):
        await (await sb.exec.aio("true")).wait.aio()
