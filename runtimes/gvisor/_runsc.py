"""The runsc command-line driver (runtimes layer). Must not import the server.

Every call is an argument list run with asyncio (never blocking the loop), logged, with a
timeout. All containers live under one dedicated `--root`. Feature flags are detected from
the installed runsc, never assumed from a version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from typing import Callable

from .._errors import RuntimeFault
from .._hostcmd import run_command

log = logging.getLogger("sbx.runtime.runsc")


class RunscError(RuntimeFault):
    def __init__(self, args: list[str], rc: int | None, stderr: str, log_path: str | None = None):
        tail = [ln.strip() for ln in stderr.strip().splitlines()[-3:] if ln.strip()]
        status = "timed out and was killed" if rc is None else f"exited with code {rc}"
        said = (f"it said: {' | '.join(tail)}" if tail else "it printed nothing"
                + (f" (its log: {log_path})" if log_path else ""))
        super().__init__(f"runsc {' '.join(args[:3])} {status}; {said}")
        self.rc = rc
        self.stderr = stderr


@dataclasses.dataclass
class Features:
    version: str
    flags: frozenset[str]

    @property
    def host_uds_create(self) -> bool:
        return "host-uds" in self.flags

    @property
    def release_date(self) -> int | None:
        """YYYYMMDD from versions like `0.0~20221219.0` or `release-20240807.0`."""
        m = re.search(r"(20\d{6})", self.version)
        return int(m.group(1)) if m else None

    @property
    def statx_bug(self) -> bool:
        """statx with AT_NO_AUTOMOUNT fails with EINVAL (fixed upstream in 2023)."""
        date = self.release_date
        return date is not None and date < 20230601

    @property
    def systrap(self) -> bool:
        """The systrap platform (seccomp traps instead of ptrace stops; runsc's default
        since mid-2023)."""
        date = self.release_date
        return date is not None and date >= 20230601

    def platform(self, wanted: str) -> str:
        """The platform to run: `wanted`, or for "auto" systrap where this runsc has it,
        else ptrace."""
        if wanted != "auto":
            return wanted
        return "systrap" if self.systrap else "ptrace"

    @property
    def nvproxy(self) -> bool:
        return "nvproxy" in self.flags

    @property
    def directfs(self) -> bool:
        return "directfs" in self.flags


def find_runsc() -> str | None:
    return shutil.which("runsc") or next(
        (p for p in ("/usr/bin/runsc", "/usr/local/bin/runsc", "/usr/sbin/runsc") if os.path.exists(p)),
        None)


async def detect_features(binary: str) -> Features:
    async def out(*args: str) -> str:
        res = await run_command([binary, *args], check=False, timeout_s=30)
        return res.out + res.err  # `runsc flags` prints to stderr

    version = (await out("--version")).splitlines()[0].strip() if binary else ""
    flags = frozenset(re.findall(r"^\s+-([a-z0-9-]+)", await out("flags"), re.M))
    return Features(version=version, flags=flags)


@dataclasses.dataclass(frozen=True)
class Profile:
    """How one container was started: its own runsc flags, and the network namespace every
    runsc command for it must run in (runsc's control socket is scoped to it)."""

    flags: tuple[str, ...] = ("--network=none", "--overlay2=root:memory")
    netns: str | None = None


# runsc refuses --network=sandbox in the root network namespace's view of /proc/sys/net
# (fixed upstream in 2024): boot it in a private mount namespace with that directory covered.
_NETNS_BOOT = 'mount -t tmpfs -o ro,size=4k none /proc/sys/net && exec "$@"'


class Runsc:
    """Thin async wrapper over the runsc binary, bound to one --root."""

    def __init__(self, binary: str, root: str, global_flags: list[str],
                 profile_of: Callable[[str], Profile | None] | None = None):
        self.binary = binary
        self.root = root
        self.global_flags = global_flags
        self.profile_of = profile_of or (lambda cid: None)
        os.makedirs(root, mode=0o700, exist_ok=True)

    def argv(self, *args: str, cid: str | None = None, boot: bool = False) -> list[str]:
        prof = (self.profile_of(cid) if cid else None) or Profile()
        argv = [self.binary, "--root", self.root, *self.global_flags, *prof.flags, *args]
        if not prof.netns:
            return argv
        if boot:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NETNS_BOOT,
                    "sh", *argv]
        return ["nsenter", f"--net={prof.netns}", "--", *argv]

    async def call(self, *args: str, cid: str | None = None, boot: bool = False,
                   timeout: float = 30.0, check: bool = True,
                   log_path: str | None = None) -> tuple[int | None, str, str]:
        """Run one runsc command (for container `cid`: with its flags and in its network
        namespace). With `log_path`, stdout is /dev/null and stderr goes to that file
        (O_APPEND): a detached sandbox inherits them, and a pipe would never close
        (RUNSC.md)."""
        argv = self.argv(*args, cid=cid, boot=boot)
        res = await run_command(argv, check=False, timeout_s=timeout, stderr_path=log_path,
                                new_session=True)
        rc, out, err = res.returncode, res.out, res.err
        if log_path and rc != 0:
            with open(log_path, "rb") as f:
                err = f.read()[-4096:].decode(errors="replace")
        if check and rc != 0:
            raise RunscError(list(args), rc, err, log_path)
        return rc, out, err

    def state_file(self, cid: str) -> str:
        return os.path.join(self.root, f"{cid}_sandbox:{cid}.state")

    def read_state(self, cid: str) -> dict | None:
        try:
            with open(self.state_file(cid)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def pids_of(self, cid: str) -> list[int]:
        st = self.read_state(cid) or {}
        pids = [st.get("goferPid"), (st.get("sandbox") or {}).get("pid")]
        return [p for p in pids if isinstance(p, int) and p > 0]

    def known_ids(self) -> set[str]:
        ids = set()
        try:
            for name in os.listdir(self.root):
                if name.endswith(".state") and "_sandbox:" in name:
                    ids.add(name.split("_sandbox:", 1)[0])
        except OSError:
            pass
        return ids

    def remove_state(self, cid: str) -> None:
        for suffix in (".state", ".lock"):
            try:
                os.unlink(os.path.join(self.root, f"{cid}_sandbox:{cid}{suffix}"))
            except FileNotFoundError:
                pass
