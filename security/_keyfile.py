"""Small secret files the service makes once (security layer; stdlib only): the admin
token, the secrets key, the build-secret HMAC key.

Created with O_EXCL and mode 0600, written and fsynced before anyone reads them, so two
processes starting at once agree on one value; read back as they are afterwards.
"""

from __future__ import annotations

import os
from typing import Callable


def ensure_key_file(path: str, make: Callable[[], bytes]) -> bytes:
    """The content of `path`, creating it (0600) with `make()` if it does not exist."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            return f.read()
    data = make()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data
