"""`sbx doctor`: is this machine ready to run sandboxes? (public layer; must not import the
server).

Each check yields OK, WARN or FAIL with a one-line detail and, where useful, what to do.
Exit code 1 when any check FAILs. The runsc checks reuse the runtime's own feature
detection (`runtimes.gvisor`), imported lazily, so the answer matches what the server sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil

import click

from .._config import sbx_home, sbx_token, sbx_url
from .._version import __version__

OK, WARN, FAIL = "OK", "WARN", "FAIL"
# Known vulnerabilities of old runsc builds (RUNSC.md): the Debian package is gVisor of 2022.
OLD_CVES = ("CVE-2023-7258", "CVE-2024-10026", "CVE-2024-10603", "CVE-2025-2713")
OLD_BEFORE = datetime.date(2025, 1, 1)
DEVICE_ESCAPE_FIXED = datetime.date(2026, 8, 1)  # device-node escape through the gofer
MIN_FREE_WARN = 2 << 30
MIN_FREE_FAIL = 512 << 20
INSTALL_RUNSC = ("install a current runsc release from https://gvisor.dev/docs/user_guide/install/ "
                 "(the apt repository at storage.googleapis.com/gvisor/releases)")


@dataclasses.dataclass
class Check:
    name: str
    status: str
    detail: str
    hint: str = ""


def release_date(version: str) -> datetime.date | None:
    """The release date in a runsc version string: `runsc version 0.0~20221219.0`,
    `runsc version release-20240807.0`, ... None when there is none."""
    m = re.search(r"(?:release-|0\.0~|\b)(20\d{2})(\d{2})(\d{2})(?:\.\d+)?\b", version or "")
    if not m:
        return None
    try:
        return datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def check_runsc_release(version: str) -> Check:
    date = release_date(version)
    if date is None:
        return Check("runsc release", WARN, f"cannot tell the release date of {version!r}",
                     "make sure it is a release from 2026-08 or later (older ones have known "
                     "sandbox escapes); " + INSTALL_RUNSC)
    if date < OLD_BEFORE:
        return Check("runsc release", WARN,
                     f"runsc of {date.isoformat()} has known vulnerabilities: "
                     f"{', '.join(OLD_CVES)} and a device-node escape (fixed 2026-08)",
                     "Debian's packages lag gVisor's releases (2022-12 in Debian 12, "
                     "2024-07 in Debian 13, what `make install` brings); " + INSTALL_RUNSC)
    if date < DEVICE_ESCAPE_FIXED:
        return Check("runsc release", WARN,
                     f"runsc of {date.isoformat()} predates the fix of a device-node escape "
                     "(fixed 2026-08)", INSTALL_RUNSC)
    return Check("runsc release", OK, f"released {date.isoformat()}")


def _runsc_checks() -> list[Check]:
    from runtimes.gvisor import detect_features, find_runsc

    binary = os.environ.get("SBX_RUNSC") or find_runsc()
    if not binary or not os.path.exists(binary):
        return [Check("runsc", FAIL, "runsc not found" + (f" at {binary}" if binary else ""),
                      "apt-get install runsc, or " + INSTALL_RUNSC)]
    try:
        feats = asyncio.run(asyncio.wait_for(detect_features(binary), 30))
    except (OSError, asyncio.TimeoutError, IndexError) as e:
        return [Check("runsc", FAIL, f"{binary} does not run: {e or type(e).__name__}",
                      INSTALL_RUNSC)]
    out = [Check("runsc", OK, f"{feats.version} ({binary})")]
    out.append(check_runsc_release(feats.version))
    have = {f: f in feats.flags for f in ("host-uds", "overlay2", "directfs", "nvproxy")}
    desc = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in have.items())
    missing = [f for f in ("host-uds", "overlay2") if not have[f]]
    if missing:
        out.append(Check("runsc features", FAIL, desc,
                         f"the service needs --{' and --'.join(missing)}; " + INSTALL_RUNSC))
    elif not have["nvproxy"] and _has_gpu():
        out.append(Check("runsc features", WARN, desc,
                         "a GPU is present but this runsc has no --nvproxy: GPU sandboxes are "
                         "unavailable; " + INSTALL_RUNSC))
    else:
        out.append(Check("runsc features", OK, desc))
    return out


def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _platform_check() -> Check:
    """The platform the server will run (SBX_PLATFORM, "auto" by default: systrap where
    the runsc has it, else ptrace)."""
    from runtimes.gvisor import detect_features, find_runsc

    wanted = os.environ.get("SBX_PLATFORM", "auto").strip().lower() or "auto"
    binary = os.environ.get("SBX_RUNSC") or find_runsc()
    try:
        feats = asyncio.run(asyncio.wait_for(detect_features(binary or "runsc"), 30))
        chosen = feats.platform(wanted)
    except (OSError, asyncio.TimeoutError, IndexError):
        return Check("platform", WARN, f"SBX_PLATFORM={wanted}; runsc does not run",
                     "fix the runsc check above")
    how = "SBX_PLATFORM=" + wanted if wanted != "auto" else "auto"
    if chosen == "kvm":
        return Check("platform", WARN, f"kvm ({how})",
                     "kvm hangs under nested virtualisation: unset SBX_PLATFORM unless this "
                     "host is bare metal")
    if chosen == "ptrace" and feats.systrap:
        return Check("platform", WARN, f"ptrace ({how})",
                     "systrap runs system calls 11-28x faster on this runsc (README, Benchmarks): unset SBX_PLATFORM")
    if chosen == "ptrace":
        return Check("platform", WARN, f"ptrace ({how}): this runsc predates systrap",
                     "a current runsc runs systrap: " + INSTALL_RUNSC)
    return Check("platform", OK, f"{chosen} ({how})")


def _gpu_checks() -> list[Check]:
    """What `gpu=` would get here: the NVML inventory, whether this runsc's nvproxy can
    serve the loaded driver, and the driver's user-space files the sandboxes are given."""
    from runtimes import host_inventory
    from runtimes.gvisor import (
        detect_features,
        find_runsc,
        gpu_driver_mounts,
        gpu_unavailable,
    )

    if not _has_gpu():
        return [Check("GPUs", OK, "none (no /dev/nvidiactl): sandboxes and functions run on "
                      "CPU and gpu= is refused with GpuUnavailableError")]
    inv = host_inventory()
    devices = inv.devices()
    if not devices:
        return [Check("GPUs", FAIL, getattr(inv, "why", "NVML lists no GPU"),
                      "check the driver with nvidia-smi; docs/gpu.md")]
    names: dict[str, int] = {}
    for d in devices:
        names[f"{d.name} ({d.memory_mib} MiB)"] = names.get(f"{d.name} ({d.memory_mib} MiB)", 0) + 1
    detail = ", ".join(f"{n} x {k}" for k, n in names.items())
    out = [Check("GPUs", OK, f"{detail}; driver {inv.driver_version()}")]
    mig = [str(d.index) for d in devices if d.mig]
    if mig:
        out.append(Check("GPU MIG", WARN, f"GPU {', '.join(mig)} in MIG mode: not allocated",
                         "whole GPUs only: disable MIG (nvidia-smi -mig 0) to use them"))
    binary = os.environ.get("SBX_RUNSC") or find_runsc() or "runsc"

    async def why() -> str | None:
        feats = await detect_features(binary)
        return await gpu_unavailable("nvproxy" in feats.flags, binary)
    try:
        reason = asyncio.run(asyncio.wait_for(why(), 60))
    except (OSError, asyncio.TimeoutError, IndexError) as e:
        reason = f"runsc does not run ({e or type(e).__name__})"
    out.append(Check("GPU sandboxes", WARN, f"unavailable: {reason}", "docs/gpu.md")
               if reason else Check("GPU sandboxes", OK, "runsc --nvproxy supports this driver"))
    mounts = {dst.rsplit("/", 1)[-1] for _, dst in gpu_driver_mounts()}
    lacking = [f for f in ("libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi") if f not in mounts]
    out.append(Check("GPU driver files", WARN, f"not found on this host: {', '.join(lacking)}",
                     "install the driver's user-space part (libcuda, libnvidia-ml, nvidia-smi)")
               if lacking else Check("GPU driver files", OK,
                                     f"{len(mounts)} libraries and tools, bound read-only"))
    return out


