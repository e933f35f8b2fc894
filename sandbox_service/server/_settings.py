"""Server settings (server layer). Plain data; must not import FastAPI or runtimes."""

from __future__ import annotations

import dataclasses
import os

from security import ResourcePolicy

from .._config import DEFAULT_PORT, sbx_home


@dataclasses.dataclass
class Settings:
    home: str = dataclasses.field(default_factory=sbx_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # None: read or create SBX_HOME/token
    runsc_binary: str | None = None
    platform: str = "ptrace"
    monitor_interval_s: float = 0.5
    collector_interval_s: float = 30.0
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    warm_pool: int = 2  # pre-booted default sandboxes; 0 turns the pool off
    policy: ResourcePolicy = dataclasses.field(default_factory=ResourcePolicy)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        kwargs: dict = {}
        if env.get("SBX_RUNSC"):
            kwargs["runsc_binary"] = env["SBX_RUNSC"]
        if env.get("SBX_WARM_POOL"):
            kwargs["warm_pool"] = int(env["SBX_WARM_POOL"])
        if env.get("SBX_MAX_SANDBOXES"):
            kwargs["policy"] = ResourcePolicy(max_sandboxes=int(env["SBX_MAX_SANDBOXES"]))
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)
