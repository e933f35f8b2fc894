"""Wire models of the stateful code interpreter (public layer, shared by SDK and server).

Pydantic, `extra="forbid"`, units in field names. Must not import the server, FastAPI or
any runtime.

Routes (under /v1/sandboxes/{sandbox_id}):
  POST   /contexts                      ContextCreate -> ContextInfo (201)
  GET    /contexts                      -> ContextList
  GET    /contexts/{context_id}         -> ContextInfo
  DELETE /contexts/{context_id}         -> {"context_id", "deleted": true}
  POST   /contexts/{context_id}/interrupt -> {"context_id", "interrupted": bool}
  POST   /contexts/{context_id}/run     CodeRunRequest -> NDJSON events, one per line:
    {"type": "stdout" | "stderr", "text"}          output as it is written
    {"type": "result", "data": {mime: value}}      the value of the cell's last expression
    {"type": "display", "data": {mime: value}}     display() calls and matplotlib figures
    {"type": "error", "name", "value", "traceback"} the cell raised (the context lives on,
                                                   unless name is "ContextDied")
    {"type": "end", "duration_ms", "timed_out", "interrupted", "stdout_truncated",
     "stderr_truncated", "context_alive"}          always last when the cell ran
    {"type": "failure", "error": {"code", "message"}} the sandbox itself stopped mid-cell
  `data` maps MIME types to values: "text/plain", "text/html", "text/markdown",
  "image/svg+xml", "text/latex" are strings; "image/png" and "image/jpeg" are base64;
  "application/json" is JSON.
The context id "default" needs no create: the first run makes it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._api import MAX_TIMEOUT_S, _check_env, check_abs_path

DEFAULT_CONTEXT = "default"
CONTEXT_ID = re.compile(r"^(default|cx-[a-z0-9]{20})$")
MAX_CODE_BYTES = 4 * 1024 * 1024
DEFAULT_CELL_TIMEOUT_S = 60.0
DEFAULT_OUTPUT_BYTES = 1024 * 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
EVENT_TYPES = ("stdout", "stderr", "result", "display", "error", "end", "failure")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContextCreate(_Model):
    language: Literal["python"] = Field("python", description="only python for now")
    cwd: str | None = Field(None, description="working directory (default: the sandbox's)")
    env: dict[str, str] | None = Field(None, description="added to the sandbox's environment")

    _v_env = field_validator("env")(lambda cls, v: _check_env(v))
    _v_cwd = field_validator("cwd")(lambda cls, v: check_abs_path(v))


class ContextInfo(_Model):
    context_id: str
    language: str = "python"
    pid: int | None = None
    python: str | None = Field(None, description="version of the context's python3")
    cwd: str | None = Field(None, description="working directory when it started")
    created_at: float
    alive: bool = Field(True, description="false once its process ended: create a new one")
    busy: bool = Field(False, description="a cell is running")


class ContextList(_Model):
    contexts: list[ContextInfo]


class CodeRunRequest(_Model):
    code: str = Field(..., max_length=MAX_CODE_BYTES, description="Python source of the cell")
    timeout_s: float | None = Field(DEFAULT_CELL_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S,
                                    description="interrupt the cell after this long (the "
                                    "context keeps its state); null for no limit")
    max_output_bytes: int = Field(DEFAULT_OUTPUT_BYTES, ge=1024, le=MAX_OUTPUT_BYTES,
                                  description="cap on stdout and on stderr of this cell")

    @field_validator("code")
    @classmethod
    def _v_code(cls, v: str) -> str:
        if len(v.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES:
            raise ValueError(f"code is over {MAX_CODE_BYTES} bytes: put data in a file "
                             "(sb.filesystem) and read it from the cell")
        return v