def _cgroup_checks() -> list[Check]:
    from runtimes.gvisor import CGROUP_ROOT, cgroup_version

    ver = cgroup_version()
    root = CGROUP_ROOT
    if ver == 2:
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                present = set(f.read().split())
        except OSError:
            present = set()
        need = ("memory", "cpu", "pids")
    else:
        present = {c for c in ("memory", "cpu", "pids", "devices") if os.path.isdir(os.path.join(root, c))}
        need = ("memory", "cpu", "pids", "devices")
    missing = [c for c in need if c not in present]
    shown = ", ".join(c for c in need if c in present) or "none"
    checks = []
    if [c for c in missing if c != "devices"]:
        checks.append(Check("cgroups", FAIL, f"v{ver}; controllers: {shown}; missing: {', '.join(missing)}",
                            "sandbox limits need the memory, cpu and pids controllers mounted"))
    elif missing:
        checks.append(Check("cgroups", WARN, f"v{ver}; controllers: {shown}; missing: devices",
                            "without the devices controller the device-node lockdown is off"))
    elif ver == 2:
        checks.append(Check("cgroups", WARN, f"v2; controllers: {shown}",
                            "on cgroup v2 the device lockdown relies on runsc alone: keep runsc current"))
    else:
        checks.append(Check("cgroups", OK, f"v1; controllers: {shown}"))
    return checks


