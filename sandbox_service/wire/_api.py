"""Wire models shared by the SDK and the server (public layer).

Pydantic, `extra="forbid"`, units in field names. Both ends import these; the module must
not import the server, FastAPI or any runtime.

WebSocket exec protocol (/v1/sandboxes/{id}/exec/stream):
  client -> server  text   ExecRequest JSON (first frame), then {"type": "eof"},
                           {"type": "signal", "signal": N}, {"type": "resize", "rows", "cols"}
                    binary b"\\x00" + stdin bytes
  server -> client  text   {"type": "started", "exec_id", "pid"}, {"type": "exit", ...ExitStatus},
                           {"type": "error", "code", "message"}
                    binary b"\\x01" + stdout bytes | b"\\x02" + stderr bytes
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ._gpu import parse_gpus
from ._model import _Model
from ._volumes import VolumeMount, check_mounts

MAX_ARGV_BYTES = 256 * 1024
MAX_ENV_BYTES = 256 * 1024
MAX_TIMEOUT_S = 24 * 3600
MAX_CIDR_ALLOWLIST = 64
MAX_PORTS = 16  # encrypted_ports + unencrypted_ports of one sandbox
MAX_DOMAIN_ALLOWLIST = 64
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
STREAM_STDIN, STREAM_STDOUT, STREAM_STDERR = 0, 1, 2
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG = re.compile(r"^[A-Za-z0-9_.:/=-]{1,128}$")



# what _check_env enforces, stated in the OpenAPI schema too
ENV_NAMES = {"propertyNames": {"pattern": _ENV_NAME.pattern}}
MAX_PATH = 4096
ABS_PATH = {"pattern": "^/", "minLength": 1, "maxLength": MAX_PATH}  # as check_abs_path
PORT_PATTERN = r"^[1-9][0-9]{0,4}$"  # a TCP port as a path segment: digits only


def parse_port(text: str) -> int:
    """A port from a URL path segment: PORT_PATTERN (`8000.0`, `08000`, `٨٠٠٠` are not)."""
    if not (re.fullmatch(PORT_PATTERN, text, re.ASCII) and int(text) <= 65535):
        raise ValueError(f"port {text[:20]!r} is not a TCP port: use 1-65535")
    return int(text)


class ErrorDetail(_Model):
    code: str = Field(..., description="stable machine-readable code (sandbox_service.wire.errors)")
    message: str = Field(..., description="what went wrong and what to do next")
    details: dict[str, Any] | None = None


class ErrorBody(_Model):
    """Every 4xx/5xx answer of the API."""

    error: ErrorDetail


def _check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return env
    total = 0
    for k, v in env.items():
        if not _ENV_NAME.match(k):
            raise ValueError(f"invalid environment variable name {k!r}")
        if "\x00" in v:
            raise ValueError(f"environment variable {k} contains a NUL byte")
        total += len(k) + len(v) + 2
    if total > MAX_ENV_BYTES:
        raise ValueError(f"environment is {total} bytes; the limit is {MAX_ENV_BYTES}")
    return env


def _check_argv(argv: list[str] | None) -> list[str] | None:
    if argv is None:
        return argv
    if any("\x00" in a for a in argv):
        raise ValueError("arguments may not contain NUL bytes")
    size = sum(len(a.encode()) + 1 for a in argv)
    if size > MAX_ARGV_BYTES:
        raise ValueError(f"arguments total {size} bytes; the limit is {MAX_ARGV_BYTES}")
    return argv


def check_abs_path(p: str | None) -> str | None:
    if p is not None and (not p.startswith("/") or "\x00" in p or len(p) > MAX_PATH):
        raise ValueError("must be an absolute path (starting with /) without NUL bytes")
    return p


def check_domain_pattern(entry: str) -> str:
    """A domain_allowlist entry, normalised (lower case, no trailing dot): a host name of
    two or more labels, or `*.` and such a name (every name below it, not itself)."""
    d = str(entry).strip().lower().rstrip(".")
    name = d[2:] if d.startswith("*.") else d
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"{entry!r} is an IP address: put addresses in cidr_allowlist")
    if not name.isascii():
        raise ValueError(f"{entry!r}: write internationalised names in their ASCII (IDNA, "
                         "xn--...) form")
    labels = name.split(".")
    if (len(name) > 253 or not all(_DOMAIN_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise ValueError(f"{entry!r} is not a host name (like example.com, or *.example.com "
                         "for every name below example.com)")
    if len(labels) < 2:
        raise ValueError(f"{entry!r}: name a domain of two or more labels (example.com, "
                         "*.example.com); a single label or a top-level wildcard is refused")
    return d


class SandboxCreate(_Model):
    image: str = Field("debian_slim", description="image id (im-...) or name", max_length=256)
    command: list[str] | None = Field(None, description="main command; the sandbox ends when it exits",
                                      max_length=4096)
    timeout_s: float = Field(300, gt=0, le=MAX_TIMEOUT_S, description="maximum lifetime")
    idle_timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    workdir: str | None = Field(None, json_schema_extra=ABS_PATH)
    env: dict[str, str] = Field(default_factory=dict, json_schema_extra=ENV_NAMES)
    cpu: float | None = Field(None, gt=0, le=64, description="CPU cores (quota)")
    memory_mib: int | None = Field(None, ge=32, le=256 * 1024)
    disk_mib: int | None = Field(None, ge=16, le=16 * 1024 * 1024, description=(
        "writable disk in MiB, separate from memory; a write past it fails with ENOSPC "
        "(default: the server's SBX_DEFAULT_DISK_MIB)"))
    tags: dict[str, str] = Field(default_factory=dict, max_length=64)
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    app_id: str | None = Field(None, max_length=64)
    block_network: bool = True
    cidr_allowlist: list[str] | None = Field(
        None, max_length=MAX_CIDR_ALLOWLIST,
        description="with block_network=False: the only IPv4 CIDRs the sandbox may reach")
    domain_allowlist: list[str] | None = Field(
        None, max_length=MAX_DOMAIN_ALLOWLIST,
        description="with block_network=False: host names the sandbox may resolve and reach "
                    "(`example.com` only itself, `*.example.com` every name below it)")
    secret_names: list[str] = Field(default_factory=list, max_length=64,
                                    description="named secrets merged into env (env= wins)")
    encrypted_ports: list[int] = Field(
        default_factory=list, max_length=MAX_PORTS,
        description="ports inside the sandbox reachable through the service's authenticated "
                    "proxy (docs/network.md, Inbound ports)")
    unencrypted_ports: list[int] = Field(default_factory=list, max_length=MAX_PORTS,
                                         description="same as encrypted_ports (Modal's name)")
    volumes: list[VolumeMount] = Field(default_factory=list, description=(
        "volumes mounted read-write (or read-only) at their paths (docs/storage.md)"))
    gpu: str | list[str] | None = Field(None, description=(
        "GPUs in Modal's grammar: 'H100', 'A100-80GB:2', 'any'; a list is tried in order "
        "(docs/gpu.md)"))

    _v_env = field_validator("env")(lambda cls, v: _check_env(v))
    _v_argv = field_validator("command")(lambda cls, v: _check_argv(v))
    _v_workdir = field_validator("workdir")(lambda cls, v: check_abs_path(v))
    _v_volumes = field_validator("volumes")(lambda cls, v: check_mounts(v))

    @field_validator("gpu")
    @classmethod
    def _v_gpu(cls, v: str | list[str] | None) -> str | list[str] | None:
        parse_gpus(v)  # ValueError says what to write
        return v

    @model_validator(mode="after")
    def _v_ports(self) -> "SandboxCreate":
        ports = [*self.encrypted_ports, *self.unencrypted_ports]
        bad = next((p for p in ports if not 1 <= p <= 65535), None)
        if bad is not None:
            raise ValueError(f"port {bad} is not a TCP port: use 1-65535")
        if len(set(ports)) != len(ports):
            raise ValueError("a port appears twice in encrypted_ports/unencrypted_ports: "
                             "declare each port once")
        if len(ports) > MAX_PORTS:
            raise ValueError(f"{len(ports)} ports declared; a sandbox may expose at most "
                             f"{MAX_PORTS}")
        return self

    @field_validator("cidr_allowlist")
    @classmethod
    def _v_cidrs(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for entry in v:
            try:
                net = ipaddress.ip_network(str(entry).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a CIDR (like 203.0.113.0/24 or "
                                 "198.51.100.7/32)") from None
            if net.version != 4:
                raise ValueError(f"{entry!r} is IPv6: sandboxes have IPv4 egress only for "
                                 "now (IPv6 is always blocked); use IPv4 CIDRs")
            out.append(str(net))
        return out

    @field_validator("domain_allowlist")
    @classmethod
    def _v_domains(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(dict.fromkeys(check_domain_pattern(d) for d in v))

    @model_validator(mode="after")
    def _v_network(self) -> "SandboxCreate":
        if self.block_network and self.domain_allowlist is not None:
            raise ValueError("domain_allowlist only applies to a sandbox with network: pass "
                             "block_network=False with it (block_network=True means no "
                             "network at all)")
        if self.block_network and self.cidr_allowlist is not None:
            raise ValueError("cidr_allowlist only applies to a sandbox with network: pass "
                             "block_network=False with it (block_network=True means no "
                             "network at all)")
        return self

    @field_validator("tags")
    @classmethod
    def _v_tags(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_tags(v)


def _check_tags(v: dict[str, str]) -> dict[str, str]:
    for k, val in v.items():
        if not _TAG.match(k) or len(val) > 256:
            raise ValueError(f"tag {k!r}: keys are 1-128 of [A-Za-z0-9_.:/=-], values at most 256 chars")
    return v


class SandboxTags(_Model):
    """PUT /v1/sandboxes/{id}/tags: the sandbox's tags become these (Modal's set_tags)."""

    tags: dict[str, str] = Field(..., max_length=64)

    @field_validator("tags")
    @classmethod
    def _v_tags(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_tags(v)


SECRET_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$"
MAX_SECRET_BYTES = 64 * 1024


class SecretCreate(_Model):
    name: str = Field(..., pattern=SECRET_NAME_PATTERN)
    env: dict[str, str] = Field(..., max_length=1024, json_schema_extra=ENV_NAMES)
    overwrite: bool = False

    @field_validator("env")
    @classmethod
    def _v_env(cls, v: dict[str, str]) -> dict[str, str]:
        _check_env(v)
        size = sum(len(k.encode()) + len(x.encode()) + 2 for k, x in v.items())
        if size > MAX_SECRET_BYTES:
            raise ValueError(f"secret is {size} bytes; the limit is {MAX_SECRET_BYTES}")
        return v


class SecretInfo(_Model):
    """What the API tells about a secret: never its values."""
    name: str
    keys: list[str]
    created_at: float
    updated_at: float


class SecretList(_Model):
    secrets: list[SecretInfo]


class TunnelInfo(_Model):
    """One declared port's unguessable URL: no Authorization header needed."""

    port: int
    token: str = Field(description="<sandbox id>-<port>-<mac>; the URL is "
                       "<server>/tunnels/<token>/, or https://<token>.<SBX_WEB_DOMAIN>")
    url: str | None = Field(None, description="host-routed URL when the server has a domain")


