"""Unguessable tunnel URLs (server layer): `sb.tunnels()[port].url` works from any HTTP
client or browser with no header, as Modal's do.

A tunnel's token is `<sandbox id>-<port>-<mac>`, the mac an HMAC-SHA256 of the sandbox and
port under a key kept in `$SBX_HOME/tunnel.key` (made once, 0600), 130 bits in base32. Nothing
is stored per tunnel: the token names its sandbox and port, the mac proves the server minted
it, and it dies with the sandbox (the proxy answers only for a running sandbox that declared
the port). The token fits one DNS label (at most 63 characters), so with SBX_WEB_DOMAIN it is
also a host name: `<token>.<domain>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

_TOKEN = re.compile(r"^(sb-[a-z0-9]{20})-([0-9]{1,5})-([a-z2-7]{26})$")


class TunnelKeys:
    def __init__(self, home: str):
        path = os.path.join(home, "tunnel.key")
        try:
            with open(path, "rb") as f:
                self._key = f.read()
        except FileNotFoundError:
            key = os.urandom(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            self._key = key
        if len(self._key) < 32:
            raise RuntimeError(f"{path} is damaged (shorter than 32 bytes): remove it; every "
                               "tunnel URL handed out so far then stops working")

    def _mac(self, sandbox_id: str, port: int) -> str:
        digest = hmac.new(self._key, f"{sandbox_id}:{port}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower()[:26]

    def token(self, sandbox_id: str, port: int) -> str:
        return f"{sandbox_id}-{port}-{self._mac(sandbox_id, port)}"

    def parse(self, token: str) -> tuple[str, int] | None:
        """(sandbox id, port) of a token this server minted, else None."""
        m = _TOKEN.match(token.lower())
        if m is None:
            return None
        sandbox_id, port = m.group(1), int(m.group(2))
        if not hmac.compare_digest(m.group(3), self._mac(sandbox_id, port)):
            return None
        return sandbox_id, port
