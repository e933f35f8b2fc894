"""The agent's socket directory, the one host directory a sandbox can write (runtimes layer).

Must not import the server. runsc (--host-uds=create) makes the agent's listening socket
in it, bind-mounted at /.sbx/run. Root in the sandbox can write there too, so it is a tiny
tmpfs of its own rather than a directory of the host's disk: at most `SIZE_KIB` KiB and
`INODES` files, directories or symlinks, then ENOSPC; nothing written there reaches a
disk. `nosymfollow` makes the host never follow a symlink planted there (the agent client
also opens the socket with O_NOFOLLOW), and nodev/nosuid/noexec hold as usual.
Teardown is the disk module's: it unmounts everything under the sandbox's directory.
"""

from __future__ import annotations

import ctypes
import errno
import os

SIZE_KIB = 64
INODES = 16
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_NOSYMFOLLOW = 0x2, 0x4, 0x8, 0x100


def mount(path: str) -> None:
    """Mount the bounded tmpfs on the (empty, existing) directory `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    data = f"size={SIZE_KIB}k,nr_inodes={INODES},mode=0700".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    for extra in (_MS_NOSYMFOLLOW, 0):  # nosymfollow needs Linux 5.10
        if libc.mount(b"sbx-run", os.fsencode(path), b"tmpfs", flags | extra, data) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    raise OSError(err, f"cannot mount the agent's socket directory (tmpfs) on {path}: "
                  f"{os.strerror(err)}")
