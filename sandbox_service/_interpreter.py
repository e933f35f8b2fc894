"""The stateful code interpreter in the SDK: contexts and `run_code` (public layer, async
implementation; the sync API comes from `Sandbox`'s generic wrapper).

A context is a persistent Python process inside the sandbox, like a Jupyter kernel:
variables, imports and the working directory survive between `run_code` calls; the value
of the last expression comes back as the main `Result`; matplotlib figures as PNG results;
an exception as `Execution.error` (the context lives on); a cell past its `timeout` is
interrupted and the context keeps its earlier state. The names follow E2B's
code-interpreter SDK (`Execution`, `Result`, `Logs`, `ExecutionError`, `Context`).
Reaches the server only through `_client`; must not import the server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any, Callable

from ._client import _Client
from .wire import DEFAULT_CELL_TIMEOUT_S, DEFAULT_CONTEXT, ContextInfo
from .wire import errors as E


@dataclasses.dataclass
class Context:
    """An interpreter context in a sandbox. Pass it (or its id) to `sb.run_code`."""

    context_id: str
    sandbox_id: str
    language: str = "python"
    cwd: str | None = None
    python: str | None = None
    pid: int | None = None
    alive: bool = True
    busy: bool = False
    created_at: float = 0.0

    @property
    def id(self) -> str:
        return self.context_id

    @classmethod
    def _from_info(cls, sandbox_id: str, info: dict[str, Any]) -> "Context":
        data = ContextInfo(**info).model_dump()
        return cls(sandbox_id=sandbox_id, **data)


@dataclasses.dataclass
class Result:
    """One rich value: the cell's last expression (`is_main_result`), a `display()` call,
    or a matplotlib figure. `data` maps MIME types to what the kernel sent."""

    data: dict[str, Any]
    is_main_result: bool = False

    @property
    def text(self) -> str | None:
        return self.data.get("text/plain")

    @property
    def html(self) -> str | None:
        return self.data.get("text/html")

    @property
    def markdown(self) -> str | None:
        return self.data.get("text/markdown")

    @property
    def svg(self) -> str | None:
        return self.data.get("image/svg+xml")

    @property
    def latex(self) -> str | None:
        return self.data.get("text/latex")

    @property
    def json(self) -> Any:
        return self.data.get("application/json")

    @property
    def png(self) -> bytes | None:
        value = self.data.get("image/png")
        return base64.b64decode(value) if value else None

    @property
    def jpeg(self) -> bytes | None:
        value = self.data.get("image/jpeg")
        return base64.b64decode(value) if value else None

    def formats(self) -> list[str]:
        return list(self.data)

    def __repr__(self) -> str:
        kind = "main result" if self.is_main_result else "display"
        return f"Result({kind}, formats={self.formats()}, text={self.text!r:.80})"


@dataclasses.dataclass
class ExecutionError:
    """An exception the cell raised: its class name, message and formatted traceback."""

    name: str
    value: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


@dataclasses.dataclass
class Logs:
    """What the cell wrote, as the chunks it arrived in."""

    stdout: list[str] = dataclasses.field(default_factory=list)
    stderr: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Execution:
    """The outcome of one `run_code` call."""

    results: list[Result] = dataclasses.field(default_factory=list)
    logs: Logs = dataclasses.field(default_factory=Logs)
    error: ExecutionError | None = None
    timed_out: bool = False
    interrupted: bool = False
    duration_ms: float | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    context_alive: bool = True

    @property
    def text(self) -> str | None:
        """The text of the last expression's value, or None if the cell had none."""
        main = next((r for r in self.results if r.is_main_result), None)
        return main.text if main else None


def _context_id(context: Context | str | None) -> str:
    if context is None:
        return DEFAULT_CONTEXT
    if isinstance(context, Context):
        return context.context_id
    if isinstance(context, str):
        return context
    raise E.InvalidRequestError(f"context must be a Context or its id, not {type(context).__name__}")


Callback = Callable[[Any], Any]


