"""Server settings (server layer). Plain data; must not import FastAPI or runtimes.

Every environment variable the server, its runtime, its image store and its MCP endpoint
honour is read here, in `Settings.from_env`, and nowhere else: the factories receive plain
values (`create_app(settings)` passes them on). The SDK's own three (SBX_URL, SBX_TOKEN,
SBX_HOME) are read in `sandbox_service/_config.py`.
"""

from __future__ import annotations

import dataclasses
import os

from images import BuildSettings
from security import ResourcePolicy

from .._config import DEFAULT_PORT, sbx_home

PLATFORMS = ("auto", "systrap", "ptrace", "kvm")


@dataclasses.dataclass(frozen=True)
class McpSettings:
    """The `/mcp` endpoint (agent_tools): its public URL (SBX_MCP_PUBLIC_URL), the URL its
    tool calls use to reach this server (SBX_MCP_LOOPBACK_URL), extra Host/Origin values
    it accepts (SBX_MCP_ALLOWED_HOSTS, "*" turns the DNS-rebinding check off), and how long
    an idle session's sandboxes live (SBX_MCP_IDLE_S, swept every SBX_MCP_SWEEP_S)."""
    public_url: str | None = None
    loopback_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    idle_s: float = 1800.0
    sweep_s: float = 30.0


