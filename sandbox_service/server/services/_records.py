"""Typed records (server layer): one per sandbox and one per app, owned by the store.

`SandboxManager` creates and updates records; `Store` persists them (`to_json` /
`from_json`); the API's `SandboxInfo` is derived from one (`info()`). Records written by
older servers lack newer fields: `from_json` fills their defaults here, once, so no caller
writes `rec.get("owner", "admin")`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...wire import AppInfo, SandboxInfo

LIVE_STATES = ("creating", "running")
R = TypeVar("R")


@dataclass
class SandboxRecord:
    sandbox_id: str
    image: str                         # what the caller asked for ("debian_slim", "im-...")
    created_at: float
    timeout_s: float
    owner: str = "admin"               # the principal that created it
    state: str = "creating"            # creating, running, exited, terminated, timeout, ...
    name: str | None = None
    image_id: str | None = None
    app_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    idle_timeout_s: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    cpu: float | None = None
    memory_mib: int = 0
    disk_mib: int | None = None
    has_command: bool = False
    workdir: str | None = None
    # how it was booted (needed to snapshot it and to run commands as the image's user)
    layer: str | None = None
    rootfs: str | None = None
    image_config: dict[str, Any] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    encrypted_ports: list[int] = field(default_factory=list)
    unencrypted_ports: list[int] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)  # "<NVML name> <uuid>" of each it holds

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def ports(self) -> set[int]:
        """The ports declared at create: the only ones the proxy forwards to."""
        return set(self.encrypted_ports) | set(self.unencrypted_ports)

    def oom_reason(self) -> str:
        return (f"it ran out of memory (limit {self.memory_mib} MiB) and was killed: create "
                "it with more memory")

    def finish(self, state: str, exit_code: int | None, reason: str) -> None:
        self.state, self.exit_code, self.reason = state, exit_code, reason
        self.finished_at = time.time()

    def info(self) -> SandboxInfo:
        return SandboxInfo(**{k: getattr(self, k) for k in SandboxInfo.model_fields})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SandboxRecord":
        return _load(cls, text)


@dataclass
class AppRecord:
    """A named app: a namespace of sandboxes (and, later, functions) per principal."""
    app_id: str
    name: str
    owner: str = "admin"  # apps from before per-principal namespaces were the admin's
    created_at: float = 0.0
    # functions (services/_functions.py): "active" (a plain named app), "ephemeral" (an
    # `app.run()`; its name is hidden from lookups), "deployed", or "stopped"
    state: str = "active"
    display_name: str | None = None
    version: int = 0
    functions: dict[str, str] = field(default_factory=dict)  # name -> function id
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per deploy

    def info(self) -> AppInfo:
        return AppInfo(app_id=self.app_id, name=self.name, created_at=self.created_at)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "AppRecord":
        return _load(cls, text)


def _load(cls: type[R], text: str) -> R:
    """A record from its stored JSON. Fields an older server did not write, or wrote as
    null, take the field's default; keys this version does not know are dropped."""
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known and v is not None})
