"""Loop-mounted ext4 filesystems of a fixed size (runtimes layer). Must not import the server.

What both host-side quotas share: a sandbox's writable disk (gvisor/_disk.py) and a
principal's volumes (_volume_disk.py). A sparse image file holds an ext4 that the host
kernel mounts through a loop device, so a write past its size gets ENOSPC, inside a gVisor
sandbox (through the gofer) as on the host. `mount -o loop` sets autoclear: unmounting
the last mount of the ext4 frees the loop device.

Lookups read /proc/self/mountinfo and /sys/block/loop*, so they are stateless and work after
a server restart.
"""

from __future__ import annotations

import glob
import os
import shutil

from ._errors import RuntimeFault
from ._hostcmd import HostCommandError, run_command

CMD_TIMEOUT_S = 120.0  # mkfs.ext4, mount, umount, losetup, resize2fs
TOOLS = ("mkfs.ext4", "mount", "umount", "losetup")
# no blocks reserved for root, one inode per 8 KiB (package trees are many small files),
# inode tables initialised lazily
MKFS_ARGS = ("-q", "-F", "-m", "0", "-i", "8192", "-E", "lazy_itable_init=1,nodiscard")


class LoopFsError(RuntimeFault):
    """A loop-mounted filesystem could not be made, mounted or unmounted."""


def unavailable(*need: str) -> str | None:
    """Why loop-mounted ext4 cannot work on this host (None: it can). `need` names other
    filesystems the caller also needs (e.g. "overlay")."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return (f"{', '.join(missing)} not found: install e2fsprogs and mount "
                "(`apt-get install e2fsprogs mount`)")
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing): `modprobe loop`"
    try:
        with open("/proc/filesystems") as f:
            fss = {line.split()[-1] for line in f if line.strip()}
    except OSError:
        fss = set()
    for fs in (*need, "ext4"):
        if fs not in fss:
            return f"the kernel has no {fs} filesystem: `modprobe {fs}`"
    return None


async def run(*argv: str, check: bool = True) -> tuple[int, str]:
    """One disk command through the host-command runner; a failure is a LoopFsError."""
    try:
        res = await run_command(argv, check=check, merge_stderr=True, timeout_s=CMD_TIMEOUT_S)
    except HostCommandError as e:
        raise LoopFsError(str(e)) from None
    return res.returncode if res.returncode is not None else -1, res.out.strip()


async def make_ext4(img: str, size_mib: int, *, journal: bool) -> None:
    """A fresh sparse image of `size_mib` MiB holding an empty ext4 (host blocks are used
    only as it is written). `img` must not exist."""
    fd = os.open(img, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size_mib * 1024 * 1024)
    finally:
        os.close(fd)
    await run("mkfs.ext4", *MKFS_ARGS, *(() if journal else ("-O", "^has_journal")), img)


async def mount_ext4(source: str, point: str) -> None:
    """Mount the ext4 in `source` (an image file, or a loop device already attached to
    one) at `point`: nodev (a device node made inside can never be opened), nosuid."""
    opts = "nodev,nosuid,noatime" + ("" if source.startswith("/dev/") else ",loop")
    await run("mount", "-t", "ext4", "-o", opts, source, point)


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    prefix = prefix.rstrip("/")
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split()[4])
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def loops_backed_by(prefix: str, *, exact: bool = False) -> list[str]:
    """Loop devices whose backing file is under `prefix` (or is `prefix` itself, with
    `exact`), e.g. ["/dev/loop3"]."""
    found = []
    prefix = prefix.rstrip("/")
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(path) as f:
                backing = f.read().strip()
        except OSError:
            continue
        backing = backing.removesuffix(" (deleted)")
        if backing == prefix if exact else backing.startswith(prefix + "/"):
            found.append("/dev/" + path.split("/")[3])
    return sorted(found)
