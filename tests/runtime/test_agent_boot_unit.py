"""The agent's first moments (runtimes/agent/sbxagent/boot.py) and its wire JSON
(jsonc.py), on the host: the ping is answered before the rest of the agent loads, a request
that comes during the load waits for it and is then served, a load that fails answers every
request with why, and the C-accelerated JSON says exactly what `json` would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from runtimes._agent_client import AgentClient
from runtimes.agent.sbxagent import boot, jsonc, proto

pytestmark = pytest.mark.fast

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(proto.__file__)))


def test_the_early_ping_frames_are_the_protocols():
    assert proto.encode_json(proto.REQ, {"op": "ping"}) == proto.encode(proto.REQ, boot.PING)
    assert boot.pong() == proto.encode_json(proto.RESP, {"ok": True, "pid": os.getpid(), "agent": 1})
    assert boot.error_frame("x") == proto.encode_json(proto.RESP, {"error": "agent_error",
                                                                    "message": "x"})
    assert json.loads(boot.error_frame('it said "no" \\ twice')[5:])["message"] == "it said 'no' / twice"


@pytest.mark.parametrize("value", [
    {"op": "exec", "argv": ["sh", "-c", "echo 'h\u00e9' \"$X\"\n"], "env": {"X": "\u2603"}},
    {"n": -3, "big": 2**70, "f": 1.25, "e": 1e-300, "t": True, "fa": False, "u": None},
    {"nested": [[], {}, [{"a": [1, {"b": None}]}]], "surrogate": "name-\udcff"},
    [], "plain \x00 string", 7, None,
])
def test_jsonc_says_what_json_says(value):
    assert jsonc._ok, "the fast path must be in use on this interpreter"
    text = jsonc.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert jsonc.loads(text) == value
    assert jsonc.loads(text.encode()) == value
    assert jsonc.loads(json.dumps(value, indent=2)) == value  # whitespace anywhere


@pytest.mark.parametrize("bad", ["", "{", '{"a":1} x', "nul", '{"a":1}{}', "[1,]", b"\xff"])
def test_jsonc_refuses_what_json_refuses(bad):
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonc.loads(bad)


def test_jsonc_refuses_what_it_cannot_write():
    with pytest.raises(TypeError):
        jsonc.dumps({"a": object()})


def _send(path: str, req: dict) -> dict:
    async def go():
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(proto.encode_json(proto.REQ, req))
        await writer.drain()
        head = await reader.readexactly(proto.HEADER.size)
        ftype, n = proto.HEADER.unpack(head)
        body = await reader.readexactly(n)
        writer.close()
        return json.loads(body)
    return asyncio.run(asyncio.wait_for(go(), 10))


class _Server:
    """What boot.load() hands the early loop, with a load that waits for the test."""

    def __init__(self, release: threading.Event):
        self.release = release
        self.handled = []

    def handle_first(self, fd, ftype, payload):
        import socket

        sock = socket.socket(fileno=fd)
        self.handled.append(json.loads(payload))
        conn = proto.Conn(sock)
        conn.send_json(proto.RESP, {"ok": True, "served": json.loads(payload)["op"]})
        sock.close()


def _booted(tmp_path, load):
    b = boot.Boot(str(tmp_path / "agent.sock"))
    b.listen()
    b.load = load.__get__(b)  # the test's own load
    threading.Thread(target=b.load, daemon=True).start()
    loop = threading.Thread(target=b.early_loop, daemon=True)
    loop.start()
    return b, loop


def test_a_ping_is_answered_while_the_rest_loads_and_other_requests_wait(tmp_path):
    release = threading.Event()
    fake = _Server(release)

    def load(self):
        release.wait(10)
        self.server, self.workers = fake, None
        self.loaded.release()
        self.done = True
        boot._socket.socket(boot._socket.AF_UNIX, boot._socket.SOCK_STREAM).connect(self.path)

    b, loop = _booted(tmp_path, load)
    assert _send(b.path, {"op": "ping"})["ok"] is True  # the load has not finished
    got = []
    waiter = threading.Thread(target=lambda: got.append(_send(b.path, {"op": "stat"})))
    waiter.start()
    time.sleep(0.3)
    assert got == [] and fake.handled == [], "a request was served before the agent loaded"
    release.set()
    waiter.join(10)
    assert got == [{"ok": True, "served": "stat"}]
    loop.join(10)
    assert not loop.is_alive(), "the early loop must stop once the rest has loaded"


def test_a_load_that_fails_answers_every_request_with_why(tmp_path):
    def load(self):
        self.failure = "SyntaxError: invalid syntax (server.py, line 1)"
        self.loaded.release()

    b, loop = _booted(tmp_path, load)
    assert _send(b.path, {"op": "ping"})["ok"] is True
    for _ in range(2):
        resp = _send(b.path, {"op": "exec", "argv": ["true"]})
        assert resp["error"] == "agent_error"
        assert "failed to load: SyntaxError" in resp["message"]
    assert loop.is_alive()


def test_the_real_agent_boots_answers_and_runs_a_command(tmp_path):
    """The whole agent as PID 1 would start it (here as a plain process on the host)."""
    path = str(tmp_path / "agent.sock")
    code = f"import sys; sys.path.insert(0, {AGENT_ROOT!r}); import sbxagent; sbxagent.main()"
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, path])
    try:
        from runtimes import ExecSpec, ExitFrame

        async def go():
            client = AgentClient(path)
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert (await client.ping(2))["pid"] == proc.pid
                    break
                except (OSError, Exception):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
            events = []
            stream = await client.exec(ExecSpec(["sh", "-c", "echo out; echo err >&2; exit 3"]))
            async for ev in stream.events():
                events.append(ev)
                if isinstance(ev, ExitFrame):
                    break
            await stream.close()
            return events

        events = asyncio.run(go())
        assert ("stdout", b"out\n") in events and ("stderr", b"err\n") in events
        assert events[-1].exit_code == 3
    finally:
        proc.kill()
        proc.wait()
