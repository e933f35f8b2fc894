"""Volume and concurrency against the real server: 100 MB streamed through an exec with
the server's memory watched, and 20 sandboxes created at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import sandbox_service as sbx

RSS_GROWTH_LIMIT_MB = 60


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class _RssSampler:
    def __init__(self, pid: int, interval_s: float = 0.05):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))
            except OSError:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_100mb_stream_bounded_server_memory(server, sandbox):
    # warm up the exec path so one-time allocations are not counted
    p = sandbox.exec("head", "-c", "1000000", "/dev/zero", text=False)
    assert len(p.stdout.read()) == 1_000_000
    assert p.wait() == 0
    base_kb = _rss_kb(server.proc.pid)
    total = 0
    chunks = 0
    with _RssSampler(server.proc.pid) as sampler:
        p = sandbox.exec("head", "-c", "100000000", "/dev/zero", text=False)
        for chunk in p.stdout:
            assert isinstance(chunk, bytes)
            if chunks % 64 == 0:
                assert chunk.count(0) == len(chunk)
            total += len(chunk)
            chunks += 1
        code = p.wait()
    assert code == 0
    assert total == 100_000_000
    assert chunks > 10  # it streamed, not one blob
    growth_mb = (sampler.peak_kb - base_kb) / 1024
    print(f"server RSS {base_kb // 1024} MB -> peak {sampler.peak_kb // 1024} MB")
    assert growth_mb < RSS_GROWTH_LIMIT_MB, f"server RSS grew by {growth_mb:.1f} MB"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slow_reader_backpressure_bounded_server_memory(server, sandbox):
    """A client that reads slowly must slow the command, not grow the server."""
    base_kb = _rss_kb(server.proc.pid)
    with _RssSampler(server.proc.pid) as sampler:
        p = sandbox.exec("head", "-c", "60000000", "/dev/zero", text=False)
        time.sleep(3)  # the command could have written everything by now
        total = sum(len(c) for c in p.stdout)
        assert p.wait() == 0
    assert total == 60_000_000
    growth_mb = (sampler.peak_kb - base_kb) / 1024
    print(f"server RSS {base_kb // 1024} MB -> peak {sampler.peak_kb // 1024} MB")
    assert growth_mb < RSS_GROWTH_LIMIT_MB, f"server RSS grew by {growth_mb:.1f} MB"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_20_sandboxes_concurrently(server):
    n = 20
    tag = f"conc-{time.time_ns()}"

    async def one(i: int):
        sb = await sbx.Sandbox.create.aio(timeout=300, tags={"conc": tag, "i": str(i)})
        p = await sb.exec.aio("python3", "-c", f"import os; print({i} * 7, os.getpid() > 0)")
        out = await p.stdout.read.aio()
        return sb, out, await p.wait.aio()

    t0 = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    elapsed = time.monotonic() - t0
    sandboxes = [r[0] for r in results if not isinstance(r, BaseException)]
    try:
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        for i, (_, out, code) in enumerate(results):
            assert (out, code) == (f"{i * 7} True\n", 0)
        ids = {sb.object_id for sb in sandboxes}
        assert len(ids) == n
        listed = {s.object_id for s in await sbx.Sandbox.list.aio(tags={"conc": tag})}
        assert listed == ids
        assert elapsed < 120, elapsed
    finally:
        await asyncio.gather(*(sb.terminate.aio() for sb in sandboxes), return_exceptions=True)
    infos = [await sbx.Sandbox.from_id.aio(sb.object_id) for sb in sandboxes]
    assert [i.info.state for i in infos] == ["terminated"] * n
    assert await sbx.Sandbox.list.aio(tags={"conc": tag}) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_20_sandboxes_concurrently_threads(server):
    n = 20
    results: dict[int, tuple] = {}
    made: list = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            sb = sbx.Sandbox.create(timeout=300)
            with lock:
                made.append(sb)
            p = sb.exec("sh", "-c", f"echo {i}; exit {i % 3}")
            results[i] = (p.stdout.read(), p.wait())
        except BaseException as e:  # noqa: BLE001
            results[i] = (e, None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert results == {i: (f"{i}\n", i % 3) for i in range(n)}
    finally:
        for sb in made:
            try:
                sb.terminate()
            except sbx.SandboxError:
                pass
    assert all(sbx.Sandbox.from_id(sb.object_id).info.state == "terminated" for sb in made)
