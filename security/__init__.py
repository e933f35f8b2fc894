"""Security layer: tokens, resource policy (network policy, secrets and audit come later).

Must not import the server or runtimes.
"""

from ._limits import ResourcePolicy, host_memory_mib
from ._tokens import ensure_admin_token, read_token, token_matches, token_path

__all__ = ["ResourcePolicy", "ensure_admin_token", "host_memory_mib", "read_token",
           "token_matches", "token_path"]