class TunnelList(_Model):
    tunnels: list[TunnelInfo]


class SandboxInfo(_Model):
    sandbox_id: str
    name: str | None = None
    state: str
    image: str
    image_id: str | None = None
    app_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    timeout_s: float
    idle_timeout_s: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    cpu: float | None = None
    memory_mib: int
    disk_mib: int | None = None
    gpus: list[str] = Field(default_factory=list,
                            description="the GPUs it holds: model and UUID, e.g. 'H100 GPU-8f...'")
    has_command: bool = False
    encrypted_ports: list[int] = Field(default_factory=list)
    unencrypted_ports: list[int] = Field(default_factory=list)


class GpuDeviceInfo(_Model):
    index: int
    name: str = Field(description="as NVML reports it, e.g. 'NVIDIA H100 80GB HBM3'")
    uuid: str
    memory_mib: int
    mig: bool = Field(False, description="MIG mode on: not given to sandboxes (nvproxy)")
    holder: str | None = Field(None, description="the sandbox holding it (yours only; "
                                                 "'another principal' otherwise)")


class GpuList(_Model):
    gpus: list[GpuDeviceInfo]
    driver_version: str | None = None
    unavailable: str | None = Field(None, description="why GPU sandboxes cannot run here")
    gpu_seconds: dict[str, float] = Field(
        default_factory=dict, description="GPU-seconds used per principal (yours; an admin "
                                          "sees everyone's)")


