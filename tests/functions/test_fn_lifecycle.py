"""Function containers' lifecycle through the real server: timeouts, retries, single-use
containers, scale-down to zero with @modal.exit, modules that fail to load, and what an
app leaves behind when its run ends (nothing).
"""

from __future__ import annotations

import os
import time

import fnapp_badenter as badenter
import fnapp_broken as broken
import fnapp_life as life
import fnapp_stop as stopapp
import fntest
import pytest

from sandbox_service.exception import (
    ExecutionError,
    FunctionCancelledError,
    FunctionTimeoutError,
    SandboxTimeoutError,
)


@pytest.fixture(scope="module")
def app(server):
    with fntest.running(life.app) as a:
        yield a


# ---- timeouts -------------------------------------------------------------------------------
def test_timeout_raises_function_timeout_error(app):
    first = life.too_slow.remote(0)          # a warm container, so the timing is the call's
    t0 = time.monotonic()
    with pytest.raises(FunctionTimeoutError) as ei:
        life.too_slow.remote(30)
    elapsed = time.monotonic() - t0
    assert isinstance(ei.value, TimeoutError)
    assert isinstance(ei.value, SandboxTimeoutError)
    assert "timeout" in str(ei.value)
    assert 1.8 < elapsed < 15, elapsed
    # the timed-out container was stopped: the next call gets a fresh one
    assert life.too_slow.remote(0) != first


def test_timeouts_are_retried(app):
    t0 = time.monotonic()
    with pytest.raises(FunctionTimeoutError):
        life.always_too_slow.remote()
    # two attempts of 2 s each (max_retries=1), each in its own container
    assert time.monotonic() - t0 > 4.0


# ---- retries --------------------------------------------------------------------------------
def test_retries_policy_until_success(app):
    assert life.flaky.remote("twice", 2) == 3     # failed twice, third attempt succeeded
    assert life.flaky.remote("never", 0) == 1


def test_retries_exhausted_raise_the_last_failure(app):
    with pytest.raises(RuntimeError, match="attempt 3 of thrice fails"):
        life.flaky.remote("thrice", 3)            # 1 run + 2 retries, all failed
    # no fourth attempt ran: the counter stands at 3, so the next run is the 4th
    assert life.flaky.remote("thrice", 0) == 4


def test_retries_apply_to_each_map_input(app):
    out = list(life.flaky.map([f"m{i}" for i in range(3)], [1, 0, 2]))
    assert out == [2, 1, 3]


def test_retries_as_an_int(app):
    t0 = time.monotonic()
    assert life.flaky_int.remote("once", 1) == 2
    assert time.monotonic() - t0 >= 1.0           # retries=int waits 1 s between attempts
    with pytest.raises(RuntimeError, match="attempt 2 of twice fails"):
        life.flaky_int.remote("twice", 2)


# ---- containers ------------------------------------------------------------------------------
def test_single_use_containers(app):
    out = list(life.single_use.map(range(3)))
    assert [x for x, _, _ in out] == [0, 1, 2]
    tokens = {t for _, t, _ in out}     # made once per container, at import
    assert len(tokens) == 3, out        # each input in a fresh container
    # and each container goes once its input is done
    fid = life.single_use.object_id
    fntest.wait_for(lambda: not [c for c in fntest.containers(app.app_id)
                                 if c["function_id"] == fid],
                    20, "the single-use containers to go")
    assert life.single_use.remote(9)[1] not in tokens


def test_single_use_containers_more_inputs_than_max_containers(app):
    calls = [life.single_use_capped.spawn(i) for i in range(2)]
    try:
        out = [fc.get(timeout=12) for fc in calls]
    finally:
        for fc in calls:
            fc.cancel()
    assert [x for x, _ in out] == [0, 1]
    assert out[0][1] != out[1][1]


def test_scaledown_window_goes_to_zero_and_runs_exit(app):
    obj = life.ShortLived()
    token = obj.token.remote()
    assert obj.token.remote() == token               # warm: the same container
    fid = life.ShortLived.object_id
    mine = [c for c in fntest.containers(app.app_id) if c["function_id"] == fid]
    assert len(mine) == 1, mine
    sandbox_id = mine[0]["container_id"]
    assert sandbox_id in {s["sandbox_id"] for s in fntest.live_function_sandboxes(app.app_id)}
    # scaledown_window=2: the idle container goes (not at once, but within a few seconds)
    fntest.wait_for(lambda: not [c for c in fntest.containers(app.app_id)
                                 if c["function_id"] == fid], 20, "ShortLived to scale to zero")
    fntest.wait_for(lambda: sandbox_id not in {
        s["sandbox_id"] for s in fntest.live_function_sandboxes(app.app_id)}, 10,
        "its sandbox to end")
    # @modal.exit ran in it, after @modal.enter
    fntest.wait_for(lambda: f"EXIT-RAN {token}" in fntest.app_logs(app.app_id), 10,
                    "the @exit output in the app's logs")
    logs = fntest.app_logs(app.app_id)
    assert logs.index(f"ENTER-RAN {token}") < logs.index(f"EXIT-RAN {token}")
    assert logs.count(f"EXIT-RAN {token}") == 1
    # a new call cold-starts a new container
    assert obj.token.remote() != token


def test_scaledown_window_of_a_function(app):
    token = life.short_fn.remote()
    fid = life.short_fn.object_id
    fntest.wait_for(lambda: not [c for c in fntest.containers(app.app_id)
                                 if c["function_id"] == fid], 20, "short_fn to scale to zero")
    assert life.short_fn.remote() != token


