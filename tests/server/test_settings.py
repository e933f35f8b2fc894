"""Settings are read from the environment in one place (`Settings.from_env`); the factories
get plain values. Fast: no server, no root."""

from __future__ import annotations

import pathlib

import pytest

from sandbox_service.server import Settings

pytestmark = pytest.mark.fast

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_server_variable_lands_in_settings(monkeypatch):
    env = {
        "SBX_RUNSC": "/opt/runsc", "SBX_WARM_POOL": "0", "SBX_MAX_STREAMS": "7",
        "SBX_STREAM_STALL_S": "9.5", "SBX_MAX_SANDBOXES": "3", "SBX_DNS_UPSTREAM": "192.0.2.53",
        "SBX_IMAGE_CACHE": "/var/cache/x", "SBX_DEBIAN_MIRROR": "http://m.example/debian",
        "SBX_MCP_PUBLIC_URL": "https://sbx.example/", "SBX_MCP_LOOPBACK_URL": "http://127.0.0.1:1",
        "SBX_MCP_ALLOWED_HOSTS": "a.example, b.example", "SBX_MCP_IDLE_S": "60",
        "SBX_MCP_SWEEP_S": "5", "SBX_BUILD_MEMORY_MIB": "1024",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.from_env()
    assert (s.runsc_binary, s.warm_pool, s.max_streams, s.stream_stall_s) == ("/opt/runsc", 0, 7, 9.5)
    assert s.policy.max_sandboxes == 3 and s.build.memory_mib == 1024
    assert (s.dns_upstream, s.image_cache, s.debian_mirror) == (
        "192.0.2.53", "/var/cache/x", "http://m.example/debian")
    assert s.mcp.public_url == "https://sbx.example" and s.mcp.loopback_url == "http://127.0.0.1:1"
    assert s.mcp.allowed_hosts == ("a.example", "b.example")
    assert (s.mcp.idle_s, s.mcp.sweep_s) == (60.0, 5.0)


def test_defaults_without_environment(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("SBX_"):
            monkeypatch.delenv(k)
    s = Settings.from_env()
    assert s.dns_upstream is None and s.image_cache is None and s.debian_mirror is None
    assert s.mcp.public_url is None and s.mcp.allowed_hosts == () and s.mcp.idle_s == 1800


def test_no_module_reads_server_variables_elsewhere():
    """SBX_* server variables are read only by the settings module (the SDK's own
    SBX_URL/SBX_TOKEN/SBX_HOME by sandbox_service/_config.py; `sbx doctor` reports
    SBX_RUNSC and SBX_TOKEN as it finds them)."""
    allowed = {"sandbox_service/server/_settings.py", "sandbox_service/_config.py",
               "sandbox_service/cli/_doctor.py"}
    bad = []
    for pkg in ("sandbox_service", "runtimes", "images", "security", "agent_tools"):
        for p in (ROOT / pkg).rglob("*.py"):
            rel = str(p.relative_to(ROOT))
            text = p.read_text()
            if rel not in allowed and ('environ.get("SBX_' in text or "getenv(\"SBX_" in text
                                       or 'environ["SBX_' in text):
                bad.append(rel)
    assert bad == []
