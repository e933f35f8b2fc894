"""Workarounds for old runsc builds, each applied only where detected (runtimes layer).

statx: runsc before mid-2023 rejects statx(..., AT_NO_AUTOMOUNT) with EINVAL, and GNU
coreutils 9 (Debian bookworm) always passes that flag, so `ls` and `stat` fail in every
sandbox. An OCI seccomp rule cannot fix it on that runsc (errnoRet is ignored, so glibc
never sees ENOSYS), so a 1 KB LD_PRELOAD shim clears the flag before the syscall. It is
compiled on the host at startup (needs a C compiler), shipped read-only in the agent
directory, and used only for glibc images. Must not import the server.
"""

from __future__ import annotations

import logging
import os
import shutil

from .._hostcmd import run_sync

log = logging.getLogger("sbx.runtime.compat")

STATX_SHIM = "statx_noautomount.so"
_SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
"""
GLIBC_MARKERS = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6",
                 "/lib64/libc.so.6", "/usr/lib64/libc.so.6")


def build_statx_shim(agent_dir: str) -> str | None:
    """Compile the shim into agent_dir; return its file name, or None (with a warning)."""
    target = os.path.join(agent_dir, STATX_SHIM)
    src = os.path.join(agent_dir, "statx_noautomount.c")
    try:
        with open(src) as f:
            fresh = f.read() == _SOURCE and os.path.exists(target)
    except OSError:
        fresh = False
    if fresh:
        return STATX_SHIM
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log.warning("this runsc breaks `ls`/`stat` in sandboxes (statx AT_NO_AUTOMOUNT); "
                    "install a C compiler (apt-get install gcc) or a newer runsc to fix it")
        return None
    with open(src, "w") as f:
        f.write(_SOURCE)
    tmp = target + ".tmp"
    r = run_sync([cc, "-shared", "-fPIC", "-O2", "-o", tmp, src], check=False, timeout_s=60)
    if r.returncode != 0:
        log.warning("could not build the statx shim (%s): `ls` may fail in sandboxes", r.err.strip())
        return None
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return STATX_SHIM


def is_glibc(rootfs: str) -> bool:
    return any(os.path.lexists(rootfs + m) for m in GLIBC_MARKERS)
