"""A server restart (killed) while function calls are queued and running: the queued inputs
run after it, a running input is retried when its function has retries, and otherwise ends
with an error that says the server restarted (never run twice silently); results, deployed
functions and call ids survive. Restarts the session's server, as tests/server/test_recovery.py
does."""

from __future__ import annotations

import time
import uuid

import fnapp_restart as m
import fntest
import pytest

import sandbox_service as modal
from sandbox_service.exception import ExecutionError


def _running(function_id: str, at_least: int = 1, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with fntest.api() as c:
        while time.monotonic() < deadline:
            if c.get(f"/v1/functions/{function_id}").json()["running"] >= at_least:
                return
            time.sleep(0.1)
    pytest.fail(f"{function_id} never ran an input")


def test_calls_across_a_killed_restart(server):
    name = f"fn-restart-{uuid.uuid4().hex[:8]}"
    m.app.deploy(name=name)
    app_id = m.app.app_id
    try:
        slow = modal.Function.from_name(name, "slow")
        retried = modal.Function.from_name(name, "slow_retried")
        calls = [slow.spawn(i) for i in range(3)]  # one container: 0 runs, 1 and 2 wait
        again = retried.spawn(41)
        _running(slow.object_id)
        _running(retried.object_id)
        ids = [c.object_id for c in calls]
        server.restart(kill=True)

        results = []
        for call_id in ids:
            try:
                results.append(modal.FunctionCall.from_id(call_id).get(timeout=120))
            except ExecutionError as e:
                assert "server restarted" in str(e), e
                results.append("restarted")
        # inputs run in order on the one container: 0 was running, 1 and 2 were queued
        assert results == ["restarted", 10, 20], results
        assert modal.FunctionCall.from_id(again.object_id).get(timeout=120) == 42  # retried
        # the deployed functions survived: new calls work, by the same handle
        assert slow.remote(5) == 50
        assert modal.Function.from_name(name, "slow").remote(6) == 60
    finally:
        fntest.stop_app(app_id)
    fntest.wait_for(lambda: not fntest.live_function_sandboxes(app_id), 60,
                    "the app's containers to go")
