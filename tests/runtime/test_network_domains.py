"""domain_allowlist: egress by host name, enforced by DNS pinning (real runsc, a real server).

No traffic leaves the machine. This module makes its own "internet": network namespaces
with TEST-NET-2 addresses (198.51.100.x, tests/sbxnet.py) routed from the host, two running a tiny
HTTP server, one running an authoritative DNS server (tests/dnstest.py) that the server
under test uses as its upstream (SBX_DNS_UPSTREAM). The server is this module's own (it
needs that setting), started with the same helper as the shared one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from sbxnet import PublicHost, ip
from sbxtest import REPO, own_server

import sandbox_service as sbx

pytestmark = pytest.mark.timeout(300)

PORT = 8080
HTTP = (
    "import socket, sys, threading\n"
    "name = sys.argv[1]\n"
    "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[2], 9053))\n"
    "def echo():\n"
    "    while True:\n"
    "        d, peer = u.recvfrom(512); u.sendto(b'echo-' + name.encode(), peer)\n"
    "threading.Thread(target=echo, daemon=True).start()\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    try:\n"
    "        c.settimeout(2); c.recv(4096)\n"
    "        c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhello-from-' + name.encode())\n"
    "    except OSError:\n"
    "        pass\n"
    "    c.close()\n")
# Runs inside a sandbox: ops from argv (JSON), results as JSON. A stdlib DNS client so a
# query can be sent to any address, over UDP or TCP, bypassing /etc/resolv.conf.
PROBE = r'''
import json, random, socket, struct, sys
def q(name, server, tcp):
    qid = random.randrange(65536)
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    msg += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    msg += struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.settimeout(4)
    try:
        if tcp:
            s.connect((server, 53)); s.sendall(struct.pack("!H", len(msg)) + msg)
            n = struct.unpack("!H", s.recv(2))[0]; data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
        else:
            s.sendto(msg, (server, 53)); data = s.recv(4096)
    except OSError as e:
        return "NOREPLY " + type(e).__name__
    finally:
        s.close()
    rcode, an = data[3] & 15, struct.unpack("!H", data[6:8])[0]
    i = len(msg)
    addrs = []
    for _ in range(an):
        while data[i] and data[i] < 192:
            i += data[i] + 1
        i += 2 if data[i] >= 192 else 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[i:i + 10]); i += 10
        if rtype == 1:
            addrs.append(socket.inet_ntoa(data[i:i + 4]))
        i += rdlen
    return {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(rcode, str(rcode)) + " " + ",".join(addrs)
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except OSError as e:
        return "NODNS " + type(e).__name__
def get(host):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, 8080)); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return "OPEN " + s.recv(256).decode(errors="replace").split("\r\n\r\n", 1)[-1]
    except OSError as e:
        return "BLOCKED " + type(e).__name__
    finally:
        s.close()
def udp(host, port, sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.bind(("0.0.0.0", sport)); s.sendto(b"ping", (host, port))
        return "OPEN " + s.recv(64).decode()
    except OSError as e:
        return "BLOCKED " + type(e).__name__
    finally:
        s.close()
out = []
for op in json.loads(sys.argv[1]):
    if op[0] == "resolve":
        out.append(resolve(op[1]))
    elif op[0] == "get":
        out.append(get(op[1]))
    elif op[0] == "udp":
        out.append(udp(op[1], op[2], op[3]))
    elif op[0] == "query":
        out.append(q(op[1], op[2], op[3] == "tcp"))
print(json.dumps(out))
'''


def _http_get(addr: str) -> str:
    import socket
    with socket.create_connection((addr, PORT), timeout=2) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(256).decode().split("\r\n\r\n", 1)[-1]


def _wait(fn) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            fn()
            return
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Net:
    """web[0], web[1]: HTTP servers answering "hello-from-<name>"; dns: the upstream."""

    def __init__(self, web, dns_host, zone, log_path):
        self.web, self.dns, self.zone, self.log_path = web, dns_host, zone, log_path

    def queried(self) -> list[str]:
        with open(self.log_path) as f:
            return f.read().split()


@pytest.fixture(scope="module")
def net():
    link = random.randrange(0, 240)
    a, b, d = random.sample(range(10, 250), 3)
    web_addrs = [f"198.51.100.{a}", f"198.51.100.{b}"]
    made: list[PublicHost] = []
    tmp = tempfile.mkdtemp(prefix="sbx-dns-")
    log_path = os.path.join(tmp, "queries.log")
    open(log_path, "w").close()
    try:
        for i, addr in enumerate(web_addrs):
            made.append(PublicHost(addr, link + i))
            made[-1].start(["python3", "-c", HTTP, f"web{i}", addr], PORT)
        private = made[0].link_ip  # reachable from the host, never from a sandbox
        zone = {
            "allowed.sbx-test.example": [web_addrs[0]],
            "other.sbx-test.example": [web_addrs[1]],
            "nope.sbx-test.example": [web_addrs[1]],       # never on any list
            "a.wild.sbx-test.example": [web_addrs[0]],
            "b.c.wild.sbx-test.example": [web_addrs[0]],
            "wild.sbx-test.example": [web_addrs[1]],
            "rebind.sbx-test.example": [private, "127.0.0.1", "169.254.169.254"],
            "alias.sbx-test.example": "other.sbx-test.example",
        }
        dns_addr = f"198.51.100.{d}"
        dns_host = PublicHost(dns_addr, link + 2)
        made.append(dns_host)
        dns_host.start([sys.executable, os.path.join(REPO, "tests", "dnstest.py"), dns_addr, "53",
                        json.dumps(zone), log_path], 53)
        for i, addr in enumerate(web_addrs):
            _wait(lambda: _check(_http_get(addr) == f"hello-from-web{i}"))
        _wait(lambda: _check(_http_get(private) == "hello-from-web0"))  # the host reaches it
        _wait(lambda: _check(_dns_ok(dns_addr)))
        yield Net(made[:2], dns_host, zone, log_path)
    finally:
        for h in made:
            h.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _check(ok: bool) -> None:
    assert ok


def _dns_ok(addr: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    try:
        r = dns.query.udp(dns.message.make_query("allowed.sbx-test.example", "A"), addr, timeout=1)
    except dns.exception.Timeout:
        return False
    return bool(r.answer)


@pytest.fixture(scope="module")
def dserver(net):
    """A server whose resolver forwards to the test DNS server; the SDK points at it."""
    with own_server("sbx-td-", SBX_DNS_UPSTREAM=net.dns.addr, SBX_WARM_POOL="0") as srv:
        yield srv


class _Results(list):
    """Probe results; their repr (in assertion messages) names any nftables table on this
    host that drops redirected DNS: one of a server of an older version (another SBX_HOME,
    e.g. another test run), whose input chain drops everything from sandbox veths."""

    def __repr__(self) -> str:
        r = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        old = [t for t in r.split("\ntable ")
               if 'iifname "sbxh*" drop' in t and "ct status dnat" not in t]
        note = (f" [NOTE: {len(old)} nftables table(s) of an older server on this host drop "
                "redirected DNS: " + ", ".join(t.split("{")[0].strip() for t in old) + "]"
                if old else "")
        return super().__repr__() + note


def run(sb, *ops) -> list:
    p = sb.exec("python3", "-c", PROBE, json.dumps(ops), timeout=120)
    out, err = p.stdout.read(), p.stderr.read()
    assert p.wait() == 0, err
    return _Results(json.loads(out))


def _veth(cid: str) -> str:
    return "sbxh" + hashlib.sha256(cid.encode()).hexdigest()[:10]


def _nft(server) -> str:
    key = hashlib.sha256(os.path.abspath(os.path.join(server.home, "runtime")).encode()
                         ).hexdigest()[:10]
    return subprocess.run(["nft", "list", "table", "inet", f"sbx_{key}"],
                          capture_output=True, text=True).stdout


def test_allowed_name_resolves_and_connects_nothing_else_does(dserver, net):
    web0, web1 = (h.addr for h in net.web)
    sb = sbx.Sandbox.create(block_network=False, domain_allowlist=["allowed.sbx-test.example"])
    cid = sb.object_id
    try:
        res = run(sb, ["resolve", "allowed.sbx-test.example"], ["get", "allowed.sbx-test.example"],
                  ["resolve", "nope.sbx-test.example"],
                  ["get", web1],                                   # raw IP, never resolved
                  # queries sent straight to other resolvers, over UDP and TCP: still ours
                  ["query", "nope.sbx-test.example", net.dns.addr, "udp"],
                  ["query", "nope.sbx-test.example", net.dns.addr, "tcp"],
                  ["query", "nope.sbx-test.example", "8.8.8.8", "udp"],
                  ["query", "allowed.sbx-test.example", "8.8.8.8", "tcp"],
                  ["query", "allowed.sbx-test.example", "10.0.0.1", "udp"])
        assert res[0] == [web0], res
        assert res[1] == "OPEN hello-from-web0", res
        assert res[2].startswith("NODNS"), res
        assert res[3].startswith("BLOCKED"), res
        assert res[4] == res[5] == res[6] == "NXDOMAIN ", res
        assert res[7] == res[8] == f"NOERROR {web0}", res
        assert "nope.sbx-test.example" not in net.queried()  # never left the service
        rules = _nft(dserver)
        assert f"dom_{_veth(cid)}" in rules and web0 in rules
    finally:
        sb.terminate()
    rules = _nft(dserver)
    assert _veth(cid) not in rules


def test_wildcard_matches_names_below_not_the_domain_itself(dserver, net):
    web0 = net.web[0].addr
    sb = sbx.Sandbox.create(block_network=False, domain_allowlist=["*.wild.sbx-test.example"])
    try:
        res = run(sb, ["resolve", "a.wild.sbx-test.example"], ["resolve", "b.c.wild.sbx-test.example"],
                  ["resolve", "wild.sbx-test.example"], ["get", "a.wild.sbx-test.example"],
                  ["get", net.web[1].addr])
        assert res[0] == res[1] == [web0], res
        assert res[2].startswith("NODNS"), res       # the apex is not under its wildcard
        assert res[3] == "OPEN hello-from-web0", res
        assert res[4].startswith("BLOCKED"), res     # wild.sbx-test.example's address
    finally:
        sb.terminate()


def test_rebinding_to_a_private_address_yields_nothing(dserver, net):
    private = net.web[0].link_ip
    sb = sbx.Sandbox.create(block_network=False, domain_allowlist=["rebind.sbx-test.example"])
    try:
        res = run(sb, ["resolve", "rebind.sbx-test.example"],
                  ["query", "rebind.sbx-test.example", net.dns.addr, "udp"], ["get", private])
        assert res[0].startswith("NODNS"), res
        assert res[1] == "NOERROR ", res            # the answer, with no address left
        assert res[2].startswith("BLOCKED"), res
        assert "rebind.sbx-test.example" in net.queried()  # the upstream did answer it
    finally:
        sb.terminate()


def test_resolved_addresses_open_nothing_for_another_sandbox(dserver, net):
    web0, web1 = (h.addr for h in net.web)
    a = sbx.Sandbox.create(block_network=False, domain_allowlist=["allowed.sbx-test.example"])
    b = sbx.Sandbox.create(block_network=False, domain_allowlist=["alias.sbx-test.example"],
                           cidr_allowlist=["203.0.113.0/24"])
    try:
        assert run(a, ["get", "allowed.sbx-test.example"]) == ["OPEN hello-from-web0"]
        res = run(b, ["get", web0], ["resolve", "allowed.sbx-test.example"],
                  ["resolve", "alias.sbx-test.example"], ["get", web1], ["get", web0])
        assert res[0].startswith("BLOCKED"), res     # a resolved it, not b
        assert res[1].startswith("NODNS"), res
        assert res[2] == [web1], res                # a CNAME to another name: its address
        assert res[3] == "OPEN hello-from-web1", res
        assert res[4].startswith("BLOCKED"), res
        assert run(a, ["get", web1])[0].startswith("BLOCKED")  # and b's opens nothing for a
    finally:
        a.terminate()
        b.terminate()


def _sandbox_ip(cid: str) -> str:
    out = ip("-4", "-o", "addr", "show", "dev", _veth(cid))
    host_end = next(w for w in out.split() if w.startswith("10.231."))
    return str(ipaddress.ip_interface(host_end).ip + 1)


def test_a_stale_connection_of_an_earlier_sandbox_opens_nothing(dserver, net):
    """A connection that a sandbox opened to a pinned address outlives the pin (accepted as
    established), but only for that sandbox: the next sandbox on the same address, sending
    the same 5-tuple while the conntrack entry lives, is refused."""
    web0 = net.web[0].addr
    a = sbx.Sandbox.create(block_network=False, domain_allowlist=["allowed.sbx-test.example"])
    try:
        a_ip = _sandbox_ip(a.object_id)
        res = run(a, ["resolve", "allowed.sbx-test.example"], ["udp", web0, 9053, 45678])
        assert res == [[web0], "OPEN echo-web0"], res
    finally:
        a.terminate()
    b = sbx.Sandbox.create(block_network=False, domain_allowlist=["other.sbx-test.example"])
    try:
        if _sandbox_ip(b.object_id) != a_ip:
            pytest.skip("another sandbox took the address meanwhile (a busy host)")
        assert run(b, ["udp", web0, 9053, 45678])[0].startswith("BLOCKED")
    finally:
        b.terminate()


def test_a_cidr_allowlist_alone_resolves_no_name_and_leaks_none(dserver, net):
    web1 = net.web[1].addr
    name = f"exfil-{os.urandom(4).hex()}.allowed.sbx-test.example"
    sb = sbx.Sandbox.create(block_network=False, cidr_allowlist=[f"{web1}/32"])
    try:
        res = run(sb, ["get", web1], ["resolve", name],
                  ["query", name, net.dns.addr, "udp"], ["query", name, net.dns.addr, "tcp"])
        assert res[0] == "OPEN hello-from-web1", res
        assert res[1].startswith("NODNS"), res
        assert res[2] == res[3] == "NXDOMAIN ", res
        assert name not in net.queried()  # the name, and what it could carry, stayed here
    finally:
        sb.terminate()


def test_cidr_and_domain_allowlists_add_up(dserver, net):
    web0, web1 = (h.addr for h in net.web)
    sb = sbx.Sandbox.create(block_network=False, domain_allowlist=["allowed.sbx-test.example"],
                            cidr_allowlist=[f"{web1}/32"])
    try:
        res = run(sb, ["get", web1], ["get", "allowed.sbx-test.example"],
                  ["resolve", "other.sbx-test.example"])
        assert res[0] == "OPEN hello-from-web1", res
        assert res[1] == "OPEN hello-from-web0", res
        assert res[2].startswith("NODNS"), res       # an allowed CIDR is not an allowed name
    finally:
        sb.terminate()


def test_domain_policy_survives_a_server_restart(dserver, net):
    web0, web1 = (h.addr for h in net.web)
    sb = sbx.Sandbox.create(block_network=False, domain_allowlist=["allowed.sbx-test.example"],
                            timeout=600)
    try:
        assert run(sb, ["get", "allowed.sbx-test.example"]) == ["OPEN hello-from-web0"]
        dserver.restart(kill=True)
        again = sbx.Sandbox.from_id(sb.object_id)
        res = run(again, ["get", web0],              # pinned before: still pinned
                  ["resolve", "allowed.sbx-test.example"], ["get", "allowed.sbx-test.example"],
                  ["resolve", "nope.sbx-test.example"], ["get", web1],
                  ["query", "nope.sbx-test.example", net.dns.addr, "tcp"])
        assert res[0] == "OPEN hello-from-web0", res
        assert res[1] == [web0], res
        assert res[2] == "OPEN hello-from-web0", res
        assert res[3].startswith("NODNS"), res
        assert res[4].startswith("BLOCKED"), res
        assert res[5] == "NXDOMAIN ", res
        assert "nope.sbx-test.example" not in net.queried()
    finally:
        sbx.Sandbox.from_id(sb.object_id).terminate()


def test_domain_allowlist_validation(dserver):
    with pytest.raises(sbx.InvalidRequestError, match="block_network=False"):
        sbx.Sandbox.create(domain_allowlist=["example.com"])
    with pytest.raises(sbx.InvalidRequestError, match="cidr_allowlist"):
        sbx.Sandbox.create(block_network=False, domain_allowlist=["198.51.100.7"])
    with pytest.raises(sbx.InvalidRequestError, match="not a host name"):
        sbx.Sandbox.create(block_network=False, domain_allowlist=["exa mple.com"])
    with pytest.raises(sbx.InvalidRequestError, match="two or more labels"):
        sbx.Sandbox.create(block_network=False, domain_allowlist=["*.com"])
    with dserver.api() as c:
        r = c.post("/v1/sandboxes", json={"block_network": False, "domain_allowlist": [
            f"h{i}.example.com" for i in range(65)]})
        assert r.status_code == 400, r.text
        r = c.post("/v1/sandboxes", json={"domain_allowlist": ["example.com"]})
        assert r.status_code == 400 and "block_network=False" in r.text, r.text
