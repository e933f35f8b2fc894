"""Dicts and Queues through the real server: every operation from the client, blocking
gets woken by puts, the limits' typed errors, ephemeral objects, one principal's objects
invisible to another, and both used from inside function containers."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import fnapp_kv as m
import fntest
import pytest

import sandbox_service as modal
from sandbox_service.exception import NotFoundError

pytestmark = pytest.mark.timeout(300)


def _name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_dict_operations(server):
    name = _name("d")
    with pytest.raises(NotFoundError, match="create_if_missing"):
        modal.Dict.from_name(name).get("x")
    d = modal.Dict.from_name(name, create_if_missing=True)
    d["a"] = 1
    d[("t", 2)] = {"nested": [1, 2]}
    assert d["a"] == 1 and d.get(("t", 2)) == {"nested": [1, 2]}
    assert d.get("missing") is None and d.get("missing", 7) == 7
    with pytest.raises(KeyError):
        d["missing"]
    assert "a" in d and d.contains("a") and "zz" not in d
    assert d.put("a", 2, skip_if_exists=True) is False and d["a"] == 1
    assert d.put("b", 2, skip_if_exists=True) is True
    d.update({"c": 3}, e=5)
    assert d.len() == 5
    assert sorted(map(str, d.keys())) == sorted(map(str, ["a", ("t", 2), "b", "c", "e"]))
    assert dict(d.items())["c"] == 3 and sorted(v for v in d.values() if isinstance(v, int)) \
        == [1, 2, 3, 5]
    assert d.pop("a") == 1 and "a" not in d
    with pytest.raises(KeyError):
        d.pop("a")
    del d["b"]
    with pytest.raises(KeyError):
        del d["b"]
    # another handle by name sees the same data; clear empties it
    assert modal.Dict.from_name(name).get("c") == 3
    d.clear()
    assert d.len() == 0
    modal.Dict.delete(name)
    with pytest.raises(NotFoundError):
        modal.Dict.from_name(name).len()
    modal.Dict.delete(name, allow_missing=True)


def test_dict_limits(server):
    with modal.Dict.ephemeral() as d:
        with pytest.raises(modal.InvalidRequestError, match="larger than"):
            d["big"] = b"x" * (17 << 20)
        d["ok"] = b"x" * (1 << 20)
        assert len(d["ok"]) == 1 << 20


def test_queue_operations_and_blocking(server):
    with modal.Queue.ephemeral() as q:
        assert q.get(block=False) is None
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        q.put(1)
        q.put_many([2, 3, 4])
        q.put("p1", partition="p")
        assert q.len() == 4 and q.len(partition="p") == 1 and q.len(total=True) == 5
        assert list(q.iterate()) == [1, 2, 3, 4]  # does not remove
        assert q.get() == 1 and q.get_many(2) == [2, 3] and q.get_many(10) == [4]
        assert q.get(partition="p") == "p1"
        # a blocked get returns as soon as another client puts
        threading.Timer(1.0, lambda: q.put("late")).start()
        t0 = time.monotonic()
        assert q.get(timeout=30) == "late"
        assert time.monotonic() - t0 < 10
        q.put_many(list(range(10)), partition="c")
        q.clear(partition="c")
        assert q.len(partition="c") == 0
        q.put_many([1, 2])
        q.put(3, partition="x")
        q.clear(all=True)
        assert q.len(total=True) == 0


def test_queue_full_partition(server):
    with modal.Queue.ephemeral() as q:
        q.put_many(list(range(5000)))
        with pytest.raises(queue.Full):
            q.put(1, block=False)
        with pytest.raises(queue.Full):
            q.put(1, timeout=1.0)
        assert q.get_many(5000)[-1] == 4999


def test_ephemeral_objects_go_with_their_context(server):
    with modal.Dict.ephemeral() as d:
        d["x"] = 1
        oid = d.object_id
    with fntest.api() as c:
        r = c.post(f"/v1/dicts/{oid}/get", json={"key_b64": "gAVLAS4="})
        assert r.status_code == 404, r.text


def test_objects_are_per_principal(server, api):
    name = _name("mine")
    modal.Dict.from_name(name, create_if_missing=True)["k"] = "secret"
    r = api.post("/v1/tokens", json={"scope": "user", "principal": "mallory"})
    import httpx

    with httpx.Client(base_url=server.url, headers={
            "Authorization": f"Bearer {r.json()['token']}"}) as c:
        r = c.post("/v1/dicts/lookup", json={"name": name})
        assert r.status_code == 404  # mallory's namespace has no such Dict
        r = c.post("/v1/dicts/lookup", json={"name": name, "create_if_missing": True})
        assert r.status_code == 200
        theirs = r.json()["object_id"]
        r = c.post(f"/v1/dicts/{theirs}/get", json={"key_b64": "gAVLAS4="})
        assert r.json()["found"] is False
    mine = modal.Dict.from_name(name)
    assert mine["k"] == "secret"
    modal.Dict.delete(name)


def test_dict_and_queue_from_inside_functions(server):
    name = _name("fnkv")
    assert modal.Queue.from_name(name, create_if_missing=True).len() == 0  # lazy: create now
    assert modal.Dict.from_name(name, create_if_missing=True).len() == 0
    with fntest.running(m.app):
        waiting = m.consumer.spawn(name, 3)
        time.sleep(1.0)
        assert m.producer.remote(name, ["a", "b", "c"]) == 3
        assert waiting.get(timeout=90) == ["a", "b", "c"]
    assert modal.Dict.from_name(name)["consumed"] == ["a", "b", "c"]
    modal.Queue.delete(name)
    modal.Dict.delete(name)


def test_async_twins(server):
    import asyncio

    async def main():
        async with modal.Dict.ephemeral() as d:
            await d.put.aio("k", 1)
            assert await d.get.aio("k") == 1 and await d.len.aio() == 1
            assert [k async for k in d.keys.aio()] == ["k"]
        async with modal.Queue.ephemeral() as q:
            await q.put_many.aio([1, 2])
            assert await q.get_many.aio(5) == [1, 2]
            with pytest.raises(queue.Empty):
                await q.get.aio(timeout=0.2)
    asyncio.run(main())


def test_cli_dict_and_queue(server):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SBX_URL": server.url, "SBX_TOKEN": server.token}
    name = _name("cli")

    def sbx(*args):
        return subprocess.run([sys.executable, "-m", "sandbox_service.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
    assert sbx("dict", "create", name).returncode == 0
    modal.Dict.from_name(name)["k"] = [1, 2]
    r = sbx("dict", "items", name)
    assert r.returncode == 0 and "'k': [1, 2]" in r.stdout, r.stderr
    assert name in sbx("dict", "ls").stdout
    assert sbx("dict", "rm", name).returncode == 0
    r = sbx("dict", "rm", name)
    assert r.returncode != 0 and "no Dict named" in r.stderr
    assert sbx("dict", "rm", name, "--allow-missing").returncode == 0
    assert sbx("queue", "create", name).returncode == 0
    modal.Queue.from_name(name).put_many(["x", "y"])
    assert sbx("queue", "len", name).stdout.strip() == "2"
    assert sbx("queue", "peek", name).stdout.split() == ["'x'", "'y'"]
    assert sbx("queue", "clear", name).returncode == 0
    assert sbx("queue", "len", name).stdout.strip() == "0"
    assert sbx("queue", "rm", name).returncode == 0


def test_a_get_whose_client_went_away_takes_nothing(server):
    """A blocking get abandoned by its client (Ctrl-C, a timeout) must not take the next
    item: it would be lost."""
    import httpx

    with modal.Queue.ephemeral() as q:
        q.put("first")
        assert q.get() == "first"  # hydrated
        with fntest.api() as c:
            with pytest.raises(httpx.ReadTimeout):
                c.post(f"/v1/queues/{q.object_id}/get",
                       json={"partition": "", "n_values": 1, "timeout_s": 20}, timeout=1.0)
        time.sleep(0.5)
        q.put("second")
        time.sleep(1.0)  # the abandoned get wakes on this put
        assert q.get(timeout=5) == "second"
