"""Security layer: admin token, API keys, secrets at rest, resource and network policy data,
the audit log.

Must not import the server, the SDK or runtimes. Other packages import these names from
`security`, never from its private modules.
"""

from ._apikeys import ADMIN, PRINCIPAL_RE, KeyStore, Principal
from ._audit import AuditLog
from ._keyfile import ensure_key_file, private_sqlite
from ._limits import ResourcePolicy, host_memory_mib
from ._network import BLOCKED_V4, BLOCKED_V6, is_blocked_address
from ._secrets import SecretBox, SecretCorrupted, check_secret
from ._tokens import ensure_admin_token, read_token, token_matches, token_path

__all__ = ["ADMIN", "AuditLog", "BLOCKED_V4", "BLOCKED_V6", "KeyStore", "PRINCIPAL_RE",
           "Principal", "ResourcePolicy", "SecretBox", "SecretCorrupted", "check_secret",
           "ensure_admin_token", "ensure_key_file", "host_memory_mib", "is_blocked_address",
           "private_sqlite", "read_token", "token_matches", "token_path"]
