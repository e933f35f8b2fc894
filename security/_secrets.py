"""Named secrets at rest (security layer). Must not import the server, FastAPI or runtimes.

Values are sealed with AES-256-GCM under a key kept OUTSIDE the state database, in
`$SBX_HOME/secrets.key` (32 random bytes, mode 0600, created once with O_EXCL so two
servers starting at once agree on one key). A copy of state.db alone therefore exposes
secret names and key names, never values; back up secrets.key separately (and keep it as
private as the admin token): without it, stored secrets cannot be read back.

The secret's owner and name are the AEAD associated data, so a ciphertext copied onto
another name's row, or into another principal's namespace, fails to open (SecretCorrupted)
instead of handing out the wrong value. (The admin's secrets keep the v1 associated data,
the name alone, which is what they were sealed with before secrets had owners.)
Blob layout: b"\\x01" (version) + 12-byte nonce + ciphertext||tag of canonical JSON.
"""

from __future__ import annotations

import json
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._keyfile import ensure_key_file

SECRET_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 64 * 1024
_VERSION = b"\x01"
_KEY_BYTES = 32


class SecretCorrupted(Exception):
    """A stored secret does not decrypt under this server's key and name."""


def secrets_key_path(home: str) -> str:
    return os.path.join(home, "secrets.key")


def ensure_secrets_key(home: str) -> bytes:
    """Return the at-rest key, creating `$SBX_HOME/secrets.key` (0600) on first use."""
    path = secrets_key_path(home)
    key = ensure_key_file(path, lambda: os.urandom(_KEY_BYTES))
    if len(key) != _KEY_BYTES:
        raise SecretCorrupted(f"{path} is {len(key)} bytes, not {_KEY_BYTES}: it is not a "
                              "secrets key (restore it from your backup)")
    return key


def check_secret(name: str, env: dict[str, str]) -> None:
    """ValueError naming the first problem: bad name, bad key, NUL byte, too big."""
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise ValueError(f"secret name {name!r} is not valid: 1-64 of [a-zA-Z0-9._-], "
                         "starting with a letter or digit")
    total = 0
    for k, v in env.items():
        if not isinstance(k, str) or not ENV_NAME_RE.match(k):
            raise ValueError(f"secret key {k!r} is not a valid environment variable name")
        if not isinstance(v, str) or "\x00" in v:
            raise ValueError(f"secret key {k}: the value must be a string without NUL bytes")
        total += len(k.encode()) + len(v.encode()) + 2
    if total > MAX_SECRET_BYTES:
        raise ValueError(f"secret {name!r} is {total} bytes; the limit is {MAX_SECRET_BYTES}")


class SecretBox:
    """Seal and open secret values under one key, bound to the secret's name."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    @classmethod
    def for_home(cls, home: str) -> "SecretBox":
        return cls(ensure_secrets_key(home))

    @staticmethod
    def _aad(name: str, owner: str) -> bytes:
        if owner == "admin":
            return b"sbx-secret:v1:" + name.encode()
        return b"sbx-secret:v2:" + owner.encode() + b"\x00" + name.encode()

    def seal(self, name: str, env: dict[str, str], owner: str = "admin") -> bytes:
        nonce = os.urandom(12)
        plain = json.dumps(env, sort_keys=True, separators=(",", ":")).encode()
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, self._aad(name, owner))

    def open(self, name: str, blob: bytes, owner: str = "admin") -> dict[str, str]:
        blob = bytes(blob)
        if len(blob) < 1 + 12 + 16 or blob[:1] != _VERSION:
            raise SecretCorrupted(f"secret {name!r}: stored value is not in a known format")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], self._aad(name, owner))
        except InvalidTag:
            raise SecretCorrupted(
                f"secret {name!r} cannot be decrypted: it was written under another name or "
                "another secrets.key, or was altered; create it again") from None
        return json.loads(plain)
