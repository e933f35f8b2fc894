"""Unit checks of small trust boundaries: the host never buffers an agent frame larger
than the protocol allows (root in a sandbox can stand in for its agent), and the service's
key files come out whole and agreed on when many threads create them at once."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from runtimes import AgentUnavailable
from runtimes._agent_client import AgentClient, read_frame
from runtimes.agent.sbxagent import proto
from runtimes.agent.sbxagent.kernels import MAX_EVENT_LINE
from security._keyfile import ensure_key_file

pytestmark = pytest.mark.fast


def test_an_oversized_agent_frame_is_refused_before_it_is_read():
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(proto.HEADER.pack(proto.RESP, proto.MAX_FRAME + 1))
        reader.feed_data(b"x" * 1024)  # the rest never comes: a read would wait forever
        return await asyncio.wait_for(read_frame(reader), 5)

    assert asyncio.run(go()) == (None, b"")


def test_a_frame_at_the_limit_is_read():
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(proto.HEADER.pack(proto.RESP, 3) + b"abc")
        return await read_frame(reader)

    assert asyncio.run(go()) == (proto.RESP, b"abc")


def test_an_interpreter_event_fits_in_one_frame():
    assert MAX_EVENT_LINE < proto.MAX_FRAME


def test_concurrent_key_file_creation_agrees_on_one_whole_key(tmp_path):
    path = str(tmp_path / "k" / "secrets.key")
    got: list[bytes] = []
    start = threading.Barrier(16)

    def worker():
        start.wait()
        got.append(ensure_key_file(path, lambda: os.urandom(32)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got[0]) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(os.path.dirname(path)) == ["secrets.key"]  # no temporary left


def test_a_stream_is_cleaned_up_even_when_its_head_cannot_be_sent():
    """The client left before the response head went out: the body never starts, and the
    agent connection it holds must still be released."""
    from sandbox_service.server.routes._streaming import OwnedStreamingResponse

    cleaned, started = [], []

    async def body():
        started.append(True)
        yield b"x"

    async def cleanup():
        cleaned.append(True)

    async def receive():
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        raise OSError("client gone")

    async def go():
        resp = OwnedStreamingResponse(body(), cleanup=cleanup)
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        try:
            await resp(scope, receive, send)
        except Exception:  # starlette turns the failed send into ClientDisconnect
            pass

    asyncio.run(go())
    assert cleaned == [True] and started == []


def test_the_host_never_follows_a_link_to_the_agent_socket(tmp_path):
    """The socket directory is the sandbox's: a link planted there must not lead the host
    to another socket (another sandbox's agent)."""
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(tmp_path / "other.sock"))
    other.listen(1)
    os.symlink(tmp_path / "other.sock", tmp_path / "agent.sock")
    try:
        with pytest.raises(AgentUnavailable, match="not a socket"):
            asyncio.run(AgentClient(str(tmp_path / "agent.sock")).ping(5))
        with pytest.raises(AgentUnavailable):  # a regular file in its place: same
            (tmp_path / "agent.sock").unlink()
            (tmp_path / "agent.sock").write_text("x")
            asyncio.run(AgentClient(str(tmp_path / "agent.sock")).ping(5))
    finally:
        other.close()


def test_a_ping_to_an_agent_dying_under_it_is_agent_unavailable(monkeypatch):
    """The agent's end closed between the connect and the ping (its sandbox is being
    destroyed): the ping fails as AgentUnavailable, never as a bare ConnectionError, so
    the exec route reports the command killed (137) instead of dropping the client's
    WebSocket."""
    from runtimes import _agent_client

    async def open_dead(_path):
        mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.close()
        return await asyncio.open_unix_connection(sock=mine)

    monkeypatch.setattr(_agent_client, "_open", open_dead)
    with pytest.raises(AgentUnavailable, match="closed the connection"):
        asyncio.run(AgentClient("/nonexistent").ping(5))

