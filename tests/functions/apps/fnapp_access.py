"""The app of tests/functions/test_fn_access.py: functions that call the service from inside
their containers, one that may not, and the network a function container gets."""

from __future__ import annotations

import socket

import sandbox_service as modal

app = modal.App("fn-access")


@app.function(max_containers=1)
def square(x):
    return x * x


@app.function(max_containers=1)
def caller(x):
    """Calls another function of its app from inside its container."""
    return square.remote(x) + 1


@app.function(max_containers=1)
def caller_many(xs):
    return {"map": list(square.map(xs)),
            "spawn": square.spawn(xs[0]).get(timeout=60),
            "local": modal.is_local()}


def _call_through_the_service(x):
    """A call that must reach the server (a lookup), whatever the SDK knows locally."""
    return modal.Function.from_name("fn-access-no-such-app", "square").remote(x)


@app.function(max_containers=1, restrict_modal_access=True)
def restricted(x):
    return _call_through_the_service(x)


@app.function(max_containers=1)
def unrestricted(x):
    return _call_through_the_service(x)


def _network():
    names = sorted(name for _, name in socket.if_nameindex())
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1.5).close()
        reach = "connected"
    except OSError as e:
        reach = type(e).__name__
    return {"interfaces": names, "reach": reach}


@app.function(max_containers=1, block_network=True)
def offline(x):
    return x * 3, _network()


@app.function(max_containers=1)
def online(x):
    return x * 3, _network()
