"""DNS pinning without sandboxes: name matching, answer filtering, domain_allowlist
validation, and the resolver over real UDP/TCP sockets on loopback against a real (test)
upstream DNS server. The end-to-end behaviour with runsc is in test_network_domains.py."""

from __future__ import annotations

import ipaddress

import dns.asyncquery
import dns.edns
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dnstest import ZoneServer
from runtimes.gvisor._dns import DomainResolver, domain_matches, filter_answer, parse_upstreams
from sandbox_service.wire._api import SandboxCreate, check_domain_pattern
from security import BLOCKED_V4

pytestmark = pytest.mark.fast

BLOCKED = [ipaddress.IPv4Network(n) for n in BLOCKED_V4]


@pytest.mark.parametrize("name,patterns,ok", [
    ("example.com", ["example.com"], True),
    ("EXAMPLE.com.", ["example.com"], True),
    ("www.example.com", ["example.com"], False),          # exact means exact
    ("example.com", ["*.example.com"], False),            # a wildcard is not its apex
    ("a.example.com", ["*.example.com"], True),
    ("a.b.example.com", ["*.example.com"], True),
    ("badexample.com", ["*.example.com"], False),         # a label boundary, not a suffix
    ("example.com.evil.net", ["example.com", "*.example.com"], False),
    ("a.example.com", ["example.org", "*.example.com"], True),
    ("", ["*.example.com"], False),
    ("a..example.com", ["*.example.com"], False),
])
def test_domain_matching(name, patterns, ok):
    assert domain_matches(name, patterns) is ok


def _response(qname: str, *rrsets: tuple[str, str, list[str]], ttl: int = 60) -> dns.message.Message:
    q = dns.message.make_query(qname, "A")
    r = dns.message.make_response(q)
    for owner, rtype, values in rrsets:
        r.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", rtype, values))
    return r


def test_filter_answer_follows_cnames_and_drops_blocked_addresses():
    q = dns.name.from_text("www.example.com")
    r = _response("www.example.com",
                  ("www.example.com.", "CNAME", ["edge.cdn.net."]),
                  ("edge.cdn.net.", "A", ["198.51.100.7", "10.1.2.3", "127.0.0.1",
                                          "169.254.169.254", "203.0.113.9"]),
                  ("unrelated.example.", "A", ["198.51.100.99"]))  # not on the chain
    addrs, ttl = filter_answer(q, r, BLOCKED)
    assert addrs == ["198.51.100.7", "203.0.113.9"]
    assert ttl == 60


def test_filter_answer_rebinding_only_yields_nothing():
    q = dns.name.from_text("rebind.example.com")
    r = _response("rebind.example.com", ("rebind.example.com.", "A", ["10.0.0.5", "0.0.0.0"]))
    assert filter_answer(q, r, BLOCKED)[0] == []


def test_filter_answer_ignores_records_of_other_names_and_cname_loops():
    q = dns.name.from_text("a.example.com")
    r = _response("a.example.com", ("b.example.com.", "A", ["198.51.100.1"]))
    assert filter_answer(q, r, BLOCKED) == ([], 0)
    loop = _response("a.example.com", ("a.example.com.", "CNAME", ["b.example.com."]),
                     ("b.example.com.", "CNAME", ["a.example.com."]))
    assert filter_answer(q, loop, BLOCKED) == ([], 0)


