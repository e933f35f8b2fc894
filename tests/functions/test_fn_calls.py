"""Functions through the real server and real containers: every way to call one.

One ephemeral run of tests/functions/apps/fnapp_core.py for the whole module (a cold start
is a second or two); each function has its own container (max_containers=1), kept warm
between tests by the default scaledown window.
"""

from __future__ import annotations

import hashlib
import threading
import time

import fnapp_core as core
import fntest
import pytest

import sandbox_service as modal
from sandbox_service.exception import (
    FunctionCancelledError,
    InvalidRequestError,
    PayloadTooLargeError,
    RemoteError,
    SerializationError,
)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(core.app) as a:
        yield a


# ---- .remote ---------------------------------------------------------------------------------
def test_remote_values_and_kwargs(app):
    assert core.square.remote(7) == 49
    assert core.square.remote(-3) == 9
    args, kwargs = core.echo.remote(1, "two", [3.0, {"four": (4,)}], key="v", other=None)
    assert args == (1, "two", [3.0, {"four": (4,)}])
    assert kwargs == {"key": "v", "other": None}
    # types survive: sets, tuples, bytes, big ints, nested None
    value = {"s": {1, 2}, "t": (None, b"\x00\xff"), "n": 2 ** 100, "f": 1.5}
    assert core.echo.remote(value) == ((value,), {})
    assert core.echo.remote() == ((), {})


def test_remote_none(app):
    assert core.nothing.remote(1) is None
    assert core.echo.remote(None) == ((None,), {})


def test_remote_large_payloads(app):
    data = bytes(range(256)) * (24 * 1024)  # 6 MiB each way
    args, _ = core.echo.remote(data)
    assert len(args[0]) == len(data)
    assert hashlib.sha256(args[0]).digest() == hashlib.sha256(data).digest()
    big_list = list(range(200_000))
    assert core.echo.remote(big_list)[0][0] == big_list


def test_runs_in_the_container(app):
    info = core.where.remote()
    assert info["local"] is False          # modal.is_local() inside the container
    assert info["file"] == "/root/fnapp_core.py"  # the module file was shipped to /root
    assert info["cwd"] == "/root"
    assert modal.is_local() is True        # and here
    # the container stays warm: the same container serves the next call
    assert core.where.remote()["token"] == info["token"]


def test_local_calls_do_not_touch_the_server(app):
    assert core.square.local(5) == 25
    assert core.square(6) == 36
    assert core.add(1, 2, c=3) == 6


# ---- exceptions -----------------------------------------------------------------------------
def test_exception_reraised_with_its_type_and_remote_traceback(app):
    with pytest.raises(ValueError, match="the value was wrong") as ei:
        core.fail.remote("value", "the value was wrong")
    assert type(ei.value) is ValueError
    notes = "\n".join(getattr(ei.value, "__notes__", []))
    assert "Remote traceback" in notes
    assert "fnapp_core.py" in notes and "in fail" in notes
    assert "raise ValueError(message)" in notes

    with pytest.raises(KeyError) as ki:
        core.fail.remote("key", "missing-key")
    assert ki.value.args == ("missing-key",)
    # the function keeps working after raising
    assert core.fail.remote("none", "") == "no failure"


def test_exception_class_of_the_users_module(app):
    with pytest.raises(core.CustomError, match="custom failure") as ei:
        core.fail.remote("custom", "custom failure")
    assert type(ei.value) is core.CustomError
    assert ei.value.code == 42
    assert "in fail" in "\n".join(getattr(ei.value, "__notes__", []))


def test_unpicklable_exception_becomes_remote_error(app):
    with pytest.raises(RemoteError) as ei:
        core.fail.remote("stubborn", "xyz")
    text = str(ei.value)
    assert "StubbornError" in text and "xyz/b" in text
    assert "Remote traceback" in text and "fnapp_core.py" in text


def test_async_function_exception(app):
    with pytest.raises(core.CustomError, match="async boom") as ei:
        core.async_fail.remote("async boom")
    assert ei.value.code == 7


