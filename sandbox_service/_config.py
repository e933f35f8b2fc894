"""Where things live: SBX_HOME, SBX_URL, SBX_TOKEN (public layer, stdlib only).

Shared by the SDK, the CLI and the server so all three agree on defaults.
"""

from __future__ import annotations

import os

DEFAULT_PORT = 8470
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


def sbx_home() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get("SBX_HOME") or "~/.sbx"))


def sbx_url() -> str:
    return (os.environ.get("SBX_URL") or DEFAULT_URL).rstrip("/")


def sbx_token() -> str | None:
    """SBX_TOKEN, else the contents of $SBX_HOME/token, else None."""
    token = os.environ.get("SBX_TOKEN")
    if token:
        return token.strip()
    try:
        with open(os.path.join(sbx_home(), "token")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def in_image_build() -> bool:
    """True while Image.run_function imports the user's module in a build container."""
    return os.environ.get("SBX_IMAGE_BUILD") == "1"