@pytest.mark.parametrize("entry,norm", [
    ("Example.COM.", "example.com"), ("*.example.com", "*.example.com"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"), ("_acme.example.com", "_acme.example.com"),
])
def test_domain_pattern_accepted(entry, norm):
    assert check_domain_pattern(entry) == norm


@pytest.mark.parametrize("entry,why", [
    ("203.0.113.7", "cidr_allowlist"), ("*.com", "two or more labels"),
    ("localhost", "two or more labels"), ("*", "not a host name"), ("a.*.com", "not a host name"),
    ("bücher.de", "IDNA"), ("-a.example.com", "not a host name"), ("a.123", "not a host name"),
    ("a b.com", "not a host name"), ("x" * 64 + ".com", "not a host name"),
])
def test_domain_pattern_refused(entry, why):
    with pytest.raises(ValueError, match=why):
        check_domain_pattern(entry)


def test_wire_model_rules():
    m = SandboxCreate(block_network=False, domain_allowlist=["a.example.com", "A.example.com."])
    assert m.domain_allowlist == ["a.example.com"]
    with pytest.raises(ValueError, match="block_network=False"):
        SandboxCreate(domain_allowlist=["a.example.com"])
    with pytest.raises(ValueError):
        SandboxCreate(block_network=False, domain_allowlist=[f"h{i}.example.com" for i in range(65)])
    assert parse_upstreams("192.0.2.1, 192.0.2.2:5353", ["9.9.9.9"]) == [
        ("192.0.2.1", 53), ("192.0.2.2", 5353)]
    assert parse_upstreams(None, ["9.9.9.9"]) == [("9.9.9.9", 53)]
    with pytest.raises(ValueError, match="SBX_DNS_UPSTREAM"):
        parse_upstreams("dns.example.com", [])


ZONE = {
    "ok.example.com": ["198.51.100.10"],
    "www.example.com": "edge.cdn.net",
    "edge.cdn.net": ["198.51.100.20", "10.0.0.20"],
    "rebind.example.com": ["127.0.0.1", "169.254.169.254"],
    "no.example.com": ["198.51.100.30"],
    "txt.example.com": {"txt": "secret"},
}


@pytest.fixture
def upstream(tmp_path):
    log = tmp_path / "queries.log"
    srv = ZoneServer("127.0.0.1", 0, ZONE, str(log)).start()
    return srv, log


async def test_resolver_answers_only_allowed_names_and_pins_first(upstream):
    srv, log = upstream
    pinned: list[tuple[str, list[str], int]] = []

    async def pin(cid, addrs, seconds):
        pinned.append((cid, addrs, seconds))

    res = DomainResolver([("127.0.0.1", srv.port)], pin, lambda: BLOCKED)
    port = await res.listen("sb-1", "127.0.0.1", "127.0.0.1",
                            ["ok.example.com", "www.example.com", "rebind.example.com",
                             "txt.example.com"])
    try:
        async def ask(name, rtype="A", tcp=False, edns=-1):
            q = dns.message.make_query(name, rtype, use_edns=edns)
            send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
            return await send(q, "127.0.0.1", timeout=5, port=port)

        r = await ask("ok.example.com")
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.address for rrs in r.answer for rd in rrs] == ["198.51.100.10"]
        assert pinned[-1][:2] == ("sb-1", ["198.51.100.10"])
        assert pinned[-1][2] >= 600  # a short TTL still pins for the minimum

        r = await ask("www.example.com", tcp=True)  # CNAME flattened, private address gone
        assert [(rrs.name.to_text(), rd.address) for rrs in r.answer for rd in rrs] == [
            ("www.example.com.", "198.51.100.20")]

        n = len(pinned)
        r = await ask("rebind.example.com")
        assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert len(pinned) == n  # nothing pinned

        r = await ask("no.example.com", edns=0)
        assert r.rcode() == dns.rcode.NXDOMAIN and r.answer == []
        assert any(isinstance(o, dns.edns.EDEOption) and o.code == dns.edns.EDECode.PROHIBITED
                   for o in r.options)
        for rtype in ("AAAA", "TXT", "ANY"):
            r = await ask("txt.example.com", rtype)
            assert r.rcode() == dns.rcode.NOERROR and r.answer == [], rtype
        assert "no.example.com" not in log.read_text().split()
        assert "txt.example.com" not in log.read_text().split()  # only A goes upstream
    finally:
        await res.close()


async def test_resolver_ignores_other_sources_and_garbage(upstream):
    srv, _ = upstream
    res = DomainResolver([("127.0.0.1", srv.port)], lambda *a: None, lambda: BLOCKED)
    # the listener expects the sandbox at 127.0.0.2: a query from 127.0.0.1 is dropped
    port = await res.listen("sb-2", "127.0.0.1", "127.0.0.2", ["ok.example.com"])
    try:
        q = dns.message.make_query("ok.example.com", "A")
        with pytest.raises(dns.exception.Timeout):
            await dns.asyncquery.udp(q, "127.0.0.1", timeout=1, port=port)
    finally:
        await res.close()


# ---- resource bounds: TCP connections, in-flight queries, late answers, pins, host commands

