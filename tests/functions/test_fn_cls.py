"""Classes (@app.cls) and the input-shaping decorators (@modal.concurrent,
@modal.batched) through the real server and real containers."""

from __future__ import annotations

import time

import fnapp_cls as m
import fntest
import pytest

from sandbox_service.exception import InvalidRequestError


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(m.app) as a:
        yield a


# ---- classes ---------------------------------------------------------------------------------
def test_parameters_and_methods(app):
    out = m.Model(size=3, label="big").predict.remote(2)
    assert out["y"] == 6 and out["label"] == "big"
    assert out["weights"] == [3, 3, 3]          # set by @enter from the parameter
    default = m.Model().predict.remote(2)
    assert default["y"] == 2 and default["label"] == "plain"
    # each set of parameters has its own container
    assert default["token"] != out["token"]
    assert m.Model(size=3, label="big").predict.remote(5)["token"] == out["token"]


def test_enter_runs_once_per_container(app):
    obj = m.Model(size=4)
    outs = [obj.predict.remote(i) for i in range(3)]
    outs += list(obj.predict.map(range(3, 6)))
    assert [o["y"] for o in outs] == [4 * i for i in range(6)]
    assert {o["token"] for o in outs} == {outs[0]["token"]}
    assert {o["enters"] for o in outs} == {1}


def test_generator_method(app):
    obj = m.Model(size=2)
    assert list(obj.stream.remote_gen(4)) == [0, 2, 4, 6]
    with pytest.raises(InvalidRequestError):
        obj.stream.remote(4)


async def test_async_method_and_aio(app):
    obj = m.Model(size=10)
    assert obj.apredict.remote(1) == 11
    assert await obj.apredict.remote.aio(5) == 15
    assert await obj.predict.remote.aio(2) == (await obj.predict.remote.aio(2))
    got = [x async for x in obj.stream.remote_gen.aio(3)]
    assert got == [0, 10, 20]


def test_method_exception(app):
    with pytest.raises(ValueError, match="method said no") as ei:
        m.Model().boom.remote("method said no")
    assert "in boom" in "\n".join(getattr(ei.value, "__notes__", []))


def test_class_misuse_fails_locally(app):
    with pytest.raises(TypeError):
        m.Model(bogus=1)
    with pytest.raises(TypeError):
        m.Model(3)
    with pytest.raises(AttributeError):
        m.Model().not_a_method.remote()
    assert m.Model(size=7).predict.local(2)["y"] == 14


# ---- @modal.concurrent -----------------------------------------------------------------------
def test_concurrent_function_runs_inputs_at_once(app):
    m.conc_fn.remote(-1)                       # warm: time the inputs, not the boot
    t0 = time.monotonic()
    out = list(m.conc_fn.map(range(4)))
    elapsed = time.monotonic() - t0
    assert [x for x, _, _ in out] == [0, 1, 2, 3]
    assert len({t for _, t, _ in out}) == 1    # one container (max_containers=1)
    assert max(p for _, _, p in out) == 4      # all four at once
    assert elapsed < 4 * 0.8, elapsed
    # never more than max_inputs at once
    out = list(m.conc_fn.map(range(10)))
    assert max(p for _, _, p in out) == 4
    assert len({t for _, t, _ in out}) == 1


def test_concurrent_async_function(app):
    m.aconc_fn.remote(-1)
    t0 = time.monotonic()
    out = list(m.aconc_fn.map(range(3)))
    assert max(p for _, _, p in out) == 3
    assert len({t for _, t, _ in out}) == 1
    assert time.monotonic() - t0 < 3 * 0.6


def test_concurrent_class(app):
    obj = m.ConcModel()
    obj.work.remote(-1)
    out = list(obj.work.map(range(6)))
    assert [x for x, _, _ in out] == list(range(6))
    assert len({t for _, t, _ in out}) == 1
    assert max(p for _, _, p in out) == 3


# ---- @modal.batched --------------------------------------------------------------------------
def test_batched_function(app):
    out = list(m.double.map(range(10)))
    assert [v for v, _ in out] == [x * 2 for x in range(10)]
    sizes = [n for _, n in out]
    assert max(sizes) <= 4                     # max_batch_size
    assert max(sizes) > 1                      # inputs were really batched
    t0 = time.monotonic()
    assert m.double.remote(21) == (42, 1)      # a lone input waits wait_ms, then runs alone
    assert time.monotonic() - t0 >= 0.3


def test_batched_failure_fails_its_inputs(app):
    with pytest.raises(ValueError, match="negative number"):
        m.double.remote(-1)
    assert m.double.remote(2) == (4, 1)


def test_batched_several_arguments(app):
    assert list(m.add_pairs.map(range(6), range(10, 16))) == [x + x + 10 for x in range(6)]


def test_batched_method(app):
    out = list(m.Embedder().embed.map(["a", "bb", "ccc", "dddd", "eeeee"]))
    assert [n for n, _ in out] == [1, 2, 3, 4, 5]
    assert max(b for _, b in out) <= 3
    assert max(b for _, b in out) > 1
