"""Schedules through the real server: a deployed Period fires the right number of times
(each run is one spawned call), `sbx app ls` data shows the next runs, `app stop` ends
them; an `app.run()` (not deployed) never fires, as in Modal."""

from __future__ import annotations

import time
import uuid

import fntest
import pytest

import sandbox_service as modal

pytestmark = pytest.mark.timeout(300)


def _ticks(name: str) -> int:
    return modal.Dict.from_name(name, create_if_missing=True).len()


def test_a_deployed_period_fires_until_the_app_stops(server, monkeypatch):
    name = f"ticks-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SBX_TEST_TICKS", name)
    import importlib

    import fnapp_sched
    m = importlib.reload(fnapp_sched)  # the env= of its function reads SBX_TEST_TICKS
    app = m.app.deploy(name=f"fn-sched-{uuid.uuid4().hex[:8]}")
    try:
        with fntest.api() as c:
            info = c.get(f"/v1/apps/{app.app_id}").json()
        assert set(info["next_runs"]) == {"tick", "nightly"}, info
        assert 0 < info["next_runs"]["tick"] - time.time() <= 2.5
        time.sleep(9.0)
        n = _ticks(name)
        assert 3 <= n <= 5, n      # ticks at 2, 4, 6, 8 s (the first waits for a cold start)
    finally:
        fntest.stop_app(app.app_id)
    time.sleep(1.0)                # a run already spawned may still land
    n = _ticks(name)
    time.sleep(5.0)
    assert _ticks(name) == n       # stopped: no more runs
    fntest.assert_app_left_nothing(app.app_id, grace_s=10)
    modal.Dict.delete(name)


def test_schedules_do_not_fire_in_an_app_run(server, monkeypatch):
    name = f"ticks-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SBX_TEST_TICKS", name)
    import importlib

    import fnapp_sched
    m = importlib.reload(fnapp_sched)
    with fntest.running(m.app):
        time.sleep(5.0)
    assert _ticks(name) == 0
    modal.Dict.delete(name, allow_missing=True)