async def _tcp_query(port: int, name: str) -> bytes:
    """One DNS query over a new TCP connection: the reply, or b"" when it was closed."""
    import asyncio
    import struct

    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        msg = dns.message.make_query(name, "A").to_wire()
        w.write(struct.pack("!H", len(msg)) + msg)
        await w.drain()
        try:
            head = await asyncio.wait_for(r.readexactly(2), 10)
            return await r.readexactly(struct.unpack("!H", head)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
    finally:
        w.close()


async def test_resolver_caps_tcp_connections_per_sandbox(upstream):
    import asyncio
    import struct

    from runtimes.gvisor._dns import MAX_TCP_CONNS

    srv, _ = upstream
    res = DomainResolver([("127.0.0.1", srv.port)], lambda *a: asyncio.sleep(0), lambda: BLOCKED)
    port = await res.listen("sb-3", "127.0.0.1", "127.0.0.1", ["ok.example.com"])
    conns = []
    try:
        for _ in range(MAX_TCP_CONNS + 4):  # all held open at once
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        msg = dns.message.make_query("no.example.com", "A").to_wire()
        answered = closed = 0
        for r, w in conns:
            w.write(struct.pack("!H", len(msg)) + msg)
            try:
                await w.drain()
                head = await asyncio.wait_for(r.readexactly(2), 10)
                await r.readexactly(struct.unpack("!H", head)[0])
                answered += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                closed += 1
        assert (answered, closed) == (MAX_TCP_CONNS, 4)
        # one of them ends: a new connection is served again
        conns.pop(0)[1].close()
        for _ in range(100):
            if len(res._listeners["sb-3"].conns) < MAX_TCP_CONNS:
                break
            await asyncio.sleep(0.05)
        reply = await _tcp_query(port, "no.example.com")
        assert dns.message.from_wire(reply).rcode() == dns.rcode.NXDOMAIN
    finally:
        for _, w in conns:
            w.close()
        await res.close()


async def test_tcp_queries_count_toward_the_inflight_limit(upstream):
    import asyncio

    from runtimes.gvisor._dns import MAX_INFLIGHT

    srv, _ = upstream
    gate, started = asyncio.Event(), []
    all_started = asyncio.Event()

    async def pin(cid, addrs, seconds):  # holds every allowed answer in flight
        started.append(cid)
        if len(started) == MAX_INFLIGHT:
            all_started.set()
        await gate.wait()

    res = DomainResolver([("127.0.0.1", srv.port)], pin, lambda: BLOCKED)
    port = await res.listen("sb-4", "127.0.0.1", "127.0.0.1", ["ok.example.com"])
    import socket
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(MAX_INFLIGHT):
            u.sendto(dns.message.make_query("ok.example.com", "A").to_wire(), ("127.0.0.1", port))
        await asyncio.wait_for(all_started.wait(), 30)
        # the sandbox's budget is spent: a TCP query (even one answered without upstream)
        # is dropped, not answered beside it
        assert await _tcp_query(port, "no.example.com") == b""
        gate.set()
        await asyncio.sleep(0)
        for _ in range(100):
            if res._listeners["sb-4"].inflight == 0:
                break
            await asyncio.sleep(0.05)
        assert dns.message.from_wire(await _tcp_query(port, "no.example.com")).rcode() \
            == dns.rcode.NXDOMAIN
    finally:
        u.close()
        gate.set()
        await res.close()


async def test_forget_cancels_answers_in_flight_and_closes_tcp_connections(upstream):
    import asyncio
    import socket

    srv, _ = upstream
    entered, cancelled, finished = asyncio.Event(), asyncio.Event(), []

    async def pin(cid, addrs, seconds):
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.append(cid)

    res = DomainResolver([("127.0.0.1", srv.port)], pin, lambda: BLOCKED)
    port = await res.listen("sb-5", "127.0.0.1", "127.0.0.1", ["ok.example.com"])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        u.sendto(dns.message.make_query("ok.example.com", "A").to_wire(), ("127.0.0.1", port))
        await asyncio.wait_for(entered.wait(), 30)
        for _ in range(100):  # the TCP connection has been accepted
            if res._listeners["sb-5"].conns:
                break
            await asyncio.sleep(0.05)
        await res.forget("sb-5")
        await asyncio.wait_for(cancelled.wait(), 30)  # the late answer pins nothing
        assert finished == []
        # the open connection went with the listener (Server.close alone leaves it open)
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    finally:
        u.close()
        await res.close()


@pytest.fixture
def egress(tmp_path, monkeypatch):
    """An EgressNetworks whose nft commands are recorded, not run."""
    from runtimes.gvisor import _pinning
    from runtimes.gvisor._netns import EgressNetworks

    ran: list[str] = []

    async def fake_run(*argv, check=True, stdin=None, timeout_s=30):
        ran.append((stdin or b"").decode())
        return ""

    monkeypatch.setattr(_pinning, "_run", fake_run)
    return EgressNetworks("fixdnstest", str(tmp_path), resolvers=[]), ran


async def test_pin_refuses_a_sandbox_without_a_resolver(egress):
    from runtimes.gvisor._netcmd import NetworkSetupError

    net, ran = egress
    with pytest.raises(NetworkSetupError, match="no DNS pinning"):
        await net.pin("gone", ["198.51.100.1"], 600)
    assert ran == [] and "gone" not in net._pinned  # no nft, no entry re-created


async def test_pins_per_sandbox_are_capped(egress):
    from runtimes.gvisor._netcmd import NetworkSetupError
    from runtimes.gvisor._pinning import MAX_PINS

    net, ran = egress
    net._pinned["sb"] = {}
    many = [str(ipaddress.IPv4Address("100.64.0.0") + i) for i in range(MAX_PINS)]
    await net.pin("sb", many, 600)
    await net.pin("sb", many[:3], 600)  # already pinned: fine, nothing new
    n = len(ran)
    with pytest.raises(NetworkSetupError, match="at most"):
        await net.pin("sb", ["198.51.100.1"], 600)
    assert len(ran) == n and len(net._pinned["sb"]) == MAX_PINS
    # expired ones make room again
    for a in many[:10]:
        net._pinned["sb"][a] = 0
    await net.pin("sb", ["198.51.100.1"], 600)
    assert "198.51.100.1" in net._pinned["sb"]
    # and the kernel set is bounded the same way
    assert f"size {MAX_PINS};" in net._policy_rules("sb", [], ["a.example.com"])


async def test_host_command_killed_on_timeout(tmp_path):
    import os

    from runtimes.gvisor._netcmd import NetworkSetupError, run

    pidfile = tmp_path / "pid"
    with pytest.raises(NetworkSetupError, match="did not finish"):
        await run("sh", "-c", f"echo $$ > {pidfile}; exec sleep 600", timeout_s=1)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)
