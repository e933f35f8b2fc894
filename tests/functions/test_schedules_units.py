"""Units of the schedules (no server, no runsc): the tick arithmetic of Cron and Period,
and `ScheduleService.tick` against a real SQLite store with a stand-in for the functions
service: each tick fires once, missed ticks fire once (not as a burst), a restart does not
fire a tick again, a changed spec counts from its redeploy, a stopped app stops."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import sandbox_service as modal
from sandbox_service.server.services import SQLiteStore
from sandbox_service.server.services._records import AppRecord
from sandbox_service.server.services._schedules import (
    ScheduleService,
    check_schedule,
    latest_tick,
    next_tick,
)
from sandbox_service.wire import InvalidRequestError

pytestmark = pytest.mark.fast
T0 = dt.datetime(2026, 1, 31, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()


def test_period_ticks_count_from_since():
    spec = modal.Period(seconds=10)._spec()
    assert latest_tick(spec, T0, T0 + 9) is None
    assert latest_tick(spec, T0, T0 + 10) == T0 + 10
    assert latest_tick(spec, T0, T0 + 35) == T0 + 30      # the latest only, not 3
    assert next_tick(spec, T0, T0 + 35) == T0 + 40


def test_month_periods_keep_the_day_where_they_can():
    spec = modal.Period(months=1)._spec()
    feb = next_tick(spec, T0, T0)
    assert dt.datetime.fromtimestamp(feb, dt.timezone.utc).date() == dt.date(2026, 2, 28)
    assert latest_tick(spec, T0, feb + 1) == feb


def test_cron_in_a_time_zone():
    spec = modal.Cron("0 2 * * *", timezone="Europe/Paris")._spec()
    nxt = next_tick(spec, T0, T0)  # 12:00 UTC -> 02:00 Paris (01:00 UTC) next day
    assert dt.datetime.fromtimestamp(nxt, dt.timezone.utc) == dt.datetime(
        2026, 2, 1, 1, 0, tzinfo=dt.timezone.utc)
    assert latest_tick(spec, T0, nxt) == nxt and latest_tick(spec, T0, nxt - 1) is None


def test_bad_schedules_are_refused():
    with pytest.raises(InvalidRequestError, match="five fields"):
        modal.Cron("every day")
    with pytest.raises(InvalidRequestError, match="not a valid cron"):
        check_schedule({"kind": "cron", "cron": "99 * * * *", "timezone": "UTC"})
    with pytest.raises(InvalidRequestError, match="time zone"):
        check_schedule({"kind": "cron", "cron": "0 * * * *", "timezone": "Mars/Olympus"})
    with pytest.raises(InvalidRequestError, match="at least one second"):
        modal.Period(seconds=0.5)
    with pytest.raises(InvalidRequestError, match="Cron"):
        modal.App("x").function(schedule="0 * * * *")


class _Functions:
    """The part of FunctionService the schedules use."""

    def __init__(self, store):
        self.store = store
        self.functions: dict[str, dict] = {}
        self.calls: list[str] = []

    async def create_call(self, who, fid, body):
        self.calls.append(fid)

        class C:
            call_id = f"fc-{len(self.calls)}"
        return C()


async def _setup(tmp_path, spec):
    store = SQLiteStore(str(tmp_path / "state.db"))
    app = AppRecord(app_id="ap-1", name="nightly", owner="admin", created_at=T0,
                    state="deployed", functions={"job": "fu-1"})
    await store.put_app(app)
    await store.update_app(app)
    fns = _Functions(store)
    fns.functions["fu-1"] = {"function_id": "fu-1", "app_id": "ap-1", "owner": "admin",
                             "name": "job", "app_name": "nightly", "state": "active",
                             "spec": {"schedule": spec}}
    return store, fns


def test_each_tick_fires_once_and_survives_a_restart(tmp_path):
    async def go():
        spec = modal.Period(seconds=10)._spec()
        store, fns = await _setup(tmp_path, spec)
        svc = ScheduleService(fns)
        await svc.tick(T0)                      # the deploy: counts from here
        await svc.tick(T0 + 5)
        assert fns.calls == []
        await svc.tick(T0 + 10)
        await svc.tick(T0 + 12)
        assert fns.calls == ["fu-1"]            # one tick, once
        # the server was down from T0+12 to T0+75: ticks 20..70 were missed
        restarted = ScheduleService(fns)
        await restarted.tick(T0 + 75)
        await restarted.tick(T0 + 76)
        assert fns.calls == ["fu-1"] * 2        # once at start, not six times
        assert restarted.app_next_runs("ap-1") == {"job": T0 + 80}
        await restarted.tick(T0 + 80)
        assert len(fns.calls) == 3
        await store.close()
    asyncio.run(go())


def test_a_changed_spec_counts_from_the_redeploy_and_a_stop_drops_it(tmp_path):
    async def go():
        store, fns = await _setup(tmp_path, modal.Period(seconds=10)._spec())
        svc = ScheduleService(fns)
        await svc.tick(T0)
        fns.functions["fu-1"]["spec"]["schedule"] = modal.Period(seconds=100)._spec()
        await svc.tick(T0 + 50)                 # redeployed with a new period at T0+50
        assert fns.calls == []
        await svc.tick(T0 + 149)
        assert fns.calls == []
        await svc.tick(T0 + 150)
        assert fns.calls == ["fu-1"]
        app = await store.get_app("ap-1")
        app.state = "stopped"
        await store.update_app(app)
        await svc.tick(T0 + 1000)
        assert fns.calls == ["fu-1"] and await store.get_schedules() == []
        await store.close()
    asyncio.run(go())