@dataclasses.dataclass
class Settings:
    home: str = dataclasses.field(default_factory=sbx_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None  # None: read or create SBX_HOME/token
    runsc_binary: str | None = None
    # SBX_PLATFORM: gVisor's platform; "auto" takes systrap where the runsc has it (2023 and
    # later), else ptrace (docs/runtime.md has the measurements behind the choice)
    platform: str = "auto"
    monitor_interval_s: float = 0.5
    collector_interval_s: float = 30.0
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    warm_pool: int = 2  # pre-booted default sandboxes; 0 turns the pools off
    # SBX_WARM_POOL_MAX / SBX_WARM_POOL_MEMORY_MIB: all warm pools together (the default
    # profile's and those sized from demand); default 2 per CPU core
    warm_pool_max: int = dataclasses.field(default_factory=lambda: 2 * (os.cpu_count() or 1))
    warm_pool_memory_mib: int = 1024
    # open exec/port/cell streams on the server (each holds at most ~192 KiB: docs/limits.md)
    max_streams: int = 1024
    # a client that reads none of its stream's output for this long loses the stream
    stream_stall_s: float = 60.0
    # finished function calls' results are kept this long (FunctionCall.get, from_id)
    call_retention_s: float = 24 * 3600.0
    # containers of a function that sets no max_containers (None: 2 per CPU core, >= 4)
    function_max_containers: int | None = None
    policy: ResourcePolicy = dataclasses.field(default_factory=ResourcePolicy)
    build: BuildSettings = dataclasses.field(default_factory=BuildSettings)
    dns_upstream: str | None = None     # SBX_DNS_UPSTREAM: the resolver allowlists pin through
    image_cache: str | None = None      # SBX_IMAGE_CACHE: base image tarballs kept between homes
    # web endpoints: SBX_WEB_DOMAIN (host-routed <label>.<domain>, else /web/<label>/ only),
    # SBX_WEB_SCHEME (of the URLs printed with a domain), SBX_WEB_MAX_BODY_MIB,
    # SBX_WEB_REQUIRE_AUTH=1 (every endpoint needs a bearer token, not only
    # requires_proxy_auth ones)
    web_domain: str | None = None
    web_scheme: str = "http"
    web_max_body_mib: int = 64
    web_require_auth: bool = False
    # SBX_VOLUME_QUOTA_MIB: the space of each principal's volumes together (a sparse ext4
    # under SBX_HOME/volumes; raising it grows existing ones at their next mount)
    volume_quota_mib: int = 10 * 1024
    # SBX_WHEEL_CACHE: pydantic_core wheels for other Pythons (scripts/fetch-sdk-wheels.sh)
    wheel_cache: str | None = "/var/cache/sandbox-service/wheels"
    debian_mirror: str | None = None    # SBX_DEBIAN_MIRROR: debootstrap's mirror (default: apt's)
    mcp: McpSettings = dataclasses.field(default_factory=lambda: McpSettings())

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        kwargs: dict = {}
        if env.get("SBX_RUNSC"):
            kwargs["runsc_binary"] = env["SBX_RUNSC"]
        if env.get("SBX_PLATFORM", "").strip():
            kwargs["platform"] = env["SBX_PLATFORM"].strip().lower()
            if kwargs["platform"] not in PLATFORMS:
                raise ValueError(f"SBX_PLATFORM={kwargs['platform']!r}: use one of "
                                 f"{', '.join(PLATFORMS)}")
        for var, field in (("SBX_WARM_POOL", "warm_pool"), ("SBX_WARM_POOL_MAX", "warm_pool_max"),
                           ("SBX_WARM_POOL_MEMORY_MIB", "warm_pool_memory_mib")):
            if env.get(var, "").strip():
                kwargs[field] = int(env[var])
        if env.get("SBX_MAX_STREAMS"):
            kwargs["max_streams"] = int(env["SBX_MAX_STREAMS"])
        if env.get("SBX_FUNCTION_MAX_CONTAINERS"):
            kwargs["function_max_containers"] = int(env["SBX_FUNCTION_MAX_CONTAINERS"])
        if env.get("SBX_CALL_RETENTION_S"):
            kwargs["call_retention_s"] = float(env["SBX_CALL_RETENTION_S"])
        if env.get("SBX_STREAM_STALL_S"):
            kwargs["stream_stall_s"] = float(env["SBX_STREAM_STALL_S"])
        limits = {field: int(env[var]) for var, field in (
            ("SBX_MAX_SANDBOXES", "max_sandboxes"),
            ("SBX_MAX_SANDBOXES_PER_PRINCIPAL", "max_sandboxes_per_principal"),
            ("SBX_CREATES_PER_MINUTE", "creates_per_minute"),
            ("SBX_DEFAULT_DISK_MIB", "default_disk_mib"),
            ("SBX_MAX_DISK_MIB", "max_disk_mib")) if env.get(var)}
        if limits:
            kwargs["policy"] = ResourcePolicy(**limits)
        kwargs["build"] = build_settings_from_env(env)
        for var, field in (("SBX_DNS_UPSTREAM", "dns_upstream"),
                           ("SBX_DEBIAN_MIRROR", "debian_mirror")):
            if env.get(var, "").strip():
                kwargs[field] = env[var].strip()
        if env.get("SBX_WEB_DOMAIN", "").strip():
            kwargs["web_domain"] = env["SBX_WEB_DOMAIN"].strip().lower().strip(".")
        if env.get("SBX_WEB_SCHEME", "").strip():
            kwargs["web_scheme"] = env["SBX_WEB_SCHEME"].strip()
        if env.get("SBX_WEB_MAX_BODY_MIB", "").strip():
            kwargs["web_max_body_mib"] = int(env["SBX_WEB_MAX_BODY_MIB"])
        if env.get("SBX_VOLUME_QUOTA_MIB", "").strip():
            kwargs["volume_quota_mib"] = int(env["SBX_VOLUME_QUOTA_MIB"])
            if kwargs["volume_quota_mib"] < 16:
                raise ValueError("SBX_VOLUME_QUOTA_MIB must be at least 16")
        if env.get("SBX_WEB_REQUIRE_AUTH", "").strip():
            kwargs["web_require_auth"] = env["SBX_WEB_REQUIRE_AUTH"].strip() not in ("0", "false")
        if env.get("SBX_WHEEL_CACHE", "").strip():
            kwargs["wheel_cache"] = os.path.abspath(env["SBX_WHEEL_CACHE"].strip())
        if env.get("SBX_IMAGE_CACHE", "").strip():
            kwargs["image_cache"] = os.path.abspath(env["SBX_IMAGE_CACHE"].strip())
        kwargs["mcp"] = McpSettings(
            public_url=env.get("SBX_MCP_PUBLIC_URL", "").rstrip("/") or None,
            loopback_url=env.get("SBX_MCP_LOOPBACK_URL", "").rstrip("/") or None,
            allowed_hosts=tuple(h.strip() for h in env.get("SBX_MCP_ALLOWED_HOSTS", "").split(",")
                                if h.strip()),
            idle_s=float(env.get("SBX_MCP_IDLE_S", "1800")),
            sweep_s=float(env.get("SBX_MCP_SWEEP_S", "30")))
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)


def build_settings_from_env(env) -> BuildSettings:
    """Image-build settings. SBX_BUILD_CA_BUNDLE names a CA file build steps trust (default:
    the host's SSL_CERT_FILE, for TLS-intercepting proxies; "none" turns it off);
    SBX_PRIVATE_REGISTRIES lists host:port registries on private addresses that may be
    pulled from (without TLS verification)."""
    ca = env.get("SBX_BUILD_CA_BUNDLE", env.get("SSL_CERT_FILE") or "")
    private = frozenset(h.strip() for h in env.get("SBX_PRIVATE_REGISTRIES", "").split(",") if h.strip())
    return BuildSettings(
        memory_mib=int(env.get("SBX_BUILD_MEMORY_MIB", "4096")),
        step_timeout_s=float(env.get("SBX_BUILD_STEP_TIMEOUT_S", "1800")),
        egress=env.get("SBX_BUILD_NETWORK", "1") not in ("0", "false", "no"),
        ca_bundle=None if ca.lower() in ("", "none") else ca,
        private_registries=private)