class _InterpreterMixin:
    """`Sandbox` methods of the code interpreter (needs `_client` and `object_id`)."""

    _client: _Client
    object_id: str

    def _ctx_path(self, suffix: str = "") -> str:
        return f"/v1/sandboxes/{self.object_id}/contexts{suffix}"

    async def create_context(self, cwd: str | None = None, env: dict[str, str] | None = None,
                             language: str = "python") -> Context:
        """A new persistent Python context in this sandbox (as the sandbox's user, in its
        workdir unless `cwd` is given, with its environment plus `env`)."""
        data = await self._client.request("POST", self._ctx_path(), json_body={
            "language": language, "cwd": cwd, "env": env})
        return Context._from_info(self.object_id, data)

    async def list_contexts(self) -> list[Context]:
        data = await self._client.request("GET", self._ctx_path())
        return [Context._from_info(self.object_id, c) for c in data["contexts"]]

    async def delete_context(self, context: Context | str) -> None:
        """Kill the context's process; its state is gone."""
        await self._client.request("DELETE", self._ctx_path("/" + _context_id(context)))

    async def interrupt_context(self, context: Context | str | None = None) -> bool:
        """Interrupt the cell running in the context (KeyboardInterrupt in it; killed after
        5 s if ignored). Returns False when nothing was running."""
        data = await self._client.request(
            "POST", self._ctx_path(f"/{_context_id(context)}/interrupt"))
        return bool(data["interrupted"])

    async def run_code(self, code: str, context: Context | str | None = None, *,
                       timeout: float | None = DEFAULT_CELL_TIMEOUT_S,
                       on_stdout: Callback | None = None, on_stderr: Callback | None = None,
                       on_result: Callback | None = None, on_error: Callback | None = None,
                       max_output_bytes: int | None = None) -> Execution:
        """Run a cell of Python in `context` (default: the sandbox's "default" context, made
        on first use). Callbacks get each stdout/stderr text chunk, `Result` and
        `ExecutionError` as they arrive (on the SDK's thread: keep them quick). A cell that
        raises returns an Execution with `.error`; it does not raise."""
        if not isinstance(code, str):
            raise E.InvalidRequestError(f"code must be a str, not {type(code).__name__}")
        body: dict[str, Any] = {"code": code, "timeout_s": timeout}
        if max_output_bytes is not None:
            body["max_output_bytes"] = max_output_bytes
        execution = Execution()
        buf = bytearray()
        async for chunk in self._client.stream(
                "POST", self._ctx_path(f"/{_context_id(context)}/run"), json_body=body):
            buf += chunk
            if b"\n" not in chunk:  # a long event (a PNG) arrives in many chunks
                continue
            *lines, rest = bytes(buf).split(b"\n")
            buf = bytearray(rest)
            for line in lines:
                if line.strip():
                    _apply(execution, json.loads(line), on_stdout, on_stderr, on_result, on_error)
        return execution


def _apply(ex: Execution, ev: dict[str, Any], on_stdout: Callback | None,
           on_stderr: Callback | None, on_result: Callback | None,
           on_error: Callback | None) -> None:
    kind = ev.get("type")
    if kind in ("stdout", "stderr"):
        getattr(ex.logs, kind).append(ev["text"])
        cb = on_stdout if kind == "stdout" else on_stderr
        if cb:
            cb(ev["text"])
    elif kind in ("result", "display"):
        res = Result(data=ev.get("data") or {}, is_main_result=kind == "result")
        ex.results.append(res)
        if on_result:
            on_result(res)
    elif kind == "error":
        ex.error = ExecutionError(ev.get("name", ""), ev.get("value", ""), ev.get("traceback", ""))
        if on_error:
            on_error(ex.error)
    elif kind == "end":
        ex.duration_ms = ev.get("duration_ms")
        for key in ("timed_out", "interrupted", "stdout_truncated", "stderr_truncated",
                    "context_alive"):
            setattr(ex, key, bool(ev.get(key, key == "context_alive")))
    elif kind == "failure":
        raise E.error_from_wire(0, {"error": ev.get("error")})
