"""Network policy data: the address ranges no sandbox, build step or server-side fetch on
a sandbox's behalf may reach (security layer; must not import the server or runtimes).

The same list drives the nftables rules of sandbox egress (runtimes) and the check of
registry hosts the server pulls from (images), so the two cannot disagree.
"""

from __future__ import annotations

import ipaddress

# Private, loopback, link-local (cloud metadata lives at 169.254.169.254), CGNAT,
# IETF-reserved, benchmarking, multicast and future-use ranges. Documentation ranges
# (192.0.2/24, 198.51.100/24, 203.0.113/24) are not in it: they carry real traffic on
# some networks (a TLS-intercepting proxy here answers from 203.0.113.x).
BLOCKED_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4",
)
BLOCKED_V6 = ("::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
              "64:ff9b::/96")
_NETS = [ipaddress.ip_network(n) for n in BLOCKED_V4 + BLOCKED_V6]


def is_blocked_address(addr: str) -> bool:
    """True if `addr` (IPv4 or IPv6, an IPv4-mapped one included) is in a blocked range."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in _NETS)
