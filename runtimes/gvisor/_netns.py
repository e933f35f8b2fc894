"""Egress networking for gVisor sandboxes: one network namespace per sandbox (runtimes layer).

Must not import the server. A sandbox with egress gets:
  - a fresh netns `sbx<key>-<container id>` (runsc strips the addresses of the netns it is
    given, so namespaces are never shared), a veth pair `sbxh<hash>` (host) / `sbxs<hash>`
    (sandbox) with a /30 out of `subnet`, and a default route via the host end;
  - host-side nftables rules in one table per SBX_HOME (`inet sbx_<key>`), enforced on the
    peer side because rules inside the sandbox's own netns do not filter gVisor traffic
    (it uses AF_PACKET; RUNSC.md):
      * nothing from a sandbox reaches the host itself (every address, the API port too);
      * private, loopback, link-local (cloud metadata), CGNAT, multicast and reserved
        ranges, and the host's directly connected subnets, are refused;
      * the host's DNS resolvers are the one exception (port 53 only), so names resolve;
      * no IPv6 leaves a sandbox; nothing initiates a connection into a sandbox, and
        sandboxes cannot reach each other;
      * per sandbox, a verdict map keyed by its host-side veth name (`egress`) says what is
        left: `accept` (open egress, what image builds get) or a jump to the sandbox's own
        chain `allow_<veth>` that accepts only its CIDR allowlist and rejects the rest.
        Keyed by the host-side interface, so nothing done inside the sandbox (a spoofed
        source address, also dropped) can pick another sandbox's policy;
      * what is left is NATed out of the host's default route;
      * a sandbox with any allowlist (cidr and/or domain; DNS pinning): every DNS packet
        it sends (UDP
        and TCP port 53, whatever the destination) is DNAT'ed to its own listener of the
        service's resolver (_dns.py) on the host end of its veth (map `dns_redirect`,
        keyed by the incoming veth), it may send no DNS anywhere else (set `dns_pinned`),
        and its chain also accepts the addresses that resolver answered with, which sit
        in its own set `dom_<veth>` with a timeout. The chain accepts `ct state
        established` first, so a pin that expires never cuts a connection it allowed (a
        connection is established only after its first packet passed the checks).
Each sandbox's policy is also written to `state_dir/egress/<id>.json`, so a server that
rebuilds the table (first egress after a restart) puts the live sandboxes' entries back in
the same transaction. This is the egress of image builds (package registries) and of
sandboxes created with block_network=False (optionally with a cidr_allowlist and/or a
domain_allowlist; the stored policy then also has "domains"). `net.ipv4.ip_forward` is
switched on the first time egress is used (logged): NAT needs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import os
import re

from security import BLOCKED_V4

from ._dns import MAX_TCP_CONNS, DomainResolver, parse_upstreams
from ._netcmd import NetworkSetupError
from ._netcmd import run as _run
from ._pinning import MAX_PINS, DnsPinning
from ._pinning import ct_mark as _ct_mark

log = logging.getLogger("sbx.runtime.netns")

NETNS_DIR = "/run/netns"
DEFAULT_SUBNET = "10.231.0.0/16"
ALWAYS_BLOCKED = BLOCKED_V4  # the service's one list (security/_network.py)
HOST_IF_PREFIX = "sbxh"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
FORWARD_MARKER = "/run/sbx-ip-forward"
SANDBOX_IF_PREFIX = "sbxs"
# a sandbox's open TCP connections to its resolver, counted by the kernel (the listener
# itself closes those beyond MAX_TCP_CONNS; this also bounds what waits to be accepted)
MAX_DNS_TCP_CONNS = 2 * MAX_TCP_CONNS
POLICY_DIR = "egress"  # under state_dir: <container id>.json, {"allow": null | [cidr, ...]}
#                       plus "domains": [pattern, ...] for DNS pinning (absent: none)


def host_resolvers(path: str = "/etc/resolv.conf", loopback: bool = False) -> list[str]:
    """IPv4 nameservers of the host a sandbox can use (loopback ones cannot be reached,
    except by the service's own resolver: `loopback=True`)."""
    found = []
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"\s*nameserver\s+(\S+)", line)
                if not m:
                    continue
                try:
                    addr = ipaddress.ip_address(m.group(1))
                except ValueError:
                    continue
                if addr.version == 4 and (loopback or not addr.is_loopback):
                    found.append(str(addr))
    except OSError:
        pass
    return found