def _host_checks() -> list[Check]:
    out = []
    if os.geteuid() == 0:
        out.append(Check("root", OK, "running as root"))
    else:
        out.append(Check("root", FAIL, f"running as uid {os.geteuid()}",
                         "`sbx serve` must run as root (runsc, cgroups, network namespaces)"))
    out.append(Check("kernel", OK, f"{platform.system()} {platform.release()} ({platform.machine()})"))
    deb = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if deb:
        out.append(Check("debootstrap", OK, deb))
    else:
        out.append(Check("debootstrap", WARN, "not found",
                         "needed to build the base image (unless cached): apt-get install debootstrap"))
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    tools = {"skopeo": "Image.from_registry", "umoci": "Image.from_registry",
             "nft": "image build steps (egress policy)", "ip": "image build steps (egress)"}
    missing = [t for t in tools if not shutil.which(t, path=path)]
    if missing:
        needs = "; ".join(f"{t}: {tools[t]}" for t in missing)
        out.append(Check("image tools", WARN, f"missing {', '.join(missing)}",
                         f"needed by {needs}: apt-get install skopeo umoci nftables iproute2"))
    else:
        out.append(Check("image tools", OK, "skopeo, umoci, nft, ip"))
    if not os.path.exists("/proc/filesystems") or "overlay" not in open("/proc/filesystems").read():
        out.append(Check("overlayfs", WARN, "not in /proc/filesystems",
                         "image build steps mount overlayfs: modprobe overlay"))
    return out


def _home_checks() -> list[Check]:
    home = sbx_home()
    out = []
    token_path = os.path.join(home, "token")
    if os.environ.get("SBX_TOKEN"):
        token = "token from SBX_TOKEN"
    elif os.path.exists(token_path):
        mode = os.stat(token_path).st_mode & 0o777
        token = f"token file present (mode {mode:04o})"
        if mode & 0o077:
            out.append(Check("SBX_HOME", WARN, f"{home}; {token}",
                             f"the token file should be private: chmod 600 {token_path}"))
    else:
        token = "no token yet (written by the first `sbx serve`)"
    if not out:
        where = home if os.path.isdir(home) else f"{home} (not created yet)"
        out.append(Check("SBX_HOME", OK, f"{where}; {token}"))
    probe = home
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        free = shutil.disk_usage(probe).free
    except OSError as e:
        out.append(Check("disk", WARN, f"cannot stat {probe}: {e}"))
        return out
    gib = f"{free / (1 << 30):.1f} GiB free under {probe}"
    if free < MIN_FREE_FAIL:
        out.append(Check("disk", FAIL, gib, "images and sandboxes need at least 512 MiB"))
    elif free < MIN_FREE_WARN:
        out.append(Check("disk", WARN, gib, "the base image alone needs ~300 MB; free some space"))
    else:
        out.append(Check("disk", OK, gib))
    from runtimes.gvisor import disk_unavailable

    why = disk_unavailable()
    out.append(Check("disk quota", WARN, f"per-sandbox disks are off: {why}",
                     "sandboxes write to memory; ephemeral_disk= is refused") if why else
               Check("disk quota", OK, "loop devices, ext4 and overlayfs available"))
    try:
        quota_mib = int(os.environ.get("SBX_VOLUME_QUOTA_MIB") or 10 * 1024)
    except ValueError:
        quota_mib = 10 * 1024
    if why:
        out.append(Check("volumes", WARN, f"volume quotas are not enforced: {why}",
                         "volumes are plain directories; a principal can fill the disk"))
    elif quota_mib << 20 > free:
        out.append(Check("volumes", WARN, f"SBX_VOLUME_QUOTA_MIB={quota_mib} is more than "
                         f"the {gib}", "each principal's volumes are a sparse image of that "
                         "size: if the host disk fills first, volume writes fail with I/O "
                         "errors; lower it or free space"))
    else:
        out.append(Check("volumes", OK, f"{quota_mib} MiB per principal (SBX_VOLUME_QUOTA_MIB)"))
    return out


