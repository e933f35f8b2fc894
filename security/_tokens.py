"""The admin token (security layer). Must not import the server, FastAPI or runtimes.

Written on first start to SBX_HOME/token with mode 0600 (created with O_EXCL so two
servers starting at once agree on one token); compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets

TOKEN_PREFIX = "sbx_"


def token_path(home: str) -> str:
    return os.path.join(home, "token")


def ensure_admin_token(home: str) -> str:
    """Return the admin token, creating it (0600) if it does not exist yet."""
    os.makedirs(home, mode=0o700, exist_ok=True)
    path = token_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: str) -> str:
    st = os.stat(path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o600)  # never leave the admin token readable by others
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it and restart `sbx serve` to make a new token")
    return token


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
