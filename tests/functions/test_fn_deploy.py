"""Deployed apps through the real server: app.deploy() under a unique name, then
Function.from_name / Cls.from_name (from here and from inside a container), a redeploy,
and the stop (POST /v1/apps/{id}/stop) that ends everything, running @modal.exit."""

from __future__ import annotations

import uuid

import fnapp_deploy as d
import fntest
import pytest

import sandbox_service as modal
from sandbox_service.exception import InvalidRequestError, NotFoundError


@pytest.fixture(scope="module")
def deployed(server):
    name = f"fn-deploy-{uuid.uuid4().hex[:10]}"
    app = d.app.deploy(name=name)
    app_id = app.app_id
    assert app_id and app_id == d.app.app_id
    try:
        yield name, app_id
    finally:
        fntest.stop_app(app_id)
        fntest.assert_app_left_nothing(app_id)


def test_deployed_app_is_listed(deployed):
    name, app_id = deployed
    with fntest.api() as c:
        info = c.get(f"/v1/apps/{app_id}").json()
    assert info["state"] == "deployed" and info["name"] == name
    assert set(info["functions"]) == {"triple", "items", "via_name", "Counter"}


def test_function_from_name(deployed):
    name, _ = deployed
    f = modal.Function.from_name(name, "triple")
    assert f.remote(4) == 12
    assert list(f.map([1, 2, 3])) == [3, 6, 9]
    fc = f.spawn(5)
    assert modal.FunctionCall.from_id(fc.object_id).get(timeout=60) == 15
    # hydrated first, a looked-up generator streams
    items = modal.Function.from_name(name, "items").hydrate()
    assert list(items.remote_gen(3)) == [0, 1, 2]
    with pytest.raises(InvalidRequestError, match="remote_gen"):
        items.remote(3)


def test_function_from_name_generator_without_hydrate(deployed):
    name, _ = deployed
    assert list(modal.Function.from_name(name, "items").remote_gen(3)) == [0, 1, 2]


def test_cls_from_name(deployed):
    name, _ = deployed
    Counter = modal.Cls.from_name(name, "Counter")
    c = Counter(start=10)
    assert c.incr.remote(5) == 15
    assert c.incr.remote() == 16          # the same container keeps its state
    assert Counter().incr.remote() == 1   # other parameters, another container


def test_from_name_inside_a_container(deployed):
    name, _ = deployed
    assert modal.Function.from_name(name, "via_name").remote(name, 2) == 7


def test_from_name_errors(deployed):
    name, _ = deployed
    with pytest.raises(NotFoundError):
        modal.Function.from_name(f"no-such-app-{uuid.uuid4().hex[:6]}", "triple").remote(1)
    with pytest.raises(NotFoundError):
        modal.Function.from_name(name, "no_such_function").remote(1)
    with pytest.raises(InvalidRequestError):
        modal.Function.from_name(name, "Counter.incr")
    with pytest.raises(InvalidRequestError, match="is a function"):
        modal.Cls.from_name(name, "triple")().incr.remote()


def test_redeploy_serves_the_new_version(deployed):
    name, app_id = deployed
    old = modal.Function.from_name(name, "triple").hydrate().object_id
    d.app.deploy(name=name)
    with fntest.api() as c:
        info = c.get(f"/v1/apps/{app_id}").json()
    assert info["version"] == 2 and info["state"] == "deployed"
    f = modal.Function.from_name(name, "triple").hydrate()
    assert f.object_id != old
    assert f.remote(7) == 21
    # the old function id still answers: it forwards to the new version
    assert fntest.function_info(old)["function_id"] == f.object_id


def test_stop_ends_everything_and_runs_exit(deployed):
    name, app_id = deployed
    Counter = modal.Cls.from_name(name, "Counter")
    assert Counter(start=100).incr.remote(1) == 101
    summary = fntest.stop_app(app_id)
    assert summary["state"] == "stopped"
    fntest.assert_app_left_nothing(app_id)
    fntest.wait_for(lambda: "COUNTER-EXIT start=100 n=101" in fntest.app_logs(app_id), 10,
                    "@exit's output")
    with pytest.raises(NotFoundError):
        modal.Function.from_name(name, "triple").remote(1)