def _server_check() -> Check:
    import httpx

    url = sbx_url()
    try:
        r = httpx.get(url + "/health", timeout=3)
    except httpx.HTTPError as e:
        return Check("server", WARN, f"no server answers at {url} ({type(e).__name__})",
                     "start it with `sbx serve`, or set SBX_URL to where it runs")
    if r.status_code != 200:
        return Check("server", WARN, f"{url}/health answered HTTP {r.status_code}",
                     "is SBX_URL pointing at a sandbox-service server?")
    token = sbx_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(url + "/v1/info", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        return Check("server", WARN, f"{url} answers /health but not /v1/info ({type(e).__name__})")
    if r.status_code in (401, 403):
        return Check("server", FAIL, f"{url} rejects {'the' if token else 'a missing'} token "
                     f"(HTTP {r.status_code})",
                     "set SBX_TOKEN, or run where $SBX_HOME/token is the server's token")
    if r.status_code != 200:
        return Check("server", WARN, f"{url}/v1/info answered HTTP {r.status_code}")
    try:
        info = r.json()
    except ValueError:
        info = {}
    detail = (f"{url}: sbx {info.get('version', '?')}, runtime {info.get('runtime', '?')}, "
              f"{info.get('runsc_version') or 'runsc ?'}, "
              f"{info.get('sandboxes_running', '?')} sandboxes running")
    if info.get("devices_locked") is False:
        return Check("server", WARN, detail + ", device lockdown OFF",
                     "the devices cgroup could not be locked down (see the server log)")
    return Check("server", OK, detail)


def run_checks() -> list[Check]:
    checks: list[Check] = []
    for name, fn in (("runsc", _runsc_checks), ("platform", lambda: [_platform_check()]),
                     ("cgroups", _cgroup_checks), ("GPUs", _gpu_checks),
                     ("host", _host_checks),
                     ("SBX_HOME", _home_checks), ("server", lambda: [_server_check()])):
        try:
            checks.extend(fn())
        except Exception as e:  # a broken check must not hide the others
            checks.append(Check(name, FAIL, f"check crashed: {type(e).__name__}: {e}"))
    return checks


_COLORS = {OK: "green", WARN: "yellow", FAIL: "red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(as_json: bool) -> None:
    """Check that this machine can run sandboxes (runsc, cgroups, GPUs, root, disk, server)."""
    checks = run_checks()
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        click.echo(json.dumps({"version": __version__, "ok": not failed,
                               "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        click.echo(f"sbx doctor (sandbox-service {__version__})")
        width = max(len(c.name) for c in checks)
        for c in checks:
            status = click.style(c.status.ljust(4), fg=_COLORS[c.status], bold=c.status != OK)
            click.echo(f"  {status}  {c.name.ljust(width)}  {c.detail}")
            if c.hint and c.status != OK:
                click.echo(f"        {' ' * width}  -> {c.hint}")
        n_warn = sum(c.status == WARN for c in checks)
        n_fail = sum(c.status == FAIL for c in checks)
        click.echo(f"{n_fail} failed, {n_warn} warnings" if n_fail or n_warn else "all checks passed")
    if failed:
        raise click.exceptions.Exit(1)
