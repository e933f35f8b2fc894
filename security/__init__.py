"""Security layer: tokens, resource policy, network policy data (secrets and audit come later).

Must not import the server or runtimes.
"""

from ._keyfile import private_sqlite
from ._limits import ResourcePolicy, host_memory_mib
from ._network import BLOCKED_V4, BLOCKED_V6, is_blocked_address
from ._tokens import ensure_admin_token, read_token, token_matches, token_path

__all__ = ["BLOCKED_V4", "BLOCKED_V6", "ResourcePolicy", "ensure_admin_token",
           "host_memory_mib", "is_blocked_address", "private_sqlite", "read_token",
           "token_matches", "token_path"]
