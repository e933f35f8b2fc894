"""The admin token (security layer). Must not import the server, FastAPI or runtimes.

Written on first start to SBX_HOME/token with mode 0600 (created with O_EXCL so two
servers starting at once agree on one token); compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets

from ._keyfile import ensure_key_file

TOKEN_PREFIX = "sbx_"


def token_path(home: str) -> str:
    return os.path.join(home, "token")


def ensure_admin_token(home: str) -> str:
    """Return the admin token, creating it (0600) if it does not exist yet."""
    path = token_path(home)
    ensure_key_file(path, lambda: (TOKEN_PREFIX + secrets.token_urlsafe(32) + "\n").encode())
    return read_token(path)


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
