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
      * what is left is NATed out of the host's default route.
Each sandbox's policy is also written to `state_dir/egress/<id>.json`, so a server that
rebuilds the table (first egress after a restart) puts the live sandboxes' entries back in
the same transaction. This is the egress of image builds (package registries) and of
sandboxes created with block_network=False (optionally with a cidr_allowlist). `net.ipv4.ip_forward` is
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

log = logging.getLogger("sbx.runtime.netns")

NETNS_DIR = "/run/netns"
DEFAULT_SUBNET = "10.231.0.0/16"
ALWAYS_BLOCKED = BLOCKED_V4  # the service's one list (security/_network.py)
HOST_IF_PREFIX = "sbxh"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
FORWARD_MARKER = "/run/sbx-ip-forward"
SANDBOX_IF_PREFIX = "sbxs"
POLICY_DIR = "egress"  # under state_dir: <container id>.json, {"allow": null | [cidr, ...]}


class NetworkSetupError(Exception):
    """The host could not give a sandbox its network; the message says why."""


async def _run(*argv: str, check: bool = True, stdin: bytes | None = None) -> str:
    log.debug("netns: %s", " ".join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    if check and proc.returncode != 0:
        raise NetworkSetupError(f"{' '.join(argv[:4])} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """IPv4 nameservers of the host a sandbox can use (loopback ones cannot be reached)."""
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
                if addr.version == 4 and not addr.is_loopback:
                    found.append(str(addr))
    except OSError:
        pass
    return found


class EgressNetworks:
    """Creates and removes per-sandbox namespaces and owns the host's nftables table."""

    def __init__(self, key: str, state_dir: str, *, subnet: str = DEFAULT_SUBNET,
                 resolvers: list[str] | None = None):
        self.key = key
        self.table = f"sbx_{key}"
        self.state_dir = state_dir
        self.subnet = ipaddress.ip_network(subnet)
        self.resolvers = host_resolvers() if resolvers is None else list(resolvers)
        self._ready = False
        self._lock = asyncio.Lock()
        self.mtu = 1500

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

    def _policies(self) -> dict[str, list[str] | None]:
        """Stored policies: container id -> CIDR allowlist (None: open egress)."""
        found: dict[str, list[str] | None] = {}
        try:
            names = os.listdir(os.path.join(self.state_dir, POLICY_DIR))
        except OSError:
            return found
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.state_dir, POLICY_DIR, name)) as f:
                    allow = json.load(f)["allow"]
                found[name[:-5]] = None if allow is None else [
                    str(ipaddress.IPv4Network(a)) for a in allow]
            except (OSError, ValueError, KeyError, TypeError):
                found[name[:-5]] = []  # unreadable: fail closed (DNS only)
        return found

    def _policy_rules(self, cid: str, allow: list[str] | None) -> str:
        """nft statements that give `cid` its policy (the table and map must exist)."""
        hif, _ = self._ifnames(cid)
        if allow is None:
            return f'add element inet {self.table} egress {{ "{hif}" : accept }}\n'
        chain = f"allow_{hif}"
        # overlapping entries would be conflicting intervals in one anonymous set
        nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in allow)
        accept = f"    ip daddr {{ {', '.join(map(str, nets))} }} accept\n" if allow else ""
        return (f"add chain inet {self.table} {chain}\n"
                f"flush chain inet {self.table} {chain}\n"
                f"table inet {self.table} {{\n  chain {chain} {{\n{accept}"
                f"    reject with icmp type admin-prohibited\n  }}\n}}\n"
                f'add element inet {self.table} egress {{ "{hif}" : jump {chain} }}\n')

    def resolv_conf(self) -> str:
        """A resolv.conf for sandboxes (written once under state_dir), naming the resolvers
        the rules let through."""
        path = os.path.join(self.state_dir, "resolv.conf")
        body = "".join(f"nameserver {r}\n" for r in self.resolvers) or "# no usable resolver\n"
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
                policies: dict[str, list[str] | None] | None = None) -> str:
        blocked = ", ".join(sorted(set(ALWAYS_BLOCKED) | set(host_subnets)))
        dns = "".join(
            f'    iifname "{HOST_IF_PREFIX}*" ip daddr {r} meta l4proto {{ tcp, udp }} th dport 53 accept\n'
            for r in self.resolvers)
        return (
            f"table inet {self.table} {{\n"
            f"  set blocked4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {blocked} }} }}\n"
            "  map egress { type ifname : verdict; }\n"
            "  chain input {\n    type filter hook input priority -10; policy accept;\n"
            f'    iifname "{HOST_IF_PREFIX}*" drop\n  }}\n'
            "  chain forward {\n    type filter hook forward priority -10; policy accept;\n"
            # a spoofed source address (root inside may set one) goes nowhere
            f'    iifname "{HOST_IF_PREFIX}*" ip saddr != {self.subnet} drop\n'
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
            + "".join(self._policy_rules(cid, allow) for cid, allow in (policies or {}).items()))

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
        rules = (f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
                 + self.ruleset(self._host_subnets(addrs), forward_only_sandboxes=ours,
                                policies=policies))
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

    async def create(self, cid: str, allow: list[str] | tuple[str, ...] | None = None) -> str:
        """Make the sandbox's namespace; returns its path. `allow`: None for open egress
        (minus the always-blocked ranges), else the only IPv4 CIDRs it may reach (DNS to
        the host's resolvers is always let through)."""
        allow = None if allow is None else [str(ipaddress.IPv4Network(a, strict=False))
                                            for a in allow]
        async with self._lock:
            path = self._policy_path(cid)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path + ".tmp", "w") as f:  # first: a table rebuilt meanwhile keeps it
                json.dump({"allow": allow}, f)
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
                await _run("nft", "-f", "-", stdin=self._policy_rules(cid, allow).encode())
            except BaseException:
                await self.destroy(cid)
                raise
        log.info("egress for %s: %s via %s", cid, sb_ip, hif)
        return self.ns_path(cid)

    async def destroy(self, cid: str) -> None:
        hif, _ = self._ifnames(cid)
        await _run("ip", "link", "del", hif, check=False)
        if self.has(cid):
            await _run("ip", "netns", "del", self.ns_name(cid), check=False)
        try:  # the map entry first: the chain cannot go while the map jumps to it
            await _run("nft", "delete", "element", "inet", self.table, "egress",
                       f'{{ "{hif}" }}', check=False)
            await _run("nft", "delete", "chain", "inet", self.table, f"allow_{hif}", check=False)
        except FileNotFoundError:
            pass
        try:
            os.unlink(self._policy_path(cid))
        except FileNotFoundError:
            pass

    async def close(self) -> None:
        """Drop the host rules once no sandbox namespace of ours is left."""
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