# ---- .map, .starmap, .for_each ---------------------------------------------------------------
def test_map_keeps_order(app):
    assert list(core.square.map(range(25))) == [x * x for x in range(25)]
    assert list(core.square.map([])) == []
    assert list(core.add.map([1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(core.add.map([1, 2], [10, 20], kwargs={"c": 100})) == [111, 122]


def test_map_order_outputs_false_yields_as_they_finish(app):
    delays = [1.5, 1.0, 0.5, 0.0]  # four at once in one container (@concurrent)
    t0 = time.monotonic()
    assert list(core.sleep_for.map(delays, order_outputs=False)) == [0.0, 0.5, 1.0, 1.5]
    assert list(core.sleep_for.map(delays)) == delays
    # concurrent: both maps took about the longest delay each, not their sum
    assert time.monotonic() - t0 < 2 * sum(delays)


def test_map_raises_the_first_failure(app):
    with pytest.raises(ValueError, match="bad input 1"):
        list(core.maybe_fail.map(range(6)))


def test_map_return_exceptions(app):
    out = list(core.maybe_fail.map(range(7), return_exceptions=True))
    assert len(out) == 7
    for x, r in zip(range(7), out):
        if x % 3 == 1:
            assert isinstance(r, ValueError), r
            assert str(r) == f"bad input {x}"
        else:
            assert r == x * 10


def test_starmap(app):
    assert list(core.add.starmap([(1, 2), (3, 4), (5, 6, 7)])) == [3, 7, 18]
    assert list(core.add.starmap([(1, 2)], kwargs={"c": 10})) == [13]


def test_for_each(app):
    assert core.record.for_each(["a", "b", "c"]) is None
    assert sorted(core.record.remote(None, dump=True)) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="record got boom"):
        core.record.for_each(["d", "boom"])
    core.record.for_each(["e", "boom", "f"], ignore_exceptions=True)
    seen = core.record.remote(None, dump=True)
    assert {"a", "b", "c", "e", "f"} <= set(seen)
    assert "boom" not in seen


# ---- .spawn and FunctionCall -----------------------------------------------------------------
def test_spawn_get_timeout_and_from_id(app):
    core.slow_square.remote(0, 0)  # warm: the timing below is the function's, not a cold start
    fc = core.slow_square.spawn(9, 2.0)
    assert isinstance(fc, modal.FunctionCall)
    assert fc.object_id.startswith("fc-")
    with pytest.raises(TimeoutError):
        fc.get(timeout=0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        fc.get(timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert fc.get(timeout=30) == 81
    # another handle (as another process would have) reads the same result, again
    again = modal.FunctionCall.from_id(fc.object_id)
    assert again.get() == 81
    assert fc.get() == 81
    with pytest.raises(InvalidRequestError):
        modal.FunctionCall.from_id("not-a-call-id")


def test_get_timeout_zero_on_a_finished_call(app):
    """FunctionCall.get's own docstring: timeout=0 means "only look"; a finished call's
    result is there to look at."""
    fc = core.square.spawn(4)
    assert fc.get(timeout=60) == 16
    assert fc.get(timeout=0) == 16


def test_spawn_exception_comes_from_get(app):
    fc = core.fail.spawn("custom", "spawned failure")
    with pytest.raises(core.CustomError, match="spawned failure"):
        fc.get(timeout=60)


def test_function_call_gather(app):
    calls = [core.square.spawn(i) for i in range(5)]
    assert modal.FunctionCall.gather(*calls) == [0, 1, 4, 9, 16]


def test_cancel_a_running_call(app):
    fc = core.sleeper.spawn("run", 60.0)
    fntest.wait_for(lambda: core.sleeper.remote("state") == "started", 60,
                    "the sleeper to start")
    t0 = time.monotonic()
    fc.cancel()
    with pytest.raises(FunctionCancelledError):
        fc.get(timeout=30)
    assert time.monotonic() - t0 < 10
    # the cancellation reached the user's code as InputCancellation
    fntest.wait_for(lambda: core.sleeper.remote("state") == "cancelled", 30,
                    "InputCancellation in the container")
    info = fc.get_call_info()
    assert info["cancelled"] is True
    # and the container still serves calls
    assert core.sleeper.remote("run", 0.1) == "finished"


def test_cancel_a_queued_call(app):
    busy = core.slow_square.spawn(2, 3.0)   # takes the only container
    queued = core.slow_square.spawn(3, 0.0)
    queued.cancel()
    with pytest.raises(FunctionCancelledError):
        queued.get(timeout=30)
    assert busy.get(timeout=60) == 4


# ---- generators ------------------------------------------------------------------------------
def test_remote_gen_sync_generator(app):
    assert list(core.gen.remote_gen(5)) == [0, 1, 4, 9, 16]
    assert list(core.gen.remote_gen(0)) == []
    got = []
    with pytest.raises(ValueError, match="generator failed at 3"):
        for item in core.gen.remote_gen(10, fail_at=3):
            got.append(item)  # noqa: PERF402 (the items before the exception)
    assert got == [0, 1, 4]
    with pytest.raises(InvalidRequestError, match="remote_gen"):
        core.gen.remote(3)
    with pytest.raises(InvalidRequestError, match="not a generator"):
        list(core.square.remote_gen(3))


def test_remote_gen_async_generator(app):
    assert list(core.agen.remote_gen(4)) == ["item-0", "item-1", "item-2", "item-3"]


async def test_remote_gen_aio(app):
    got = [x async for x in core.gen.remote_gen.aio(4)]
    assert got == [0, 1, 4, 9]
    got = [x async for x in core.agen.remote_gen.aio(2)]
    assert got == ["item-0", "item-1"]


# ---- async functions and .aio ----------------------------------------------------------------
def test_async_def_function(app):
    assert core.async_square.remote(12) == 144
    assert list(core.async_square.map(range(6))) == [x * x for x in range(6)]


async def test_aio_variants(app):
    assert await core.square.remote.aio(11) == 121
    assert await core.async_square.remote.aio(5) == 25
    got = [x async for x in core.square.map.aio(range(8))]
    assert got == [x * x for x in range(8)]
    got = [x async for x in core.add.starmap.aio([(1, 1), (2, 2)])]
    assert got == [2, 4]
    fc = await core.square.spawn.aio(6)
    assert await fc.get.aio(timeout=60) == 36
    calls = [await core.square.spawn.aio(i) for i in (2, 3)]
    assert await modal.FunctionCall.gather.aio(*calls) == [4, 9]
    with pytest.raises(core.CustomError):
        await core.fail.remote.aio("custom", "aio failure")


# ---- arguments that cannot travel ------------------------------------------------------------
def test_unpicklable_argument_fails_before_any_call(app):
    fid = core.square.object_id
    before = fntest.function_info(fid)
    with pytest.raises(SerializationError):
        core.square.remote(threading.Lock())
    with pytest.raises(SerializationError):
        list(core.square.map([1, threading.Lock()]))
    with pytest.raises(SerializationError):
        core.square.spawn(x=threading.Lock())
    after = fntest.function_info(fid)
    assert after["queued"] == before["queued"] == 0 and after["running"] == 0


def test_payload_over_the_limit_fails_before_any_call(app):
    from sandbox_service.wire import MAX_PAYLOAD_BYTES

    with pytest.raises(PayloadTooLargeError):
        core.echo.remote(b"\0" * (MAX_PAYLOAD_BYTES + 1))
