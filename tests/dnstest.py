"""A tiny authoritative DNS server for tests (UDP and TCP), from a dict zone.

A plain module (not conftest). Zone: {name: [ipv4, ...] | "cname-target" | {"txt": "..."}}.
Every query's name is appended to `log_path` (one per line) so a test can prove that a
name never reached it. Used in-process (`ZoneServer(...).start()` on loopback) and as a
script inside a test network namespace:
    python tests/dnstest.py ADDR PORT ZONE_JSON LOG_PATH
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def respond(data: bytes, zone: dict, log_path: str | None = None) -> bytes:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    qn = q.question[0].name.to_text(omit_final_dot=True).lower()
    qt = q.question[0].rdtype
    if log_path:
        with open(log_path, "a") as f:
            f.write(qn + "\n")
    name, v = qn, zone.get(qn)
    for _ in range(8):
        if not isinstance(v, str):
            break
        r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "CNAME", v + "."))
        name, v = v, zone.get(v)
    if v is None:
        r.set_rcode(dns.rcode.NXDOMAIN)
    elif qt == dns.rdatatype.A and isinstance(v, list):
        r.answer.append(dns.rrset.from_text_list(name + ".", 60, "IN", "A", v))
    elif qt == dns.rdatatype.TXT and isinstance(v, dict):
        r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "TXT", f'"{v["txt"]}"'))
    elif qt == dns.rdatatype.AAAA and isinstance(v, list):
        r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "AAAA", "2001:db8::1"))
    return r.to_wire()


class ZoneServer:
    def __init__(self, addr: str, port: int, zone: dict, log_path: str | None = None):
        self.zone, self.log_path = zone, log_path
        for attempt in range(20):  # port 0: UDP picks one, and TCP needs the same number free
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((addr, port))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket()
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((addr, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
                if port or attempt == 19:
                    raise
        self.tcp.listen(16)

    def start(self) -> "ZoneServer":
        threading.Thread(target=self._udp, daemon=True).start()
        threading.Thread(target=self._tcp, daemon=True).start()
        return self

    def _udp(self) -> None:
        while True:
            data, peer = self.udp.recvfrom(4096)
            try:
                self.udp.sendto(respond(data, self.zone, self.log_path), peer)
            except Exception:
                pass

    def _tcp(self) -> None:
        while True:
            c, _ = self.tcp.accept()
            try:
                c.settimeout(5)
                n = struct.unpack("!H", c.recv(2))[0]
                data = b""
                while len(data) < n:
                    data += c.recv(n - len(data))
                out = respond(data, self.zone, self.log_path)
                c.sendall(struct.pack("!H", len(out)) + out)
            except Exception:
                pass
            finally:
                c.close()


if __name__ == "__main__":
    srv = ZoneServer(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4])
    srv.start()
    threading.Event().wait()
