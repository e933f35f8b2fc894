"""Object ids: a type prefix and a fixed-length random part (public layer, stdlib only).

Fixed length matters: runsc matches container ids by prefix, so `sb-1` would be ambiguous
with `sb-11`; every id here has exactly 20 random characters after its prefix.
"""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 20
PREFIXES = {"sandbox": "sb", "app": "ap", "image": "im", "exec": "ex", "function_call": "fc", "function": "fu",
            "context": "cx", "dict": "di", "queue": "qu", "volume": "vo"}


def new_id(kind: str) -> str:
    return PREFIXES[kind] + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))


def is_id(kind: str, value: str) -> bool:
    return bool(re.fullmatch(PREFIXES[kind] + r"-[a-z0-9]{%d}" % ID_LENGTH, value or ""))
