"""The warm pool: pre-booted sandboxes handed out once, invisible until taken, refilled."""

from __future__ import annotations

import os
import time

import pytest
from sbxtest import own_server

import sandbox_service as sbx


def _pool_dirs(server, known: set[str]) -> set[str]:
    d = os.path.join(server.home, "runtime", "sandboxes")
    return set(os.listdir(d)) - known


def _wait_pool(server, known: set[str], n: int = 2, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = _pool_dirs(server, known)
        if len(ids) >= n and all(os.path.exists(os.path.join(
                server.home, "runtime", "sandboxes", i, "run", "agent.sock")) for i in ids):
            return ids
        time.sleep(0.1)
    raise AssertionError("warm pool did not fill")


def test_pool_hands_out_each_sandbox_once_and_refills(server, api):
    running = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    pool = _wait_pool(server, running)
    assert not pool & {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    a = sbx.Sandbox.create(env={"WHO": "a"}, timeout=60)
    b = sbx.Sandbox.create(env={"WHO": "b"}, timeout=60)
    try:
        assert {a.object_id, b.object_id} <= pool  # both came from the pool
        for sb, who in ((a, "a"), (b, "b")):
            p = sb.exec("sh", "-c", "echo $WHO; ls /tmp | wc -l")
            assert p.stdout.read() == f"{who}\n0\n"
        a.filesystem.write_text("mine", "/tmp/secret")
        refilled = _wait_pool(server, running | {a.object_id, b.object_id})
        assert not refilled & {a.object_id, b.object_id}  # never handed out again
    finally:
        a.terminate()
        b.terminate()
    c = sbx.Sandbox.create(timeout=60)
    try:
        assert c.object_id not in (a.object_id, b.object_id)
        assert not c.filesystem.exists("/tmp/secret")
    finally:
        c.terminate()


def test_non_default_limits_boot_cold(server, api):
    running = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    pool = _wait_pool(server, running)
    sb = sbx.Sandbox.create(memory=300, timeout=60)
    try:
        assert sb.object_id not in pool
        assert sb.info.memory_mib == 300
        assert sb.exec("true").wait() == 0
    finally:
        sb.terminate()


def test_pooled_sandbox_with_command_and_workdir(server, api):
    running = {s["sandbox_id"] for s in api.get("/v1/sandboxes").json()["sandboxes"]}
    _wait_pool(server, running)
    sb = sbx.Sandbox.create("sh", "-c", "pwd; echo $X", workdir="/srv/app", env={"X": "y"},
                            timeout=60)
    assert sb.wait() == 0
    assert sb.stdout.read() == "/srv/app\ny\n"


@pytest.fixture(scope="module")
def demand():
    """A server of its own whose pools follow demand: 1 default, 3 in all."""
    with own_server("sbx-tp-", SBX_WARM_POOL="1", SBX_WARM_POOL_MAX="3") as srv:
        yield srv


def test_a_profile_asked_for_is_pooled_with_its_own_limits(demand):
    _wait_pool(demand, set(), n=1, timeout_s=120)  # the default profile's one
    firsts = []
    for _ in range(2):  # cold: a profile gets a pool once it is asked for twice
        firsts.append(sbx.Sandbox.create(memory=300, timeout=60).object_id)
        sbx.Sandbox.from_id(firsts[-1]).terminate()
    pool = _wait_pool(demand, set(firsts), n=3)  # the default one and two of 300 MiB
    sb = sbx.Sandbox.create(memory=300, timeout=60)
    try:
        assert sb.object_id in pool, "the second create of that profile must be warm"
        assert sb.info.memory_mib == 300
        total_kib = int(sb.exec("sh", "-c", "grep MemTotal /proc/meminfo | tr -s ' ' | "
                                "cut -d' ' -f2").stdout.read())
        assert 250 * 1024 <= total_kib <= 300 * 1024, total_kib  # booted with its limit
        other = sbx.Sandbox.create(timeout=60)  # the default profile's, still there
        try:
            assert other.object_id in pool and other.object_id != sb.object_id
            assert int(other.exec("sh", "-c", "grep MemTotal /proc/meminfo | tr -s ' ' | "
                                  "cut -d' ' -f2").stdout.read()) > 900 * 1024
        finally:
            other.terminate()
    finally:
        sb.terminate()
