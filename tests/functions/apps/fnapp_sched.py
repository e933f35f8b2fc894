"""The app of tests/functions/test_schedules.py: a function on a 2-second Period that
records each run in a Dict (named by the TICKS environment variable of its container)."""

from __future__ import annotations

import os
import time

import sandbox_service as modal

app = modal.App("fn-sched")


@app.function(schedule=modal.Period(seconds=2), block_network=True,
              env={"TICKS": os.environ.get("SBX_TEST_TICKS", "fn-sched-ticks")})
def tick():
    modal.Dict.from_name(os.environ["TICKS"], create_if_missing=True).put(time.time(), 1)


@app.function(schedule=modal.Cron("0 3 * * *", timezone="America/New_York"))
def nightly():
    return "not run by the test"
