"""DNS pinning's host side: per-sandbox resolver listeners and pinned addresses in nftables
(runtimes layer). Must not import the server.

A mixin of EgressNetworks (_netns.py), which owns the table and these attributes:
`table`, `_lock`, `_ifnames`, `_policy`, `_ensure_host`, `has`, `dns_upstreams`,
`dns_port`, `_dns`, `_pinned`, `_blocked_nets`. The rules themselves (the `dns_redirect`
map, the `dns_pinned` set, each sandbox's `dom_<veth>` set) are in
EgressNetworks.ruleset/_policy_rules; the resolver is _dns.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import time

from ._dns import DomainResolver
from ._netcmd import NetworkSetupError
from ._netcmd import run as _run

log = logging.getLogger("sbx.runtime.netns")

MAX_PINS = 4096  # addresses one sandbox may have pinned at once (its set's `size`)


def ct_mark(cid: str) -> int:
    """The conntrack mark of connections a sandbox's domain chain accepted (unique per
    sandbox, so an earlier sandbox's stale entries on the same address never count)."""
    return int(hashlib.sha256(b"ct-mark:" + cid.encode()).hexdigest()[:8], 16) | 1


class DnsPinning:
    """Starts a sandbox's resolver listener, redirects its DNS there, pins what it answers."""

    def _resolver(self) -> DomainResolver:
        if self._dns is None:
            self._dns = DomainResolver(self.dns_upstreams, self.pin, lambda: self._blocked_nets)
        return self._dns

    def _redirect_rule(self, cid: str, host_ip: str, port: int) -> str:
        hif, _ = self._ifnames(cid)
        return f'add element inet {self.table} dns_redirect {{ "{hif}" : {host_ip} . {port} }}\n'

    async def _listen(self, cid: str, host_ip: str, sb_ip: str, domains: list[str]) -> None:
        try:
            port = await self._resolver().listen(cid, host_ip, sb_ip, domains, port=self.dns_port)
        except OSError as e:
            raise NetworkSetupError(f"the DNS resolver for {cid} could not start: {e}") from e
        self._pinned.setdefault(cid, {})  # pin() pins only for a sandbox that has this
        await _run("nft", "-f", "-", stdin=self._redirect_rule(cid, host_ip, port).encode())

    async def resume(self, cid: str) -> None:
        """After a server restart: put a live sandbox's DNS pinning back (its rules with the
        table, which this rebuilds once, and its resolver listener). Nothing to do for a
        sandbox with open egress."""
        if not self.has(cid):
            return
        allow, domains = self._policy(cid)
        if allow is None:  # open egress: the host's resolvers, nothing to resume
            return
        hif, _ = self._ifnames(cid)
        async with self._lock:
            await self._ensure_host()
            out = await _run("ip", "-o", "-4", "addr", "show", "dev", hif)
            m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/30", out)
            if not m:
                raise NetworkSetupError(f"the veth {hif} of {cid} has no address")
            host_ip = m.group(1)
            sb_ip = str(ipaddress.IPv4Address(host_ip) + 1)
            await self._listen(cid, host_ip, sb_ip, domains)

    async def pin(self, cid: str, addrs: list[str], seconds: int) -> None:
        """Let `cid` reach `addrs` for `seconds` (its resolver answered them). An address
        pinned with at least half of that left is not touched again. Refused (raises) for a
        sandbox whose resolver is gone (a late answer after destroy) and beyond MAX_PINS
        addresses at once (a wildcard list must not grow its set without bound)."""
        hif, _ = self._ifnames(cid)
        now = time.monotonic()
        mine = self._pinned.get(cid)
        if mine is None:
            raise NetworkSetupError(f"{cid} has no DNS pinning (any more): nothing pinned")
        todo = [a for a in addrs if mine.get(a, 0) - now < seconds / 2]
        if not todo:
            return
        for a in [a for a, until in mine.items() if until <= now]:
            del mine[a]  # expired in its set too (same timeout)
        new = sum(1 for a in todo if a not in mine)
        if len(mine) + new > MAX_PINS:
            log.warning("dns: %s has %d addresses pinned (at most %d): not pinning %s",
                        cid, len(mine), MAX_PINS, ", ".join(todo))
            raise NetworkSetupError(f"{cid} already has {len(mine)} addresses pinned (at most "
                                    f"{MAX_PINS}): wait for pins to expire")
        s = f"dom_{hif}"
        # add (a no-op if present), delete, add: one transaction that also refreshes the
        # timeout of an address already there
        rules = "".join(f"add element inet {self.table} {s} {{ {a} timeout {seconds}s }}\n"
                        f"delete element inet {self.table} {s} {{ {a} }}\n"
                        f"add element inet {self.table} {s} {{ {a} timeout {seconds}s }}\n"
                        for a in todo)
        await _run("nft", "-f", "-", stdin=rules.encode())
        if self._pinned.get(cid) is not mine:
            return  # destroyed meanwhile: its set went with it
        for a in todo:
            mine[a] = now + seconds
        log.info("dns: %s may reach %s for %ds", cid, ", ".join(todo), seconds)

    async def _current_pins(self, policies) -> dict[str, dict[str, int]]:
        """Addresses pinned in the table as it is now (cid -> address -> seconds left)."""
        want = {f"dom_{self._ifnames(c)[0]}": c for c, (allow, _) in policies.items()
                if allow is not None}
        if not want:
            return {}
        try:
            out = await _run("nft", "-j", "list", "table", "inet", self.table, check=False)
            items = json.loads(out).get("nftables", []) if out.strip() else []
        except (ValueError, FileNotFoundError):
            return {}
        pins: dict[str, dict[str, int]] = {}
        for item in items:
            st = item.get("set") if isinstance(item, dict) else None
            if not st or st.get("name") not in want:
                continue
            for e in st.get("elem") or ():
                e = e.get("elem") if isinstance(e, dict) else None
                if isinstance(e, dict) and isinstance(e.get("expires"), int) and e["expires"] > 1:
                    try:
                        addr = str(ipaddress.IPv4Address(e.get("val")))
                    except ValueError:
                        continue
                    pins.setdefault(want[st["name"]], {})[addr] = e["expires"]
        return pins