class SandboxList(_Model):
    sandboxes: list[SandboxInfo]


class ExecRequest(_Model):
    type: Literal["start"] = "start"
    argv: list[str] = Field(..., min_length=1, max_length=65536)
    workdir: str | None = Field(None, json_schema_extra=ABS_PATH)
    env: dict[str, str] | None = Field(None, json_schema_extra=ENV_NAMES)
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    pty: bool = False
    rows: int = Field(24, ge=1, le=1000)
    cols: int = Field(80, ge=1, le=1000)
    stdin: str | None = Field(None, description="non-streaming exec only: text fed to stdin",
                              max_length=16 * 1024 * 1024)
    max_output_bytes: int = Field(8 * 1024 * 1024, ge=0, le=64 * 1024 * 1024,
                                  description="non-streaming exec only: cap per stream")

    _v_env = field_validator("env")(lambda cls, v: _check_env(v))
    _v_argv = field_validator("argv")(lambda cls, v: _check_argv(v))
    _v_workdir = field_validator("workdir")(lambda cls, v: check_abs_path(v))


class ExitStatus(_Model):
    """How a command ended: the same three fields from the agent's EXIT frame through
    `runtimes.ExitFrame` to the SDK (codes: runtimes/agent/sbxagent/exits.py)."""
    type: Literal["exit"] = "exit"
    exit_code: int
    timed_out: bool = False
    signal: int | None = None


class ExecResult(_Model):
    exit_code: int
    timed_out: bool = False
    signal: int | None = None
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float


class FileEntry(_Model):
    name: str
    path: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int
    mtime: float


class FileList(_Model):
    entries: list[FileEntry]


class MkdirRequest(_Model):
    path: str = Field(..., json_schema_extra=ABS_PATH)
    parents: bool = True
    _v_path = field_validator("path")(lambda cls, v: check_abs_path(v))


class AppLookup(_Model):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    create_if_missing: bool = False


class AppInfo(_Model):
    app_id: str
    name: str
    created_at: float


class ServerInfo(_Model):
    version: str
    runtime: str
    runsc_version: str | None = None
    devices_locked: bool | None = None
    sandboxes_running: int
