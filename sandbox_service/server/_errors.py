"""HTTP error shapes shared by the app and its routes (server layer).

Every error body is `ErrorBody`; `ERROR_RESPONSES` documents the statuses once for all
routes, and `validation_message` turns pydantic's errors into the one-line message of a 400.
"""

from __future__ import annotations

from typing import Any

from ..wire import ErrorBody

# every route may answer these (the body is always ErrorBody); documented once, for all
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what} for status, what in (
        (400, "invalid request (bad input; the message says which field and why)"),
        (401, "missing, wrong, expired or revoked bearer token"),
        (403, "the token may not do this"),
        (404, "no such object (or another principal's)"),
        (405, "method not allowed (see the Allow header)"),
        (408, "an operation ran out of time"),
        (409, "the object's state does not allow this (e.g. the sandbox has finished)"),
        (413, "the request body is too large"),
        (429, "a quota or rate limit was reached"),
        (500, "an internal error (a bug: please report it)"),
        (502, "nothing answered on a sandbox's port"),
        (503, "the runtime cannot start sandboxes right now"),
    )}

