"""Cron and Period (public layer): Modal's schedules for `@app.function(schedule=...)`.

    @app.function(schedule=modal.Cron("0 2 * * *", timezone="Europe/Paris"))
    @app.function(schedule=modal.Period(hours=6))

Only deployed apps run their schedules (`sbx deploy`), as in Modal. The server decides the
ticks (croniter for Cron strings; a Period counts from the deploy); here the values are only
checked for shape, so a function container never needs croniter.
"""

from __future__ import annotations

from typing import Any

from .wire import errors as E


class Schedule:
    def _spec(self) -> dict[str, Any]:
        raise NotImplementedError


class Cron(Schedule):
    """A cron string (`minute hour day-of-month month day-of-week`), in `timezone` (an IANA
    name; default UTC)."""

    def __init__(self, cron_string: str, timezone: str = "UTC"):
        if not isinstance(cron_string, str) or len(cron_string.split()) not in (5, 6):
            raise E.InvalidRequestError(
                f"Cron({cron_string!r}): write five fields, 'minute hour day month weekday' "
                "(e.g. '0 2 * * *' for 02:00 every day)")
        self.cron_string = cron_string
        self.timezone = timezone

    def _spec(self) -> dict[str, Any]:
        return {"kind": "cron", "cron": self.cron_string, "timezone": self.timezone}

    def __repr__(self) -> str:
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"


class Period(Schedule):
    """Every so long, counted from the deploy: `Period(days=1)`, `Period(minutes=15)`.
    Months and years are calendar months (the same day of the month)."""

    def __init__(self, *, years: int = 0, months: int = 0, weeks: float = 0, days: float = 0,
                 hours: float = 0, minutes: float = 0, seconds: float = 0):
        self.months = int(years) * 12 + int(months)
        self.seconds = float(weeks * 604800 + days * 86400 + hours * 3600 + minutes * 60
                             + seconds)
        if self.months < 0 or self.seconds < 0 or (self.months == 0 and self.seconds < 1):
            raise E.InvalidRequestError("a Period must be positive and at least one second: "
                                        "e.g. Period(minutes=15)")

    def _spec(self) -> dict[str, Any]:
        return {"kind": "period", "seconds": self.seconds, "months": self.months}

    def __repr__(self) -> str:
        return f"Period(months={self.months}, seconds={self.seconds:g})"


def schedule_spec(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Schedule):
        raise E.InvalidRequestError(f"schedule= takes modal.Cron(...) or modal.Period(...), "
                                    f"not {type(value).__name__}")
    return value._spec()
