"""Registry pulls leave from a policed network namespace (images/_registry_layer.py).

The "registry" is an HTTPS server at a public-looking TEST-NET-2 address in a namespace
this module makes; every request but the version check is redirected to a canary server
on the namespace's private link address. The host itself can reach the canary (shown
below by following the same redirect with skopeo on the host's network), so only the
pull's namespace keeps a registry from steering the service into private networks.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import shutil
import subprocess

import pytest

import sandbox_service as sbx
from sbxnet import PublicHost

pytestmark = pytest.mark.timeout(300)

REGISTRY_PORT, CANARY_PORT = 5000, 8081
SERVER = r'''
import http.server, socketserver, ssl, sys, threading
addr, link, cert, key, hits, reg_port, canary_port = sys.argv[1:8]

class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):  # no reverse lookup of the address (no DNS in here)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "registry", self.server_address[1]

class Canary(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(hits, "a") as f:
            f.write(self.path + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a):
        pass

class Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
            return
        self.send_response(307)
        self.send_header("Location", "http://%s:%s/leak%s" % (link, canary_port, self.path))
        self.send_header("Content-Length", "0"); self.end_headers()
    do_HEAD = do_GET
    def log_message(self, *a):
        pass

canary = Server(("0.0.0.0", int(canary_port)), Canary)
threading.Thread(target=canary.serve_forever, daemon=True).start()
reg = Server((addr, int(reg_port)), Registry)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
reg.socket = ctx.wrap_socket(reg.socket, server_side=True)
reg.serve_forever()
'''


def _self_signed(addr: str, cert: str, key: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addr)])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName(
             [x509.IPAddress(ipaddress.ip_address(addr))]), critical=False)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .sign(k, hashes.SHA256()))
    with open(cert, "wb") as f:
        f.write(c.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


@pytest.fixture(scope="module")
def redirecting_registry(tmp_path_factory):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (scripts/install-system-deps.sh installs it)")
    tmp = tmp_path_factory.mktemp("redirecting-registry")
    host = PublicHost(f"198.51.100.{random.randrange(10, 250)}", random.randrange(0, 250))
    certs_d = f"/etc/containers/certs.d/{host.addr}:{REGISTRY_PORT}"
    try:
        cert, key, hits = str(tmp / "cert.pem"), str(tmp / "key.pem"), str(tmp / "hits")
        _self_signed(host.addr, cert, key)
        os.makedirs(certs_d, exist_ok=True)  # skopeo trusts the registry's certificate
        shutil.copy(cert, os.path.join(certs_d, "ca.crt"))
        open(hits, "w").close()
        host.start(["python3", "-c", SERVER, host.addr, host.link_ip, cert, key, hits,
                    str(REGISTRY_PORT), str(CANARY_PORT)],
                   REGISTRY_PORT)
        yield host, hits
    finally:
        host.close()
        shutil.rmtree(certs_d, ignore_errors=True)


def _hits(path: str) -> list[str]:
    with open(path) as f:
        return f.read().split()


def test_a_registry_cannot_redirect_a_pull_into_private_networks(server, redirecting_registry):
    host, hits = redirecting_registry
    ref = f"{host.addr}:{REGISTRY_PORT}/lure:latest"
    with pytest.raises(sbx.SandboxError) as e:
        sbx.Image.from_registry(ref).build()
    assert host.addr in str(e.value)
    assert _hits(hits) == [], "the pull followed the redirect to a private address"
    # the same request from the host's own network does follow it: only the namespace
    # stands between a registry's redirect and the canary
    subprocess.run(["skopeo", "inspect", "--raw", "--no-creds", f"docker://{ref}"],
                   capture_output=True, timeout=60)
    assert any(h.startswith("/leak/v2/lure/manifests/") for h in _hits(hits))
