"""exec through the SDK and the WebSocket stream, against real sandboxes: output
separation and order, real-time streaming, stdin, binary and UTF-8 handling, exit codes,
timeouts, signals, concurrency, workdir and env."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
import time

import pytest

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(180)


def run(sb, *argv, **kw):
    p = sb.exec(*argv, **kw)
    out = p.stdout.read()
    err = p.stderr.read()
    return p.wait(), out, err


# ---- output ------------------------------------------------------------------------------
def test_stdout_stderr_separation_and_order(sandbox):
    script = (
        "import sys\n"
        "for i in range(1000):\n"
        "    sys.stdout.write('out %d\\n' % i); sys.stdout.flush()\n"
        "    sys.stderr.write('err %d\\n' % i); sys.stderr.flush()\n"
    )
    code, out, err = run(sandbox, "python3", "-c", script)
    assert code == 0
    assert out.splitlines() == [f"out {i}" for i in range(1000)]
    assert err.splitlines() == [f"err {i}" for i in range(1000)]


def test_shell_stdout_stderr_exact(sandbox):
    code, out, err = run(sandbox, "sh", "-c", "echo one; echo two >&2; echo three; exit 0")
    assert (code, out, err) == (0, "one\nthree\n", "two\n")


def test_realtime_streaming_first_chunk_before_exit(sandbox):
    p = sandbox.exec("sh", "-c", "echo first; sleep 1.5; echo second")
    t0 = time.monotonic()
    it = iter(p.stdout)
    first = next(it)
    t_first = time.monotonic() - t0
    assert first == "first\n"
    assert p.poll() is None, "the process should still be running"
    rest = "".join(it)
    t_end = time.monotonic() - t0
    assert rest == "second\n"
    assert p.wait() == 0
    assert t_first < 1.0, t_first
    assert t_end >= 1.3, t_end


def test_bufsize_line_iteration(sandbox):
    # chunks arrive with several lines, or split mid-line: bufsize=1 yields whole lines
    script = ("import sys,time\n"
              "sys.stdout.write('a1\\na2\\na'); sys.stdout.flush(); time.sleep(0.3)\n"
              "sys.stdout.write('3\\nlast-no-newline'); sys.stdout.flush()\n")
    p = sandbox.exec("python3", "-c", script, bufsize=1)
    lines = list(p.stdout)
    assert lines == ["a1\n", "a2\n", "a3\n", "last-no-newline"]
    assert p.wait() == 0


def test_bufsize_invalid(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.exec("true", bufsize=7)


def test_binary_output_exact_bytes(sandbox):
    n = 3 * 1024 * 1024 + 17
    p = sandbox.exec("sh", "-c", f"head -c {n} /dev/urandom | tee /tmp/rand.bin >/dev/null; "
                     "cat /tmp/rand.bin", text=False)
    data = p.stdout.read()
    assert p.wait() == 0
    assert isinstance(data, bytes)
    assert len(data) == n
    code, out, _ = run(sandbox, "sha256sum", "/tmp/rand.bin")
    assert code == 0
    assert out.split()[0] == hashlib.sha256(data).hexdigest()


def test_binary_iteration_yields_bytes(sandbox):
    p = sandbox.exec("printf", "\\000\\001\\377", text=False)
    chunks = list(p.stdout)
    assert all(isinstance(c, bytes) for c in chunks)
    assert b"".join(chunks) == b"\x00\x01\xff"
    assert p.wait() == 0


def test_invalid_utf8_text_mode_replaces(sandbox):
    p = sandbox.exec("printf", "ok\\377\\376end")
    out = p.stdout.read()
    assert p.wait() == 0
    assert out == "ok\ufffd\ufffdend"


def test_multibyte_split_across_chunks(sandbox):
    # "é" is C3 A9 and "€" is E2 82 AC: write them one byte at a time with pauses so they
    # arrive in separate frames
    script = ("import sys,time\n"
              "for b in 'héllo €uro'.encode():\n"
              "    sys.stdout.buffer.write(bytes([b])); sys.stdout.flush(); time.sleep(0.02)\n")
    p = sandbox.exec("python3", "-c", script)
    chunks = list(p.stdout)
    assert p.wait() == 0
    assert "".join(chunks) == "héllo €uro"
    assert all("\ufffd" not in c for c in chunks)
    assert len(chunks) > 3  # it really was split


def test_large_text_output_intact(sandbox):
    code, out, _ = run(sandbox, "python3", "-c",
                       "import sys\nfor i in range(200000): sys.stdout.write('%06d\\n' % i)")
    assert code == 0
    lines = out.split("\n")
    assert lines[-1] == ""
    assert lines[:-1] == [f"{i:06d}" for i in range(200000)]


# ---- stdin -------------------------------------------------------------------------------
def test_stdin_cat_echo(sandbox):
    p = sandbox.exec("cat")
    p.stdin.write("hello ")
    p.stdin.write(b"world\n")
    p.stdin.drain()
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "hello world\n"
    assert p.wait() == 0


def test_stdin_interactive_roundtrip(sandbox):
    script = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"
    p = sandbox.exec("python3", "-c", script, bufsize=1)
    it = iter(p.stdout)
    for word in ("alpha", "beta", "gamma"):
        p.stdin.write(word + "\n")
        p.stdin.drain()
        assert next(it) == word.upper() + "\n"
    p.stdin.write_eof()
    p.stdin.drain()
    assert list(it) == []
    assert p.wait() == 0


def test_stdin_large_5mb_sha256(sandbox):
    import os

    data = os.urandom(5 * 1024 * 1024 + 3)
    p = sandbox.exec("sha256sum")
    p.stdin.write(data)
    p.stdin.write_eof()
    p.stdin.drain()
    out = p.stdout.read()
    assert p.wait() == 0
    assert out.split()[0] == hashlib.sha256(data).hexdigest()


def test_stdin_write_after_eof_raises(sandbox):
    p = sandbox.exec("cat")
    p.stdin.write_eof()
    with pytest.raises(ValueError):
        p.stdin.write("late")
    assert p.stdout.read() == ""
    assert p.wait() == 0


# ---- exit codes --------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(sandbox, code):
    p = sandbox.exec("sh", "-c", f"exit {code}")
    assert p.wait() == code
    assert p.returncode == code
    assert p.poll() == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_killed_by_own_signal_is_128_plus_n(sandbox, sig):
    p = sandbox.exec("python3", "-c", f"import os; os.kill(os.getpid(), {int(sig)})")
    assert p.wait() == 128 + int(sig)


def test_command_not_found_127(sandbox):
    p = sandbox.exec("no-such-command-xyz", "arg")
    err = p.stderr.read()
    assert p.wait() == 127
    assert "no-such-command-xyz" in err


def test_shell_command_not_found_127(sandbox):
    p = sandbox.exec("sh", "-c", "no-such-command-xyz")
    assert p.wait() == 127


def test_not_executable_126(sandbox):
    sandbox.filesystem.write_text("echo hi\n", "/tmp/noexec.sh")
    p = sandbox.exec("/tmp/noexec.sh")
    assert p.wait() == 126


def test_exec_timeout_raises_and_124(sandbox):
    t0 = time.monotonic()
    p = sandbox.exec("sleep", "30", timeout=1)
    with pytest.raises(sbx.ExecTimeoutError) as ei:
        p.wait()
    assert isinstance(ei.value, TimeoutError)
    assert p.returncode == 124
    assert time.monotonic() - t0 < 6


def test_exec_timeout_kills_whole_group(sandbox):
    p = sandbox.exec("sh", "-c", "sleep 300 & sleep 300 & wait", timeout=1)
    with pytest.raises(sbx.ExecTimeoutError):
        p.wait()
    assert _sleepers(sandbox) == []


def test_exec_that_finishes_within_timeout(sandbox):
    p = sandbox.exec("sh", "-c", "echo fast", timeout=10)
    assert p.stdout.read() == "fast\n"
    assert p.wait() == 0


# ---- signals -----------------------------------------------------------------------------
PROC_SLEEPERS = (
    "import os\n"
    "out = []\n"
    "for pid in os.listdir('/proc'):\n"
    "    if not pid.isdigit(): continue\n"
    "    try:\n"
    "        cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\\0')\n"
    "        st = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()[0]\n"
    "    except OSError: continue\n"
    "    if cmd and cmd[0] in (b'sleep', b'/bin/sleep', b'/usr/bin/sleep') and st != 'Z':\n"
    "        out.append(pid)\n"
    "print(' '.join(sorted(out)))\n"
)


def _sleepers(sb) -> list[str]:
    # several tries: killing a group takes a moment to reach every member
    for _ in range(20):
        p = sb.exec("python3", "-c", PROC_SLEEPERS)
        out = p.stdout.read().split()
        assert p.wait() == 0
        if not out:
            return []
        time.sleep(0.1)
    return out


def test_sigterm_to_sleep_is_143(sandbox):
    p = sandbox.exec("sleep", "10")
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait() == 143
    assert time.monotonic() - t0 < 5


def test_sigint_to_sleep_is_130(sandbox):
    p = sandbox.exec("sleep", "10")
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    assert p.wait() == 130


def test_terminate_method_is_sigterm(sandbox):
    p = sandbox.exec("sleep", "10")
    time.sleep(0.5)
    p.terminate()
    assert p.wait() == 143


def test_kill_method_is_137(sandbox):
    p = sandbox.exec("sleep", "10")
    time.sleep(0.5)
    p.kill()
    assert p.wait() == 137


def test_signal_handler_in_process_receives_signal(sandbox):
    script = ("import signal,sys,time\n"
              "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', flush=True), sys.exit(9)))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    p = sandbox.exec("python3", "-c", script, bufsize=1)
    it = iter(p.stdout)
    assert next(it) == "ready\n"
    p.send_signal(signal.SIGUSR1)
    assert next(it) == "usr1\n"
    assert p.wait() == 9


def test_sigkill_reaches_whole_process_group(sandbox):
    p = sandbox.exec("sh", "-c", "sleep 10 & sleep 10 & echo started; wait", bufsize=1)
    assert next(iter(p.stdout)) == "started\n"
    assert len(_sleepers_now(sandbox)) == 2
    p.send_signal(signal.SIGKILL)
    assert p.wait() == 137
    assert _sleepers(sandbox) == []


def test_sigterm_reaches_whole_process_group(sandbox):
    p = sandbox.exec("sh", "-c", "sleep 10 & sleep 10 & echo started; wait", bufsize=1)
    assert next(iter(p.stdout)) == "started\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait() == 143
    assert _sleepers(sandbox) == []


def _sleepers_now(sb) -> list[str]:
    p = sb.exec("python3", "-c", PROC_SLEEPERS)
    out = p.stdout.read().split()
    assert p.wait() == 0
    return out


def test_signal_after_exit_is_harmless(sandbox):
    p = sandbox.exec("true")
    assert p.wait() == 0
    p.send_signal(signal.SIGKILL)
    assert p.returncode == 0


def test_closing_stream_kills_command(server):
    """A client that vanishes mid-command: the command is killed with its group."""
    import asyncio as aio

    from websockets.asyncio.client import connect

    sb = sbx.Sandbox.create(timeout=120)
    try:
        async def go():
            url = server.url.replace("http", "ws", 1) + f"/v1/sandboxes/{sb.object_id}/exec/stream"
            ws = await connect(url, additional_headers={"Authorization": f"Bearer {server.token}"})
            await ws.send('{"type":"start","argv":["sh","-c","sleep 200 & sleep 200 & wait"]}')
            first = await ws.recv()
            assert '"started"' in first
            await aio.sleep(0.5)
            await ws.close()

        aio.run(go())
        assert _sleepers(sb) == []
    finally:
        sb.terminate()


# ---- concurrency -------------------------------------------------------------------------
def test_ten_concurrent_execs_threads(sandbox):
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            p = sandbox.exec("python3", "-c",
                             f"import sys,time\ntime.sleep(0.3)\nprint('n={i}')\n"
                             f"print('e={i}', file=sys.stderr)\nsys.exit({i})")
            results[i] = (p.stdout.read(), p.stderr.read(), p.wait())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == {i: (f"n={i}\n", f"e={i}\n", i) for i in range(10)}
    # they ran concurrently: 10 x 0.3 s sleeps must not add up
    assert time.monotonic() - t0 < 15


async def test_ten_concurrent_execs_asyncio(sandbox):
    async def one(i: int):
        p = await sandbox.exec.aio("sh", "-c", f"echo {i}; echo x{i} >&2; exit {i % 4}")
        out = await p.stdout.read.aio()
        err = await p.stderr.read.aio()
        return out, err, await p.wait.aio()

    res = await asyncio.gather(*(one(i) for i in range(10)))
    assert res == [(f"{i}\n", f"x{i}\n", i % 4) for i in range(10)]


# ---- workdir and env ---------------------------------------------------------------------
def test_exec_workdir(sandbox):
    sandbox.filesystem.make_directory("/tmp/wd/sub")
    code, out, _ = run(sandbox, "pwd", workdir="/tmp/wd/sub")
    assert (code, out) == (0, "/tmp/wd/sub\n")


def test_exec_default_cwd_is_root(sandbox):
    code, out, _ = run(sandbox, "pwd")
    assert (code, out) == (0, "/\n")


def test_exec_missing_workdir(sandbox):
    """A missing workdir is reported (typed error, or a failed exit naming the dir)."""
    try:
        p = sandbox.exec("pwd", workdir="/no/such/dir")
        err = p.stderr.read()
        code = p.wait()
    except sbx.SandboxError as e:
        assert isinstance(e, (sbx.SandboxFileNotFoundError, sbx.InvalidRequestError))
        return
    assert code != 0
    assert "/no/such/dir" in err


def test_exec_relative_workdir_rejected(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.exec("pwd", workdir="tmp")


def test_exec_env(sandbox):
    code, out, _ = run(sandbox, "sh", "-c", 'printf "%s/%s" "$A" "$B"', env={"A": "1", "B": "two words"})
    assert (code, out) == (0, "1/two words")


def test_exec_env_does_not_leak_between_execs(sandbox):
    run(sandbox, "true", env={"ONLY_ONCE": "yes"})
    code, out, _ = run(sandbox, "sh", "-c", 'printf "[%s]" "$ONLY_ONCE"')
    assert out == "[]"


def test_exec_default_env(sandbox):
    code, out, _ = run(sandbox, "sh", "-c", 'printf "%s|%s" "$HOME" "$PATH"')
    home, path = out.split("|")
    assert home == "/root"
    assert "/usr/bin" in path.split(":")


def test_exec_secret_from_dict(sandbox):
    secret = sbx.Secret.from_dict({"API_KEY": "k-123", "DROPPED": None})
    code, out, _ = run(sandbox, "sh", "-c", 'printf "%s|%s" "$API_KEY" "${DROPPED-unset}"',
                       secrets=[secret])
    assert out == "k-123|unset"
    assert "k-123" not in repr(secret)


def test_exec_env_overrides_secret(sandbox):
    secret = sbx.Secret.from_dict({"V": "from-secret"})
    code, out, _ = run(sandbox, "sh", "-c", 'printf "%s" "$V"', secrets=[secret],
                       env={"V": "from-env"})
    assert out == "from-env"


def test_exec_bad_env_name_rejected(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.exec("true", env={"BAD-NAME": "x"})


def test_exec_argument_types_checked(sandbox):
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.exec("echo", 1)  # type: ignore[arg-type]
    with pytest.raises(sbx.InvalidRequestError):
        sandbox.exec()


def test_exec_arguments_are_not_shell_parsed(sandbox):
    code, out, _ = run(sandbox, "echo", "$HOME", "a;b", "*", "'q'")
    assert out == "$HOME a;b * 'q'\n"


def test_exec_output_non_streaming_helper(sandbox):
    res = sandbox.exec_output("sh", "-c", "cat; echo e >&2; exit 4", stdin="piped")
    assert res["stdout"] == "piped"
    assert res["stderr"] == "e\n"
    assert res["exit_code"] == 4


# ---- everyday tools ----------------------------------------------------------------------
def test_coreutils_ls_and_stat_work(sandbox):
    """Agents run `ls` more than anything else. (With gVisor of 2022, statx with
    AT_NO_AUTOMOUNT, which Debian bookworm's coreutils pass, fails with EINVAL.)"""
    sandbox.filesystem.write_text("abc", "/tmp/seen.txt")
    code, out, err = run(sandbox, "ls", "/tmp")
    assert (code, err) == (0, "")
    assert "seen.txt" in out.split()
    code, out, err = run(sandbox, "stat", "-c", "%s", "/tmp/seen.txt")
    assert (code, out, err) == (0, "3\n", "")


def test_login_shells_su_and_the_hostname(sandbox):
    """What a new user tries: `su -` (which clears the environment, and with it any
    LD_PRELOAD workaround) still runs `stat` and `ls`; the hostname resolves (sudo and
    JVMs look it up); /etc/hosts is the sandbox's own and writable."""
    code, out, err = run(sandbox, "sh", "-c",
                         "su - nobody -s /bin/sh -c 'stat -c %n /tmp && ls / >/dev/null && "
                         "echo ok'")
    assert (code, out.strip()) == (0, "/tmp\nok"), err
    code, out, err = run(sandbox, "python3", "-c",
                         "import socket; n = socket.gethostname(); "
                         "print(n, socket.gethostbyname(n))")
    assert (code, out) == (0, "sandbox 127.0.1.1\n"), err
    code, out, err = run(sandbox, "sh", "-c", "echo '10.1.2.3 db' >> /etc/hosts && getent hosts db")
    assert code == 0 and "10.1.2.3" in out, err
