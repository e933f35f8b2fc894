"""Schedules (server layer): `schedule=modal.Cron(...)` / `modal.Period(...)` on functions
of deployed apps fire as spawned calls with no arguments, as in Modal.

- Each scheduled function has a row (services/_fn_store.py `schedules`): its spec, `since`
  (ticks before it do not count: the first deploy of that spec) and `last_tick`, the tick
  that fired last.
- A tick fires once: `last_tick` is written before the call is made, so a crash in between
  skips that tick rather than running it twice, and a restart never repeats one.
- Ticks missed while the server was down fire once at start (the latest of them), never
  as a burst.
- A redeploy keeps the state of an unchanged spec; a changed spec counts from the
  redeploy. `sbx app stop` (or a redeploy without the function) drops the row.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import contextlib
import datetime as dt
import json
import logging
import pickle
import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from security import ADMIN, Principal

from ...wire import CallCreate
from ...wire import errors as E

log = logging.getLogger("sbx.schedules")

MAX_SLEEP_S = 30.0
NO_ARGS_B64 = base64.b64encode(pickle.dumps(((), {}), protocol=4)).decode()


def check_schedule(spec: dict[str, Any]) -> None:
    """Raise InvalidRequestError for a cron string or time zone that cannot run."""
    if spec["kind"] != "cron":
        return
    from croniter import croniter

    if not croniter.is_valid(spec["cron"]):
        raise E.InvalidRequestError(f"Cron({spec['cron']!r}) is not a valid cron string: "
                                    "write 'minute hour day month weekday', e.g. '0 2 * * *'")
    _zone(spec.get("timezone") or "UTC")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise E.InvalidRequestError(f"timezone={name!r} is not a time zone: use an IANA name "
                                    "such as 'UTC' or 'America/New_York'") from None


def _add_months(ts: float, months: int) -> float:
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return d.replace(year=year, month=month, day=day).timestamp()


def _period_tick(spec: dict[str, Any], since: float, k: int) -> float:
    base = _add_months(since, k * spec.get("months", 0)) if spec.get("months") else since
    return base + k * float(spec.get("seconds") or 0)


def latest_tick(spec: dict[str, Any], since: float, now: float) -> float | None:
    """The last tick at or before `now` and after `since`, or None."""
    if spec["kind"] == "cron":
        from croniter import croniter

        # from just past `now`: get_prev is strictly before its start, so a tick at `now`
        # itself counts
        start = dt.datetime.fromtimestamp(int(now) + 1, _zone(spec.get("timezone") or "UTC"))
        t = croniter(spec["cron"], start).get_prev(dt.datetime).timestamp()
        return t if t > since else None
    if not spec.get("months"):
        k = int((now - since) // float(spec["seconds"]))
        return _period_tick(spec, since, k) if k >= 1 else None
    k, t = 0, None
    while k < 1_000_000 and _period_tick(spec, since, k + 1) <= now:
        k += 1
        t = _period_tick(spec, since, k)
    return t


def next_tick(spec: dict[str, Any], since: float, now: float) -> float:
    """The first tick after `now` (and after `since`)."""
    if spec["kind"] == "cron":
        from croniter import croniter

        start = dt.datetime.fromtimestamp(max(now, since), _zone(spec.get("timezone") or "UTC"))
        return croniter(spec["cron"], start).get_next(dt.datetime).timestamp()
    if not spec.get("months"):
        k = max(0, int((now - since) // float(spec["seconds"]))) + 1
        return _period_tick(spec, since, k)
    k = 1
    while _period_tick(spec, since, k) <= now:
        k += 1
    return _period_tick(spec, since, k)


class ScheduleService:
    def __init__(self, functions: Any):
        self.functions = functions          # FunctionService: records, create_call
        self.store = functions.store
        self.next_runs: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def reload(self) -> None:
        """A deploy or a stop changed what is scheduled."""
        self._wake.set()

    def app_next_runs(self, app_id: str) -> dict[str, float]:
        return {name: t for (a, name), t in self.next_runs.items() if a == app_id}

    async def _loop(self) -> None:
        while True:
            try:
                delay = await self.tick(time.time())
            except Exception:
                log.exception("schedules")
                delay = 5.0
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _scheduled(self) -> dict[tuple[str, str], dict[str, Any]]:
        out, apps = {}, {}
        for fn in list(self.functions.functions.values()):
            if fn.get("state") != "active" or not fn["spec"].get("schedule"):
                continue
            app_id = fn["app_id"]
            if app_id not in apps:
                apps[app_id] = await self.store.get_app(app_id)
            app = apps[app_id]
            if app is not None and app.state == "deployed" and app.functions.get(
                    fn["name"]) == fn["function_id"]:
                out[(app_id, fn["name"])] = fn
        return out

    async def tick(self, now: float) -> float:
        """Fire what is due; return how long to sleep."""
        scheduled = await self._scheduled()
        states = {(s["app_id"], s["name"]): s for s in await self.store.get_schedules()}
        for key in states.keys() - scheduled.keys():
            await self.store.delete_schedule(*key)
        next_runs = {}
        for key, fn in scheduled.items():
            spec = fn["spec"]["schedule"]
            spec_json = json.dumps(spec, sort_keys=True)
            st = states.get(key)
            if st is None or st["spec"] != spec_json:
                st = {"app_id": key[0], "name": key[1], "spec": spec_json, "since": now,
                      "last_tick": None}
                await self.store.put_schedule(st)
            due = latest_tick(spec, st["since"], now)
            if due is not None and due > (st["last_tick"] or 0):
                st["last_tick"] = due
                await self.store.put_schedule(st)  # before the call: never twice
                await self._fire(fn, due)
            next_runs[key] = next_tick(spec, st["since"], now)
        self.next_runs = next_runs
        if not next_runs:
            return MAX_SLEEP_S
        return max(0.05, min(MAX_SLEEP_S, min(next_runs.values()) - time.time()))

    async def _fire(self, fn: dict[str, Any], due: float) -> None:
        who = ADMIN if fn["owner"] == "admin" else Principal(fn["owner"], scope="user")
        try:
            call = await self.functions.create_call(
                who, fn["function_id"], CallCreate(inputs_b64=[NO_ARGS_B64], kind="spawn"))
            log.info("schedule: %s/%s fired for %s (call %s)", fn.get("app_name"), fn["name"],
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(due)), call.call_id)
        except Exception:
            log.exception("schedule: %s/%s could not start its call", fn.get("app_name"),
                          fn["name"])
