"""Translate the in-sandbox agent's error codes into the public typed errors (server layer).

One table for files and commands, one function for ports; `SandboxIO._agent_call` is the
one place that applies them. Must not import FastAPI.
"""

from __future__ import annotations

from runtimes import AgentError

from ...wire import errors as E

_TABLE: dict[str, type[E.SandboxError]] = {
    "not_found": E.SandboxFileNotFoundError,
    "invalid_path": E.InvalidRequestError,
    "bad_request": E.InvalidRequestError,
    "unsupported": E.InvalidRequestError,
    "conflict": E.ConflictError,
    "exec_failed": E.InvalidRequestError,
    "timeout": E.SandboxTimeoutError,
    "not_regular": E.InvalidRequestError,
}
_HINTS = {
    "is_a_directory": "it is a directory: use list_files, or remove with recursive=True",
    "not_a_directory": "a parent of the path is not a directory",
    "not_empty": "the directory is not empty: pass recursive=True to remove it",
    "already_exists": "it already exists",
    "permission_denied": "permission denied inside the sandbox",
    "no_space": ("the sandbox's disk is full: remove files, or create the sandbox with "
                 "a larger ephemeral_disk= (MiB; or memory= when it has no disk quota)"),
    "read_only": "that part of the filesystem is read-only",
}


def map_agent_error(e: AgentError, path: str | None = None) -> E.SandboxError:
    cls = _TABLE.get(e.code, E.SandboxFileError)
    hint = _HINTS.get(e.code)
    where = f"{path}: " if path else ""
    return cls(f"{where}{hint or e.message}", details={"agent_code": e.code})


def map_port_error(e: AgentError, sandbox_id: str, port: int | None) -> E.SandboxError:
    if e.code in ("port_refused", "port_timeout", "port_error"):
        return E.PortUnreachableError(e.message, details={"agent_code": e.code, "port": port})
    if e.code == "unsupported":
        return E.InvalidRequestError(e.message)
    # an agent from before inbound ports reads the op as a file op and refuses it
    return E.ConflictError(f"sandbox {sandbox_id} cannot open ports ({e.message}): its agent "
                           "predates inbound ports; create a new sandbox")
