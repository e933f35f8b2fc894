"""Small secret files the service makes once (security layer; stdlib only): the admin
token, the secrets key, the build-secret HMAC key; and `private_sqlite`, the one way the
service opens its SQLite databases (state, keys, audit), private to its user.

Written whole (0600, fsynced) to a private temporary file first and then linked into
place, which fails if the file exists: whoever links first wins, everyone else reads the
winner's complete file, and a crash leaves no empty key behind.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Callable


def ensure_key_file(path: str, make: Callable[[], bytes]) -> bytes:
    """The content of `path`, creating it (0600) with `make()` if it does not exist."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    data = make()
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process won: its file is complete
            with open(path, "rb") as f:
                return f.read()
    finally:
        os.unlink(tmp)
    return data


def private_sqlite(path: str) -> sqlite3.Connection:
    """Connect to the SQLite database at `path`, made 0600 first (created so if missing):
    SQLite gives its -wal and -shm files the database's mode, and any that an older
    version left readable to others are tightened too."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for p in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)
