"""The tool models (agent-tools layer): one pydantic input and output model per tool, and
the `TOOLS` table naming them. Everything else (MCP tools, OpenAI and Anthropic
definitions, `dispatch`) is generated from this table, so the surfaces cannot drift.

Every input field has a description and bounds. Must not import `mcp`, the server or a
runtime.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SANDBOX_ID = r"^sb-[A-Za-z0-9]{4,40}$"
CONTEXT_ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_CODE_CHARS = 1_000_000
MAX_OUTPUT_CHARS = 200_000
DEFAULT_OUTPUT_CHARS = 20_000
MAX_TIMEOUT_S = 3600


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _sandbox_id(what: str) -> object:
    return Field(None, pattern=SANDBOX_ID, max_length=44, description=what)


_TIMEOUT = Field(60, ge=1, le=MAX_TIMEOUT_S,
                 description="seconds before the command is killed (reported as timed_out)")
_CAP = Field(DEFAULT_OUTPUT_CHARS, ge=256, le=MAX_OUTPUT_CHARS,
             description="most characters of stdout and of stderr returned; the rest is cut "
                         "and `truncated` is true")


# ---- inputs -------------------------------------------------------------------------------
class RunCodeInput(_In):
    code: str = Field(..., min_length=1, max_length=MAX_CODE_CHARS,
                      description="the program source to run")
    language: Literal["python", "bash", "node"] = Field(
        "python", description="interpreter: python (python3), bash, or node where the image "
                              "has it")
    sandbox_id: str | None = _sandbox_id(
        "run in this sandbox (from create_sandbox); omitted: a fresh single-use sandbox that "
        "is destroyed afterwards")
    timeout_s: float = _TIMEOUT
    max_output_chars: int = _CAP


class CreateSandboxInput(_In):
    image: str = Field("debian_slim", min_length=1, max_length=256,
                       description="image id (im-...) or name; debian_slim has python3 and bash")
    timeout_s: float = Field(600, ge=10, le=24 * 3600,
                             description="maximum lifetime in seconds")
    idle_timeout_s: float = Field(300, ge=10, le=24 * 3600,
                                  description="the sandbox ends after this many seconds "
                                              "without a command running")
    cpu: float | None = Field(None, gt=0, le=64, description="CPU cores (quota); null: default")
    memory_mib: int | None = Field(None, ge=32, le=256 * 1024,
                                   description="memory limit in MiB; null: default")
    network: Literal["none", "allowlist"] = Field(
        "none", description="none: no network (default); allowlist: egress only to "
                            "cidr_allowlist and domain_allowlist (what the token and server "
                            "allow)")
    cidr_allowlist: list[str] | None = Field(
        None, max_length=64, description="with network=allowlist: IPv4 CIDRs it may reach")
    domain_allowlist: list[str] | None = Field(
        None, max_length=64,
        description="with network=allowlist: host names it may resolve and reach "
                    "(example.com exactly, *.example.com for the names below it); no other "
                    "name resolves")


class ExecCommandInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44,
                            description="sandbox to run in (from create_sandbox)")
    command: str = Field(..., min_length=1, max_length=100_000,
                         description="shell command line, run with bash -lc")
    workdir: str | None = Field(None, max_length=4096, description="absolute working directory")
    timeout_s: float = _TIMEOUT
    max_output_chars: int = _CAP


class ReadFileInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44, description="sandbox")
    path: str = Field(..., min_length=1, max_length=4096, description="absolute file path")
    max_chars: int = Field(DEFAULT_OUTPUT_CHARS, ge=256, le=MAX_OUTPUT_CHARS,
                           description="larger text files come back cut, with a resource link "
                                       "to the whole file")


class WriteFileInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44, description="sandbox")
    path: str = Field(..., min_length=1, max_length=4096, description="absolute file path")
    content: str = Field(..., max_length=10_000_000, description="UTF-8 text to write")


class ListFilesInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44, description="sandbox")
    path: str = Field("/", min_length=1, max_length=4096, description="absolute directory")


class TerminateSandboxInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44,
                            description="sandbox to destroy")


class CreateContextInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44,
                            description="sandbox the Python context lives in")
    cwd: str | None = Field(None, max_length=4096, description="initial working directory")


class RunInContextInput(_In):
    sandbox_id: str = Field(..., pattern=SANDBOX_ID, max_length=44, description="sandbox")
    context_id: str = Field(..., pattern=CONTEXT_ID, description="from create_context")
    code: str = Field(..., min_length=1, max_length=MAX_CODE_CHARS,
                      description="Python cell; variables and imports persist between calls")
    timeout_s: float = _TIMEOUT
    max_output_chars: int = _CAP


# ---- outputs ------------------------------------------------------------------------------
class ExecOutput(_Out):
    stdout: str = Field(description="standard output (cut at max_output_chars)")
    stderr: str = Field(description="standard error (cut at max_output_chars)")
    exit_code: int = Field(description="exit status; 124 when it timed out")
    timed_out: bool = Field(description="killed for running past timeout_s")
    truncated: bool = Field(description="stdout or stderr was cut")
    duration_ms: float = Field(description="wall time of the command")
    sandbox_id: str = Field(description="sandbox it ran in")
    images: list[str] = Field(default_factory=list,
                              description="image files returned as image content")


class SandboxOutput(_Out):
    sandbox_id: str = Field(description="handle for the other tools")
    image: str
    state: str
    timeout_s: float
    idle_timeout_s: float | None


class ReadFileOutput(_Out):
    path: str
    size: int = Field(description="file size in bytes")
    content: str | None = Field(description="text (cut at max_chars); null for binary files")
    truncated: bool
    mime_type: str
    resource_uri: str | None = Field(description="link to the whole file when it was cut "
                                                 "or binary")


class WriteFileOutput(_Out):
    path: str
    bytes_written: int


class FileEntryOut(_Out):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int


class ListFilesOutput(_Out):
    path: str
    entries: list[FileEntryOut]
    truncated: bool = Field(description="more than 1000 entries; the rest are not listed")


class TerminateOutput(_Out):
    sandbox_id: str
    state: str


class ContextOutput(_Out):
    sandbox_id: str
    context_id: str


class CellError(_Out):
    name: str
    value: str
    traceback: str


class RunInContextOutput(_Out):
    stdout: str
    stderr: str
    text: str | None = Field(description="repr of the cell's last expression")
    error: CellError | None = Field(description="the exception the cell raised, if any")
    timed_out: bool = Field(description="interrupted for running past timeout_s (the context "
                                        "and its variables survive)")
    truncated: bool
    duration_ms: float
    images: int = Field(description="number of images returned as image content")


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input: type[BaseModel]
    output: type[BaseModel]
    read_only: bool = False
    destructive: bool = False


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("run_code", "Run a program (python, bash or node) in an isolated gVisor sandbox "
             "and return its stdout, stderr and exit code. Without sandbox_id it runs in a "
             "fresh sandbox destroyed afterwards; files written to $SBX_OUTPUT_DIR that are "
             "images come back as images. A non-zero exit is a normal result.",
             RunCodeInput, ExecOutput),
    ToolSpec("create_sandbox", "Create a sandbox that keeps its files between calls; returns "
             "sandbox_id for exec_command, read_file, write_file, list_files, run_code, "
             "create_context and terminate_sandbox. It ends after idle_timeout_s without use.",
             CreateSandboxInput, SandboxOutput),
    ToolSpec("exec_command", "Run a shell command (bash -lc) in a sandbox and return stdout, "
             "stderr and exit code.", ExecCommandInput, ExecOutput),
    ToolSpec("read_file", "Read a file from a sandbox: text comes back as text (cut at "
             "max_chars), images as images, anything larger as a resource link.",
             ReadFileInput, ReadFileOutput, read_only=True),
    ToolSpec("write_file", "Write a UTF-8 text file in a sandbox (parent directories are "
             "created).", WriteFileInput, WriteFileOutput),
    ToolSpec("list_files", "List a directory in a sandbox.", ListFilesInput, ListFilesOutput,
             read_only=True),
    ToolSpec("terminate_sandbox", "Destroy a sandbox and everything in it.",
             TerminateSandboxInput, TerminateOutput, destructive=True),
    ToolSpec("create_context", "Start a persistent Python interpreter context in a sandbox "
             "(like a Jupyter kernel): variables, imports and the working directory survive "
             "between run_in_context calls.", CreateContextInput, ContextOutput),
    ToolSpec("run_in_context", "Run a Python cell in a context from create_context; returns "
             "stdout, stderr, the last expression's value, a structured error with traceback, "
             "and figures as images.", RunInContextInput, RunInContextOutput),
)

TOOLS_BY_NAME = {t.name: t for t in TOOLS}
