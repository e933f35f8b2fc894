"""Helpers of the real-server function tests (tests/functions/): the REST views of an app's
containers through httpx with the session's SBX_URL/SBX_TOKEN, waiting, and the check that
an app left nothing running. A plain module (not conftest), imported by its own name."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

FUNCTION_TAG = "sbx.function"


def api() -> httpx.Client:
    return httpx.Client(base_url=os.environ["SBX_URL"], timeout=60,
                        headers={"Authorization": f"Bearer {os.environ['SBX_TOKEN']}"})


def containers(app_id: str | None = None) -> list[dict[str, Any]]:
    """GET /v1/containers (the function containers the server's pools hold)."""
    with api() as c:
        r = c.get("/v1/containers", params={"app_id": app_id} if app_id else {})
        assert r.status_code == 200, r.text
        return r.json()["containers"]


def live_function_sandboxes(app_id: str | None = None) -> list[dict[str, Any]]:
    """Live sandboxes tagged as function containers (of `app_id`, or of any app)."""
    with api() as c:
        r = c.get("/v1/sandboxes", params={"limit": 10000})
        assert r.status_code == 200, r.text
        return [s for s in r.json()["sandboxes"]
                if FUNCTION_TAG in (s.get("tags") or {})
                and s["state"] in ("creating", "running")
                and (app_id is None or s.get("app_id") == app_id)]


def function_info(function_id: str) -> dict[str, Any]:
    with api() as c:
        r = c.get(f"/v1/functions/{function_id}")
        assert r.status_code == 200, r.text
        return r.json()


def app_logs(app_id: str) -> str:
    """Everything the app's containers printed so far (GET /v1/apps/{id}/logs)."""
    out, seq = [], 0
    with api() as c:
        while True:
            r = c.get(f"/v1/apps/{app_id}/logs", params={"after_seq": seq, "timeout_s": 0})
            assert r.status_code == 200, r.text
            page = r.json()
            out += [e["data"] for e in page["entries"]]
            if page["next_seq"] == seq or not page["entries"]:
                return "".join(out)
            seq = page["next_seq"]


def stop_app(app_id: str) -> dict[str, Any]:
    with api() as c:
        r = c.post(f"/v1/apps/{app_id}/stop")
        assert r.status_code == 200, r.text
        return r.json()


def wait_for(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    """Poll until pred() is truthy; returns its value, or fails saying what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                 f"(last value: {value!r})")
        time.sleep(step)


def assert_app_left_nothing(app_id: str, grace_s: float = 0.0) -> None:
    """No container of the app in the pools and no live function sandbox of it."""
    def clean() -> bool:
        return not containers(app_id) and not live_function_sandboxes(app_id)

    if grace_s:
        with contextlib.suppress(AssertionError):
            wait_for(clean, grace_s, "the app's containers to go")
    left = containers(app_id)
    live = live_function_sandboxes(app_id)
    if live:  # end them, so that a failure here leaks nothing into the rest of the session
        end_sandboxes(live)
    assert left == []
    assert live == []


def end_sandboxes(sandboxes: list[dict[str, Any]]) -> None:
    with api() as c:
        for sb in sandboxes:
            c.delete(f"/v1/sandboxes/{sb['sandbox_id']}")


@contextlib.contextmanager
def running(app: Any, grace_s: float = 0.0) -> Iterator[Any]:
    """`with app.run():`, then the check that the run left no container behind (stop_app
    closes the pools before it answers: with grace_s=0 nothing may be left, not even
    briefly)."""
    with app.run() as a:
        app_id = a.app_id
        yield a
    assert_app_left_nothing(app_id, grace_s)