class EgressNetworks(DnsPinning):
    """Creates and removes per-sandbox namespaces and owns the host's nftables table."""

    def __init__(self, key: str, state_dir: str, *, subnet: str = DEFAULT_SUBNET,
                 resolvers: list[str] | None = None, dns_upstream: str | None = None):
        self.key = key
        self.table = f"sbx_{key}"
        self.state_dir = state_dir
        self.subnet = ipaddress.ip_network(subnet)
        self.resolvers = host_resolvers() if resolvers is None else list(resolvers)
        self._ready = False
        self._lock = asyncio.Lock()
        self.mtu = 1500
        # DNS pinning: upstreams of the service's resolver (SBX_DNS_UPSTREAM, else the
        # host's resolvers), the resolver itself (made on first use), what is pinned
        self.dns_upstreams = parse_upstreams(
            dns_upstream, host_resolvers(loopback=True) if resolvers is None else self.resolvers)
        self._dns: DomainResolver | None = None
        # one port for every listener of this server (each on its own veth address), the
        # same after a restart: a conntrack entry made before still reaches a listener
        self.dns_port = 20000 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10000
        self._pinned: dict[str, dict[str, float]] = {}  # cid -> address -> expiry (monotonic)
        self._blocked_nets = [ipaddress.IPv4Network(n) for n in ALWAYS_BLOCKED] + [self.subnet]

    # ---- names ------------------------------------------------------------------------
    def ns_name(self, cid: str) -> str:
        return f"sbx{self.key[:6]}-{cid}"

    def ns_path(self, cid: str) -> str:
        return os.path.join(NETNS_DIR, self.ns_name(cid))

    def has(self, cid: str) -> bool:
        return os.path.exists(self.ns_path(cid))

    @staticmethod
    def _ifnames(cid: str) -> tuple[str, str]:
        h = hashlib.sha256(cid.encode()).hexdigest()[:10]
        return HOST_IF_PREFIX + h, SANDBOX_IF_PREFIX + h

    def known(self) -> set[str]:
        """Container ids that have a namespace or a stored egress policy of ours."""
        return self._namespaces() | set(self._policies())

    def _namespaces(self) -> set[str]:
        prefix = f"sbx{self.key[:6]}-"
        try:
            return {n[len(prefix):] for n in os.listdir(NETNS_DIR) if n.startswith(prefix)}
        except OSError:
            return set()

    # ---- per-sandbox policy (stored, so a rebuilt table keeps it) ------------------------
    def _policy_path(self, cid: str) -> str:
        return os.path.join(self.state_dir, POLICY_DIR, cid + ".json")

    def _policies(self) -> dict[str, tuple[list[str] | None, list[str]]]:
        """Stored policies: container id -> (CIDR allowlist (None: open egress), domains)."""
        found: dict[str, tuple[list[str] | None, list[str]]] = {}
        try:
            names = os.listdir(os.path.join(self.state_dir, POLICY_DIR))
        except OSError:
            return found
        for name in names:
            if name.endswith(".json"):
                found[name[:-5]] = self._policy(name[:-5])
        return found

    def _policy(self, cid: str) -> tuple[list[str] | None, list[str]]:
        """One stored policy; a file without "domains" (older servers) has none."""
        try:
            with open(self._policy_path(cid)) as f:
                pol = json.load(f)
            allow, domains = pol["allow"], [str(d) for d in pol.get("domains") or ()]
            return (None if allow is None and not domains else [
                str(ipaddress.IPv4Network(a)) for a in allow or ()], domains)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [], []  # unreadable: fail closed (DNS only)

    def _policy_rules(self, cid: str, allow: list[str] | None, domains: list[str] = (),
                      pins: dict[str, int] | None = None) -> str:
        """nft statements that give `cid` its policy (the table and map must exist).
        With `domains`: its DNS is pinned (see the module docstring); `pins` are addresses
        to put back in its set (address -> seconds left), after a table rebuild."""
        hif, _ = self._ifnames(cid)
        if allow is None and not domains:
            return f'add element inet {self.table} egress {{ "{hif}" : accept }}\n'
        chain = f"allow_{hif}"
        # overlapping entries would be conflicting intervals in one anonymous set
        nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in allow or ())
        # every restricted sandbox (a cidr_allowlist, a domain_allowlist or both) has its
        # DNS answered by the service's resolver: names off its domain list (all names, with
        # a cidr_allowlist alone) never go upstream, where the query name itself would be a
        # way out. A connection this chain let in is marked as this sandbox's and later
        # accepted as established even once its pin expired; the mark (unique per sandbox)
        # keeps a stale conntrack entry of an earlier sandbox with the same address from
        # counting
        mark = f" ct mark set {_ct_mark(cid):#x}"
        accept = f"    ip daddr {{ {', '.join(map(str, nets))} }}{mark} accept\n" if allow else ""
        elems = ", ".join(f"{a} timeout {s}s" for a, s in (pins or {}).items())
        pinned = (f"add set inet {self.table} dom_{hif} "
                  f"{{ type ipv4_addr; flags timeout; size {MAX_PINS}; }}\n"
                  + (f"add element inet {self.table} dom_{hif} {{ {elems} }}\n" if elems else "")
                  + f'add element inet {self.table} dns_pinned {{ "{hif}" }}\n')
        accept = (f"    ct state established,related ct mark {_ct_mark(cid):#x} accept\n"
                  f"{accept}    ip daddr @dom_{hif}{mark} accept\n")
        return (f"{pinned}add chain inet {self.table} {chain}\n"
                f"flush chain inet {self.table} {chain}\n"
                f"table inet {self.table} {{\n  chain {chain} {{\n{accept}"
                f"    reject with icmp type admin-prohibited\n  }}\n}}\n"
                f'add element inet {self.table} egress {{ "{hif}" : jump {chain} }}\n')

    def resolv_conf(self, pinned: bool = False) -> str:
        """A resolv.conf for sandboxes (written once under state_dir), naming the resolvers
        the rules let through. `pinned` (a domain allowlist): any address leaving the
        sandbox will do, every DNS packet is redirected to the service's resolver."""
        path = os.path.join(self.state_dir, "resolv-pinned.conf" if pinned else "resolv.conf")
        names = self.resolvers or ([str(self.subnet[1])] if pinned else [])
        body = "".join(f"nameserver {r}\n" for r in names) or "# no usable resolver\n"
        try:
            with open(path) as f:
                if f.read() == body:
                    return path
        except OSError:
            pass
        with open(path + ".tmp", "w") as f:
            f.write(body)
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
        return path

    # ---- host rules -------------------------------------------------------------------
    def _host_subnets(self, out: str) -> list[str]:
        nets = []
        for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out):
            net = ipaddress.ip_interface(m.group(1)).network
            if not net.subnet_of(self.subnet):
                nets.append(str(net))
        return nets

    def ruleset(self, host_subnets: list[str], forward_only_sandboxes: bool = False,
                policies: dict[str, tuple[list[str] | None, list[str]]] | None = None,
                pins: dict[str, dict[str, int]] | None = None) -> str:
        blocked = ", ".join(sorted(set(ALWAYS_BLOCKED) | set(host_subnets)))
        dns = "".join(
            f'    iifname "{HOST_IF_PREFIX}*" ip daddr {r} meta l4proto {{ tcp, udp }} th dport 53 accept\n'
            for r in self.resolvers)
        return (
            f"table inet {self.table} {{\n"
            f"  set blocked4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {blocked} }} }}\n"
            "  map egress { type ifname : verdict; }\n"
            # DNS pinning: the veths whose DNS goes only to the service's resolver, and
            # where (the resolver's listener for that veth, on the veth's host end)
            "  set dns_pinned { type ifname; }\n"
            "  map dns_redirect { type ifname : ipv4_addr . inet_service; }\n"
            # TCP connections to port 53 each veth has open (to its resolver listener, a
            # file descriptor each in the server): counted, refused beyond a bound
            "  set dns_tcp { type ifname; flags dynamic; size 65535; }\n"
            "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
            f'    iifname "{HOST_IF_PREFIX}*" meta l4proto {{ tcp, udp }} th dport 53 '
            "dnat ip to iifname map @dns_redirect\n  }\n"
            "  chain input {\n    type filter hook input priority -10; policy accept;\n"
            # only DNS that a DNAT like the one above sent to the veth's own address (where
            # its resolver listener is) reaches the host. Not keyed to this table's
            # listeners: every server's table on the host must let every server's
            # redirected DNS through, or one would drop the other's
            f'    iifname "{HOST_IF_PREFIX}*" meta l4proto tcp ct state new ct status dnat '
            "ct original proto-dst 53 add @dns_tcp { iifname ct count over "
            f"{MAX_DNS_TCP_CONNS} }} reject with tcp reset\n"
            f'    iifname "{HOST_IF_PREFIX}*" ip saddr {self.subnet} meta l4proto {{ tcp, udp }} '
            "ct status dnat ct original proto-dst 53 fib daddr . iif type local accept\n"
            f'    iifname "{HOST_IF_PREFIX}*" drop\n  }}\n'
            "  chain forward {\n    type filter hook forward priority -10; policy accept;\n"
            # a spoofed source address (root inside may set one) goes nowhere
            f'    iifname "{HOST_IF_PREFIX}*" ip saddr != {self.subnet} drop\n'
            # a pinned sandbox's DNS never reaches a resolver unfiltered (no listener yet)
            "    iifname @dns_pinned meta l4proto { tcp, udp } th dport 53 "
            "reject with icmp type admin-prohibited\n"
            f"{dns}"
            f'    iifname "{HOST_IF_PREFIX}*" meta nfproto ipv6 drop\n'
            # a smaller MTU on the way out (1400 on some clouds) must not stall TLS handshakes
            f'    iifname "{HOST_IF_PREFIX}*" tcp flags syn tcp option maxseg size set rt mtu\n'
            f'    oifname "{HOST_IF_PREFIX}*" tcp flags syn tcp option maxseg size set rt mtu\n'
            f'    iifname "{HOST_IF_PREFIX}*" ip daddr @blocked4 reject with icmp type admin-prohibited\n'
            f'    oifname "{HOST_IF_PREFIX}*" ct state established,related accept\n'
            f'    oifname "{HOST_IF_PREFIX}*" drop\n'
            # veths of other servers (other SBX_HOMEs, same prefix) are not in our map and
            # fall through: their own table polices them
            f'    iifname "{HOST_IF_PREFIX}*" iifname vmap @egress\n'
            + (f'    iifname != "{HOST_IF_PREFIX}*" oifname != "{HOST_IF_PREFIX}*" drop\n'
               if forward_only_sandboxes else "")
            + "  }\n"
            "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {self.subnet} oifname != "{HOST_IF_PREFIX}*" masquerade\n  }}\n'
            "}\n"
            + "".join(self._policy_rules(cid, allow, domains, (pins or {}).get(cid))
                      for cid, (allow, domains) in (policies or {}).items()))

    async def _ensure_host(self) -> None:
        if self._ready:
            return
        addrs = await _run("ip", "-o", "-4", "addr", "show")
        with open(IP_FORWARD) as f:
            flip = f.read().strip() != "1"
        if flip:  # remembered host-wide (until reboot): only sandbox traffic is forwarded
            with open(FORWARD_MARKER, "w") as f:
                f.write("sandbox-service enabled net.ipv4.ip_forward for sandbox egress\n")
        ours = os.path.exists(FORWARD_MARKER)
        # replace the table in one transaction: no moment without rules
        # with the policies of sandboxes that are still up (a restarted server)
        live = self._namespaces()
        policies = {c: a for c, a in self._policies().items() if c in live}
        host_subnets = self._host_subnets(addrs)
        pins = await self._current_pins(policies)  # kept across the rebuild
        rules = (f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
                 + self.ruleset(host_subnets, forward_only_sandboxes=ours,
                                policies=policies, pins=pins))
        for cid in policies:  # listeners of this process (a table dropped and made again)
            where = self._dns.where(cid) if self._dns else None
            if where:
                rules += self._redirect_rule(cid, *where)
        try:
            await _run("nft", "-f", "-", stdin=rules.encode())
        except FileNotFoundError as e:
            raise NetworkSetupError("nft (nftables) is not installed: run `apt-get install "
                                    "nftables iproute2`, or keep block_network=True") from e
        if flip:
            log.warning("enabling net.ipv4.ip_forward: sandbox egress is NATed by the host "
                        "(other traffic is not forwarded; undone when the last server stops)")
            with open(IP_FORWARD, "w") as w:
                w.write("1")
        self.mtu = await _uplink_mtu()
        self._blocked_nets = ([ipaddress.IPv4Network(n) for n in ALWAYS_BLOCKED] + [self.subnet]
                              + [ipaddress.IPv4Network(n) for n in host_subnets])
        if not self.resolvers:
            log.warning("no non-loopback DNS resolver in /etc/resolv.conf: sandboxes with "
                        "egress cannot resolve names")
        self._ready = True

    # ---- per sandbox ------------------------------------------------------------------
    async def _free_slot(self) -> ipaddress.IPv4Network:
        out = await _run("ip", "-o", "-4", "addr", "show")
        used = {ipaddress.ip_interface(m.group(1)).network
                for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/30)", out)}
        for net in self.subnet.subnets(new_prefix=30):
            if net not in used:
                return net
        raise NetworkSetupError(f"no free address left in {self.subnet} for sandbox egress")

    async def create(self, cid: str, allow: list[str] | tuple[str, ...] | None = None,
                     domains: list[str] | tuple[str, ...] | None = None) -> str:
        """Make the sandbox's namespace; returns its path. `allow`: None for open egress
        (minus the always-blocked ranges), else the only IPv4 CIDRs it may reach (DNS to
        the host's resolvers is always let through). `domains`: names (`*.example.com`
        for every name below) whose resolved addresses it may also reach; its DNS then
        goes only to the service's resolver, which answers only those names."""
        domains = list(domains or ())
        allow = None if allow is None and not domains else [
            str(ipaddress.IPv4Network(a, strict=False)) for a in allow or ()]
        async with self._lock:
            path = self._policy_path(cid)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path + ".tmp", "w") as f:  # first: a table rebuilt meanwhile keeps it
                json.dump({"allow": allow, **({"domains": domains} if domains else {})}, f)
            os.replace(path + ".tmp", path)
            await self._ensure_host()
            net = await self._free_slot()
            host_ip, sb_ip = str(net[1]), str(net[2])
            ns = self.ns_name(cid)
            hif, sif = self._ifnames(cid)
            try:
                await _run("ip", "netns", "add", ns)
                await _run("ip", "link", "add", hif, "mtu", str(self.mtu), "type", "veth",
                           "peer", "name", sif, "mtu", str(self.mtu), "netns", ns)
                await _run("ip", "addr", "add", f"{host_ip}/30", "dev", hif)
                await _run("ip", "link", "set", hif, "up")
                await _run("ip", "-n", ns, "addr", "add", f"{sb_ip}/30", "dev", sif)
                await _run("ip", "-n", ns, "link", "set", sif, "up")
                await _run("ip", "-n", ns, "link", "set", "lo", "up")
                await _run("ip", "-n", ns, "route", "add", "default", "via", host_ip)
                await _run("nft", "-f", "-", stdin=self._policy_rules(cid, allow, domains).encode())
                if allow is not None:  # restricted: the service answers its DNS
                    await self._listen(cid, host_ip, sb_ip, domains)
            except BaseException:
                await self.destroy(cid)
                raise
        log.info("egress for %s: %s via %s", cid, sb_ip, hif)
        return self.ns_path(cid)

    async def destroy(self, cid: str) -> None:
        hif, _ = self._ifnames(cid)
        if self._dns:
            await self._dns.forget(cid)
        self._pinned.pop(cid, None)
        await _run("ip", "link", "del", hif, check=False)
        if self.has(cid):
            await _run("ip", "netns", "del", self.ns_name(cid), check=False)
        try:  # the map entry first: the chain cannot go while the map jumps to it
            await _run("nft", "delete", "element", "inet", self.table, "egress",
                       f'{{ "{hif}" }}', check=False)
            await _run("nft", "delete", "chain", "inet", self.table, f"allow_{hif}", check=False)
            await _run("nft", "-f", "-", check=False, stdin=(  # DNS pinning, if it had any
                f'delete element inet {self.table} dns_redirect {{ "{hif}" }}\n').encode())
            await _run("nft", "-f", "-", check=False, stdin=(
                f'delete element inet {self.table} dns_pinned {{ "{hif}" }}\n'
                f"delete set inet {self.table} dom_{hif}\n").encode())
            await _run("nft", "-f", "-", check=False, stdin=(  # its TCP DNS count, if any
                f'delete element inet {self.table} dns_tcp {{ "{hif}" }}\n').encode())
        except FileNotFoundError:
            pass
        try:
            os.unlink(self._policy_path(cid))
        except FileNotFoundError:
            pass

    async def close(self) -> None:
        """Drop the host rules once no sandbox namespace of ours is left; stop the resolver
        (a restarted server starts it again for the sandboxes it re-attaches)."""
        if self._dns:
            await self._dns.close()
            self._dns = None
        if not self._namespaces():  # also a table an earlier server process made
            try:
                await _run("nft", "delete", "table", "inet", self.table, check=False)
                tables = await _run("nft", "list", "tables", check=False)
            except FileNotFoundError:  # no nft installed: no table either
                return
            self._ready = False
            if os.path.exists(FORWARD_MARKER) and not re.search(r"table inet sbx_", tables):
                with open(IP_FORWARD, "w") as w:  # we turned it on; nobody needs it now
                    w.write("0")
                os.unlink(FORWARD_MARKER)
                log.info("net.ipv4.ip_forward switched back off")


async def _uplink_mtu() -> int:
    """MTU of the interface the default route leaves by: sandbox veths use it, so packets
    never need a fragmentation this gVisor does not negotiate."""
    out = await _run("ip", "-o", "route", "show", "default", check=False)
    m = re.search(r"\bdev (\S+)", out)
    if m:
        try:
            with open(f"/sys/class/net/{m.group(1)}/mtu") as f:
                return max(576, min(int(f.read().strip()), 9000))
        except (OSError, ValueError):
            pass
    return 1500
