"""The DNS resolver that enforces a sandbox's `domain_allowlist` (runtimes layer).

Must not import the server. Runs inside the server process on its event loop: one UDP
socket and one TCP listener per sandbox with a domain allowlist, bound to the host end of
that sandbox's veth (an address only that veth's traffic reaches, by a DNAT rule keyed on
the incoming interface, see _netns.py). Which socket a query arrived on says which sandbox
asked; nothing inside the packet is trusted for that.

For each query:
  - a name outside the sandbox's list (or a class other than IN) gets NXDOMAIN, with an
    Extended DNS Error "Prohibited" when the client speaks EDNS; nothing goes upstream;
  - an allowed name asked for A is forwarded (as a fresh query, not the client's bytes) to
    the upstream resolvers; the answer's CNAME chain is followed from the asked name, the
    final A records are kept unless they are in a blocked range (DNS rebinding: an allowed
    name pointing at 10.x, 127.x or 169.254.x opens nothing), the kept addresses are
    pinned in the sandbox's own nft set (awaited before the answer leaves: the program's
    connect comes right after), and the answer is flattened to A records of the asked name;
  - any other type (AAAA, TXT, HTTPS...) of an allowed name is an empty NOERROR answer:
    only A can be pinned (no IPv6 egress), and it keeps TXT tunnels out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import struct
from typing import Awaitable, Callable, Iterable

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("sbx.runtime.dns")

PIN_MIN_S = 600          # a pin lives at least this long, whatever the TTL (clients cache)
PIN_MAX_S = 86400        # and at most a day; the answer's TTL is never above the pin
UPSTREAM_TIMEOUT_S = 3.0
TCP_IDLE_S = 10.0
MAX_INFLIGHT = 64        # queries of one sandbox being answered at once (UDP and TCP);
#                          more are dropped
MAX_TCP_CONNS = 16       # TCP connections one sandbox may hold open; more are closed at once
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

PinFn = Callable[[str, list[str], int], Awaitable[None]]


def normalize_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def domain_matches(name: str, patterns: Iterable[str]) -> bool:
    """`example.com` matches only itself; `*.example.com` matches every name below it
    (`a.example.com`, `a.b.example.com`) but not `example.com`. Case and a trailing dot
    do not matter."""
    name = normalize_name(name)
    if not name or not all(_LABEL.match(label) for label in name.split(".")):
        return False
    for pat in patterns:
        pat = normalize_name(pat)
        if pat.startswith("*."):
            if name.endswith(pat[1:]) and len(name) > len(pat) - 1:
                return True
        elif name == pat:
            return True
    return False


def filter_answer(qname: dns.name.Name, response: dns.message.Message,
                  blocked: Iterable[ipaddress.IPv4Network]) -> tuple[list[str], int]:
    """The A addresses `response` gives for `qname` (following its CNAME chain in the
    answer section, at most 16 hops), minus those in `blocked`, and the smallest TTL seen
    on the way. Records for other owners (glue, injected extras) are ignored."""
    blocked = list(blocked)

    def find(owner: dns.name.Name, rdtype) -> dns.rrset.RRset | None:
        return next((r for r in response.answer if r.name == owner and r.rdtype == rdtype
                     and r.rdclass == dns.rdataclass.IN), None)

    owner, ttl, seen = qname, None, set()
    for _ in range(16):
        cname = find(owner, dns.rdatatype.CNAME)
        if cname is None or owner in seen:
            break
        seen.add(owner)
        ttl = cname.ttl if ttl is None else min(ttl, cname.ttl)
        owner = cname[0].target
    a = find(owner, dns.rdatatype.A)
    if a is None:
        return [], 0
    ttl = a.ttl if ttl is None else min(ttl, a.ttl)
    addrs = []
    for rd in a:
        ip = ipaddress.IPv4Address(rd.address)
        if any(ip in net for net in blocked):
            log.debug("dns: dropped %s for %s (blocked range: rebinding?)", ip, qname)
            continue
        if str(ip) not in addrs:
            addrs.append(str(ip))
    return addrs, ttl


def parse_upstreams(spec: str | None, default: list[str]) -> list[tuple[str, int]]:
    """`SBX_DNS_UPSTREAM`-style "1.1.1.1,192.0.2.53:5353" (IPv4 only), else `default`."""
    out = []
    for item in (spec.split(",") if spec else default):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.partition(":")
        try:
            ipaddress.IPv4Address(host)
            out.append((host, int(port) if port else 53))
        except ValueError:
            raise ValueError(f"DNS upstream {item!r} is not an IPv4 address[:port] "
                             "(check SBX_DNS_UPSTREAM)") from None
    return out


class _Listener:
    def __init__(self, cid: str, host_ip: str, peer_ip: str, patterns: list[str]):
        self.cid, self.host_ip, self.peer_ip = cid, host_ip, peer_ip
        self.patterns = [normalize_name(p) for p in patterns]
        self.port = 0
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.base_events.Server | None = None
        self.inflight = 0
        self.conns: set[asyncio.StreamWriter] = set()  # its open TCP connections
        self.tasks: set[asyncio.Task] = set()  # its queries being answered, its connections
        self.closed = False

    def close(self) -> None:
        """Stop answering: the sockets, the open TCP connections (Server.close leaves them
        open) and every answer in flight (a late one must not pin for a sandbox that is
        gone)."""
        self.closed = True
        if self.udp:
            self.udp.close()
        if self.tcp:
            self.tcp.close()
        for w in list(self.conns):
            w.close()
        for t in list(self.tasks):
            t.cancel()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, owner: "DomainResolver", lst: _Listener):
        self.owner, self.lst = owner, lst
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        # only the sandbox's own address (a spoofed source would make us a reflector)
        if (addr[0] != self.lst.peer_ip or self.lst.inflight >= MAX_INFLIGHT
                or self.lst.closed):
            return
        self.lst.inflight += 1
        self.owner._spawn(self._reply(data, addr), self.lst)

    async def _reply(self, data: bytes, addr) -> None:
        try:
            out = await self.owner.answer(self.lst, data, tcp=False)
            if out and self.transport and not self.transport.is_closing():
                self.transport.sendto(out, addr)
        finally:
            self.lst.inflight -= 1


class DomainResolver:
    """Per-sandbox DNS listeners that answer only allowed names and pin what they answer."""

    def __init__(self, upstreams: list[tuple[str, int]], pin: PinFn,
                 blocked: Callable[[], list[ipaddress.IPv4Network]]):
        self.upstreams = upstreams
        self._pin = pin
        self._blocked = blocked
        self._listeners: dict[str, _Listener] = {}
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro, lst: _Listener) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        lst.tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(lst.tasks.discard)

    def where(self, cid: str) -> tuple[str, int] | None:
        """(address, port) `cid`'s listener is on, if it has one."""
        lst = self._listeners.get(cid)
        return (lst.host_ip, lst.port) if lst else None

    async def listen(self, cid: str, host_ip: str, peer_ip: str, patterns: list[str],
                     port: int = 0) -> int:
        """Start answering `cid`'s queries on host_ip (UDP and TCP on one port, `port` if it
        is free, else one the kernel picks); returns the port."""
        await self.forget(cid)
        lst = _Listener(cid, host_ip, peer_ip, patterns)
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for want in ([port] if port else []) + [0] * 8:
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UDP(self, lst), local_addr=(host_ip, want))
            except OSError as e:
                last = e
                continue
            got = udp.get_extra_info("sockname")[1]
            try:
                tcp = await asyncio.start_server(
                    lambda r, w: self._tcp(lst, r, w), host=host_ip, port=got)
            except OSError as e:  # the TCP port is taken: try another pair
                udp.close()
                last = e
                continue
            lst.udp, lst.tcp, lst.port = udp, tcp, got
            self._listeners[cid] = lst
            log.info("dns: answering %s on %s:%d for %s", cid, host_ip, got, ", ".join(lst.patterns))
            return got
        raise OSError(f"could not bind a DNS listener on {host_ip}: {last}")

    async def forget(self, cid: str) -> None:
        lst = self._listeners.pop(cid, None)
        if lst:
            lst.close()

    async def close(self) -> None:
        for cid in list(self._listeners):
            await self.forget(cid)
        for t in list(self._tasks):
            t.cancel()

    async def _tcp(self, lst: _Listener, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if (not peer or peer[0] != lst.peer_ip or lst.closed
                or len(lst.conns) >= MAX_TCP_CONNS):
            # another source, a listener being closed, or one connection too many: each
            # open one is a file descriptor of the server
            if peer and peer[0] == lst.peer_ip and not lst.closed:
                log.debug("dns: %s holds %d TCP connections: closing another",
                          lst.cid, len(lst.conns))
            writer.close()
            return
        lst.conns.add(writer)
        me = asyncio.current_task()
        if me is not None:
            lst.tasks.add(me)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]),
                                              TCP_IDLE_S)
                if lst.inflight >= MAX_INFLIGHT:  # the same budget as its UDP queries
                    return
                lst.inflight += 1
                try:
                    out = await self.answer(lst, data, tcp=True)
                finally:
                    lst.inflight -= 1
                if out is None:
                    return
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        finally:
            lst.conns.discard(writer)
            if me is not None:
                lst.tasks.discard(me)
            writer.close()

    # ---- the policy -----------------------------------------------------------------------
    async def answer(self, lst: _Listener, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query from `lst`'s sandbox (None: drop it)."""
        try:
            msg = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            return None  # not DNS, or garbage: no reply
        if msg.flags & dns.flags.QR:
            return None
        resp = dns.message.make_response(msg)
        resp.flags |= dns.flags.RA
        if msg.opcode() != dns.opcode.QUERY or len(msg.question) != 1:
            resp.set_rcode(dns.rcode.NOTIMP if msg.opcode() != dns.opcode.QUERY
                           else dns.rcode.FORMERR)
            return self._wire(resp, msg, tcp)
        q = msg.question[0]
        name = q.name.to_text(omit_final_dot=True)
        if q.rdclass != dns.rdataclass.IN or not domain_matches(name, lst.patterns):
            log.debug("dns: %s asked for %s: not in its domain_allowlist", lst.cid, name)
            resp.set_rcode(dns.rcode.NXDOMAIN)
            if msg.edns >= 0:
                resp.use_edns(0, options=[dns.edns.EDEOption(
                    dns.edns.EDECode.PROHIBITED, "not in this sandbox's domain_allowlist")])
            return self._wire(resp, msg, tcp)
        if q.rdtype != dns.rdatatype.A:
            return self._wire(resp, msg, tcp)  # NODATA: only IPv4 addresses can be pinned
        try:
            up = await self._forward(q.name)
        except (dns.exception.DNSException, OSError) as e:
            log.warning("dns: upstream failed for %s (%s): %s", name, lst.cid, e)
            resp.set_rcode(dns.rcode.SERVFAIL)
            return self._wire(resp, msg, tcp)
        if up.rcode() != dns.rcode.NOERROR:
            resp.set_rcode(up.rcode() if up.rcode() == dns.rcode.NXDOMAIN else dns.rcode.SERVFAIL)
            return self._wire(resp, msg, tcp)
        addrs, ttl = filter_answer(q.name, up, self._blocked())
        if addrs:
            pin_s = max(PIN_MIN_S, min(ttl, PIN_MAX_S))
            try:
                await self._pin(lst.cid, addrs, pin_s)
            except Exception as e:  # an address we could not pin must not be handed out
                log.error("dns: pinning %s for %s failed: %s", addrs, lst.cid, e)
                resp.set_rcode(dns.rcode.SERVFAIL)
                return self._wire(resp, msg, tcp)
            resp.answer.append(dns.rrset.from_text_list(q.name, min(ttl, pin_s), "IN", "A", addrs))
        return self._wire(resp, msg, tcp)

    async def _forward(self, qname: dns.name.Name) -> dns.message.Message:
        import dns.asyncquery

        query = dns.message.make_query(qname, dns.rdatatype.A, use_edns=0, payload=1232)
        last: Exception | None = None
        for host, port in self.upstreams:
            try:
                r = await dns.asyncquery.udp(query, host, timeout=UPSTREAM_TIMEOUT_S, port=port)
                if r.flags & dns.flags.TC:
                    r = await dns.asyncquery.tcp(query, host, timeout=UPSTREAM_TIMEOUT_S, port=port)
                return r
            except (dns.exception.DNSException, OSError) as e:
                last = e
        raise last or dns.exception.DNSException("no upstream resolver configured "
                                                 "(SBX_DNS_UPSTREAM or /etc/resolv.conf)")

    @staticmethod
    def _wire(resp: dns.message.Message, req: dns.message.Message, tcp: bool) -> bytes:
        limit = 65535 if tcp else max(512, req.payload if req.edns >= 0 else 512)
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            resp.answer = []
            resp.flags |= dns.flags.TC
            return resp.to_wire()
