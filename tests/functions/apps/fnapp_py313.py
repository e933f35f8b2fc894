"""The app of tests/functions/test_fn_python.py: functions on Debian 13's python 3.13 (the
server runs 3.11), one of which calls the service from inside its container."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-py313", image=modal.Image.debian_slim(python_version="3.13"))


@app.function(max_containers=1)
def square(x):
    return x * x


@app.function(max_containers=1, timeout=120)
def version_and_call(x):
    """Function calls need no compiled module; Sandbox.create builds pydantic models."""
    import sys

    sb = modal.Sandbox.create(app=app, timeout=60)
    try:
        echoed = sb.exec("echo", "from a sandbox").stdout.read()
    finally:
        sb.terminate()
    return list(sys.version_info[:2]), square.remote(x), list(square.map([1, 2])), echoed