# ---- code that cannot load -------------------------------------------------------------------
def test_module_that_raises_at_import(server):
    # grace: the failed container is terminated in the background (see the bug report)
    with fntest.running(broken.app, grace_s=10):
        t0 = time.monotonic()
        with pytest.raises(ExecutionError) as ei:
            broken.never_runs.remote(1)
        msg = str(ei.value)
        assert "boom at import" in msg
        assert "Traceback" in msg and "fnapp_broken.py" in msg
        assert time.monotonic() - t0 < 60
        with pytest.raises(ExecutionError, match="boom at import"):  # and again, not a hang
            list(broken.never_runs.map([1, 2]))


def test_enter_that_raises(server):
    with fntest.running(badenter.app, grace_s=10):
        with pytest.raises(ExecutionError) as ei:
            badenter.BadEnter().predict.remote(1)
        msg = str(ei.value)
        assert "enter could not load the model" in msg
        assert "EnterFailed" in msg and "in load" in msg


# ---- what a run leaves behind ----------------------------------------------------------------
def test_run_end_leaves_no_container_while_one_runs(server):
    with stopapp.app.run() as a:
        app_id = a.app_id
        fc = stopapp.hang.spawn(60)
        fntest.wait_for(lambda: fntest.function_info(stopapp.hang.object_id)["running"] == 1,
                        60, "the input to run")
        fntest.wait_for(lambda: fntest.live_function_sandboxes(app_id), 30, "its container")
    # nothing left the moment the block ends
    assert fntest.containers(app_id) == []
    assert fntest.live_function_sandboxes(app_id) == []
    with pytest.raises(FunctionCancelledError, match="stopped"):
        fc.get(timeout=30)
    # the app is stopped: its functions are gone
    with fntest.api() as c:
        r = c.get(f"/v1/apps/{app_id}")
        assert r.status_code == 200 and r.json()["state"] == "stopped", r.text


def _stop_while_booting():
    """Ends a run of fnapp_stop while hang's containers boot (its module imports for
    BOOT_DELAY_S in a container); returns the app id and the spawned calls."""
    with stopapp.app.run() as a:
        app_id = a.app_id
        fcs = [stopapp.hang.spawn(60) for _ in range(2)]
        # the sandbox runs, but its runner is not ready yet: the module still imports
        fntest.wait_for(lambda: any(s["state"] == "running"
                                    for s in fntest.live_function_sandboxes(app_id)),
                        30, "a container to boot")
        assert fntest.containers(app_id) == []
    return app_id, fcs


def test_run_end_while_a_container_starts(server):
    """The block ends while the function's containers are still booting: they must not
    outlive the app."""
    app_id, fcs = _stop_while_booting()
    assert fntest.containers(app_id) == []
    fntest.wait_for(lambda: not fntest.live_function_sandboxes(app_id), 15,
                    "the booting containers to end")
    deadline = time.monotonic() + 3  # and none appears later
    while time.monotonic() < deadline:
        assert fntest.live_function_sandboxes(app_id) == []
        time.sleep(0.5)
    for fc in fcs:
        with pytest.raises(FunctionCancelledError):
            fc.get(timeout=30)


def test_run_end_while_a_container_starts_leaves_nothing_at_once(server):
    app_id, _ = _stop_while_booting()
    assert fntest.live_function_sandboxes(app_id) == []


def test_run_end_while_one_container_stops_and_another_boots(server):
    with stopapp.app.run() as a:
        app_id = a.app_id
        obj = stopapp.SlowExit()
        first = obj.hold.spawn(60)
        fntest.wait_for(lambda: len(fntest.containers(app_id)) == 1, 60,
                        "the first container to be ready")
        second = obj.hold.spawn(60)        # the first is busy: a second container boots
        fntest.wait_for(lambda: len(fntest.live_function_sandboxes(app_id)) == 2, 60,
                        "the second container to be created")
        # the stop: the first container's @exit takes 4 s, the second finishes booting
    for fc in (first, second):
        with pytest.raises(FunctionCancelledError):
            fc.get(timeout=30)
    try:
        fntest.wait_for(lambda: not fntest.live_function_sandboxes(app_id), 8,
                        "every container of the stopped app to end")
    finally:  # end the leaked container, so the rest of the session runs clean
        fntest.end_sandboxes(fntest.live_function_sandboxes(app_id))


def test_no_function_container_left_of_any_other_app(app):
    """Every app of this session but this module's (still running) is stopped: none of
    them has a function container left. (Also the last test of the file on purpose: the
    session's leak check runs in the last test's teardown, and pytest would report its
    failure as that test's xfail.)"""
    assert [c for c in fntest.containers() if c["app_id"] != app.app_id] == []
    assert [s for s in fntest.live_function_sandboxes() if s["app_id"] != app.app_id] == []


# ---- GPUs on a host without one ---------------------------------------------------------------
@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this host has an NVIDIA GPU")
def test_gpu_functions_without_a_gpu_fail_fast_saying_why(server):
    """Modal would queue such a call until a GPU frees up; here no GPU can ever come, so the
    call fails at once with the reason (docs/gpu.md), for functions and classes alike."""
    import fnapp_gpu as gpu

    with fntest.running(gpu.app, grace_s=10):
        t0 = time.monotonic()
        with pytest.raises(ExecutionError, match="no NVIDIA GPU") as ei:
            gpu.which_gpu.remote()
        assert "Leave gpu unset" in str(ei.value)
        with pytest.raises(ExecutionError, match="no NVIDIA GPU"):
            gpu.Model().device.remote()
        assert time.monotonic() - t0 < 30
