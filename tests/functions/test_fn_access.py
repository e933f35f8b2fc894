"""What a function's code may reach from its container, through the real server: other
functions of its app (over the runner's channel, as the container's identity), nothing
with restrict_modal_access=True, no network with block_network=True; and code shipped by
value (serialized=True)."""

from __future__ import annotations

import fnapp_access as m
import fntest
import pytest

import sandbox_service as modal
from sandbox_service.exception import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(m.app) as a:
        yield a


def test_function_calls_another_function_of_its_app(app):
    assert m.caller.remote(5) == 26
    assert list(m.caller.map([1, 2, 3])) == [2, 5, 10]


def test_map_and_spawn_from_inside(app):
    assert m.caller_many.remote([2, 3, 4]) == {"map": [4, 9, 16], "spawn": 4, "local": False}


def test_calls_from_inside_reach_the_server(app):
    # a lookup from inside travels over the runner's channel and gets the server's answer
    with pytest.raises(NotFoundError, match="fn-access-no-such-app"):
        m.unrestricted.remote(3)


def test_restrict_modal_access_refuses_calls_from_inside(app):
    with pytest.raises(PermissionDeniedError, match="restrict_modal_access") as ei:
        m.restricted.remote(3)
    assert "in restricted" in "\n".join(getattr(ei.value, "__notes__", []))


def test_a_function_runs_code_in_a_sandbox_and_streams_its_output(app):
    """exec streams from inside a container travel as WebSockets over the runner's channel."""
    r = m.agent_tool.remote("import sys; print('hi'); print('oops', file=sys.stderr); "
                            "sys.exit(3)")
    assert (r["out"], r["err"], r["rc"]) == ("hi\n", "oops\n", 3), r
    assert r["echoed"] == "through stdin"
    assert r["lines"] == ["1\n", "2\n", "3\n"]
    assert r["sandboxes"] >= 1


def test_a_port_forward_from_inside_a_function(app):
    assert m.port_forward.remote() == "hello from the function"


def test_current_call_and_input_ids(app):
    fc = m.ids.spawn()
    call_id, input_id = fc.get(timeout=60)
    assert call_id == fc.object_id and input_id.startswith("in-")
    (c1, i1), (c2, i2) = m.ids.map([1, 2])
    assert c1 == c2 and i1 != i2  # one call, two inputs
    assert modal.current_input_id() is None and modal.current_function_call_id() is None


def test_block_network_function_works(app):
    value, net = m.offline.remote(4)
    assert value == 12
    assert net["interfaces"] == ["lo"], net
    assert net["reach"] != "connected", net
    # a function without block_network has an interface besides loopback
    value, net_on = m.online.remote(4)
    assert value == 12
    assert len(net_on["interfaces"]) > 1, net_on


def test_serialized_function_defined_in_a_test(server):
    app = modal.App("fn-serialized")
    factor = 7

    @app.function(serialized=True, max_containers=1)
    def scaled(x):
        import os

        return x * factor, sorted(os.listdir("/root")) if os.path.isdir("/root") else []

    @app.cls(serialized=True, max_containers=1)
    class Local:
        n: int = modal.parameter(default=2)

        @modal.method()
        def mul(self, x):
            return x * self.n * factor

    with fntest.running(app):
        value, root = scaled.remote(6)
        assert value == 42
        assert not any(name.endswith(".py") for name in root), root  # no module shipped
        assert list(scaled.map([1, 2])) == [(7, root), (14, root)]
        assert Local(n=3).mul.remote(2) == 42


def test_local_function_needs_serialized(server):
    app = modal.App("fn-not-serialized")
    with pytest.raises(InvalidRequestError, match="serialized=True"):
        @app.function()
        def local_fn(x):
            return x
