"""Sandbox egress under policy: block_network=False and cidr_allowlist.

No traffic leaves the machine: the "internet" is network namespaces this module makes
(`sbxt-<rand>`), each with a veth pair to the host, a TEST-NET-2 address (198.51.100.0/24,
not in the blocked list) on its side, a host route to it, and a tiny TCP server inside.
Probes run inside the sandboxes with short timeouts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import subprocess
import time

import pytest

import sandbox_service as sbx
from sbxnet import PublicHost, ip

pytestmark = pytest.mark.timeout(300)

PORT = 8080
SERVER = (
    "import socket, sys\n"
    "addr = sys.argv[1]\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind((addr, {PORT})); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello-from-' + addr.encode()); c.close()\n")
PROBE = (
    "import json, socket, sys\n"
    "def gw():\n"
    "    for line in open('/proc/net/route').read().splitlines()[1:]:\n"
    "        f = line.split()\n"
    "        if f[1] == '00000000':\n"
    "            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])\n"
    "res = {}\n"
    "for spec in sys.argv[1:]:\n"
    "    host, port = spec.rsplit(':', 1)\n"
    "    host = gw() if host == 'GW' else host.strip('[]')\n"
    "    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)\n"
    "    s.settimeout(2.5)\n"
    "    try:\n"
    "        s.connect((host, int(port)))\n"
    "        s.settimeout(1.5)\n"
    "        try:\n"
    "            res[spec] = 'OPEN ' + s.recv(64).decode(errors='replace')\n"
    "        except OSError:\n"
    "            res[spec] = 'OPEN'\n"
    "    except OSError as e:\n"
    "        res[spec] = 'BLOCKED ' + type(e).__name__\n"
    "    finally:\n"
    "        s.close()\n"
    "print(json.dumps(res))\n")
DNS = ("import socket\n"
       "try:\n"
       "    print('DNS', socket.getaddrinfo('deb.debian.org', 80, socket.AF_INET)[0][4][0])\n"
       "except OSError as e:\n"
       "    print('NODNS', e)\n")


class _Target(PublicHost):
    """A namespace with a "public" 198.51.100.x address and a TCP server on PORT."""

    def __init__(self, addr: str, link: int):
        super().__init__(addr, link)
        try:
            self.start(["python3", "-c", SERVER, addr], PORT)
            self._check_hello()
        except BaseException:
            self.close()
            raise

    def _check_hello(self) -> None:
        import socket
        with socket.create_connection((self.addr, PORT), timeout=5) as s:
            assert s.recv(64) == f"hello-from-{self.addr}".encode()

    @property
    def target(self) -> str:
        return f"{self.addr}:{PORT}"

    @property
    def hello(self) -> str:
        return f"OPEN hello-from-{self.addr}"


@pytest.fixture(scope="module")
def targets():
    link = random.randrange(0, 250)
    hosts = random.sample(range(10, 250), 2)
    made = []
    try:
        for i, h in enumerate(hosts):
            made.append(_Target(f"198.51.100.{h}", link + i))
        yield made
    finally:
        for t in made:
            t.close()


def run_py(sb, code: str, *args: str) -> str:
    p = sb.exec("python3", "-c", code, *args, timeout=60)
    out, err = p.stdout.read(), p.stderr.read()
    assert p.wait() == 0, err
    return out


def probe(sb, *specs: str) -> dict[str, str]:
    return json.loads(run_py(sb, PROBE, *specs))


def _key(server) -> str:
    state_dir = os.path.abspath(os.path.join(server.home, "runtime"))
    return hashlib.sha256(state_dir.encode()).hexdigest()[:10]


def _netns(server, cid: str) -> str:
    return f"sbx{_key(server)[:6]}-{cid}"


def _veth(cid: str) -> str:
    return "sbxh" + hashlib.sha256(cid.encode()).hexdigest()[:10]


def _sandbox_ip(cid: str) -> str:
    """The sandbox end of its /30 (runsc strips the addresses inside its netns, so read the
    host end)."""
    out = ip("-4", "-o", "addr", "show", "dev", _veth(cid))
    host_end = next(w for w in out.split() if w.startswith("10.231."))
    return str(ipaddress.ip_interface(host_end).ip + 1)


def _nft(server) -> str:
    r = subprocess.run(["nft", "list", "table", "inet", f"sbx_{_key(server)}"],
                       capture_output=True, text=True)
    return r.stdout


def test_default_has_no_network(server, targets):
    sb = sbx.Sandbox.create()
    try:
        assert run_py(sb, "import socket; print([n for _, n in socket.if_nameindex()])"
                      ).strip() == "['lo']"
        res = probe(sb, targets[0].target)
        assert res[targets[0].target].startswith("BLOCKED"), res
        assert "NODNS" in run_py(sb, DNS)
    finally:
        sb.terminate()


def test_open_egress_reaches_the_internet_but_nothing_private(server, targets):
    port = server.url.rsplit(":", 1)[1]
    a = sbx.Sandbox.create(block_network=False)
    b = sbx.Sandbox.create(block_network=False)
    try:
        listener = ("import socket\ns = socket.socket(); s.bind(('0.0.0.0', 9000)); s.listen(8)\n"
                    "while True:\n    c, _ = s.accept(); c.sendall(b'sandbox-b'); c.close()\n")
        b.exec("python3", "-c", listener)
        b_ip = _sandbox_ip(b.object_id)
        time.sleep(0.5)
        assert run_py(b, PROBE, "127.0.0.1:9000").strip().endswith('"OPEN sandbox-b"}')
        specs = [targets[0].target, targets[1].target, f"GW:{port}", f"127.0.0.1:{port}",
                 "169.254.169.254:80", "10.0.0.1:80", f"{b_ip}:9000", "[2001:db8::1]:80",
                 "[::ffff:169.254.169.254]:80"]
        res = probe(a, *specs)
        assert res[targets[0].target] == targets[0].hello, res
        assert res[targets[1].target] == targets[1].hello, res
        for spec in specs[2:]:
            assert res[spec].startswith("BLOCKED"), (spec, res)
        assert "DNS " in run_py(a, DNS)
    finally:
        a.terminate()
        b.terminate()


def test_cidr_allowlist_reaches_only_its_cidrs(server, targets):
    allowed, other = targets
    sb = sbx.Sandbox.create(block_network=False, cidr_allowlist=[f"{allowed.addr}/32"])
    try:
        res = probe(sb, allowed.target, other.target, "169.254.169.254:80")
        assert res[allowed.target] == allowed.hello, res
        assert res[other.target].startswith("BLOCKED"), res
        assert res["169.254.169.254:80"].startswith("BLOCKED"), res
        # no name resolves without a domain_allowlist: a query forwarded upstream would
        # carry data out in its name (test_network_domains.py checks it never leaves)
        assert "NODNS" in run_py(sb, DNS)
    finally:
        sb.terminate()


def test_allowlist_validation(server, api):
    with pytest.raises(sbx.InvalidRequestError, match="always blocked"):
        sbx.Sandbox.create(block_network=False, cidr_allowlist=["10.0.0.0/8"])
    with pytest.raises(sbx.InvalidRequestError, match="always blocked"):
        sbx.Sandbox.create(block_network=False, cidr_allowlist=["169.254.169.254/32"])
    with pytest.raises(sbx.InvalidRequestError, match="block_network=False"):
        sbx.Sandbox.create(cidr_allowlist=["198.51.100.0/24"])
    with pytest.raises(sbx.InvalidRequestError, match="IPv6"):
        sbx.Sandbox.create(block_network=False, cidr_allowlist=["2001:db8::/32"])
    with pytest.raises(sbx.InvalidRequestError, match="not a CIDR"):
        sbx.Sandbox.create(block_network=False, cidr_allowlist=["example.com"])
    r = api.post("/v1/sandboxes", json={"block_network": False,
                                        "cidr_allowlist": ["198.51.100.1/32"] * 65})
    assert r.status_code == 400, r.text


def test_terminate_removes_netns_veth_and_rules(server, targets):
    sb = sbx.Sandbox.create(block_network=False, cidr_allowlist=[f"{targets[0].addr}/32"])
    cid = sb.object_id
    ns, veth = _netns(server, cid), _veth(cid)
    assert os.path.exists(f"/run/netns/{ns}")
    assert veth in _nft(server)
    assert probe(sb, targets[0].target)[targets[0].target] == targets[0].hello
    sb.terminate()
    assert not os.path.exists(f"/run/netns/{ns}")
    assert ip("link", "show", veth, check=False) == ""
    assert veth not in _nft(server)
    assert not os.path.exists(os.path.join(server.home, "runtime", "egress", cid + ".json"))


def test_policy_survives_a_server_restart(server, targets):
    allowed, other = targets
    sb = sbx.Sandbox.create(block_network=False, cidr_allowlist=[f"{allowed.addr}/32"],
                            timeout=600)
    try:
        server.restart(kill=True)
        # the first egress after a restart rebuilds the table: the live policy goes with it
        fresh = sbx.Sandbox.create(block_network=False)
        try:
            assert probe(fresh, other.target)[other.target] == other.hello
        finally:
            fresh.terminate()
        again = sbx.Sandbox.from_id(sb.object_id)
        res = probe(again, allowed.target, other.target)
        assert res[allowed.target] == allowed.hello, res
        assert res[other.target].startswith("BLOCKED"), res
    finally:
        sbx.Sandbox.from_id(sb.object_id).terminate()
    assert _veth(sb.object_id) not in _nft(server)
