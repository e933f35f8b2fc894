"""Test helper: a stand-in for a host on the internet, without leaving the machine.

`PublicHost` makes a network namespace (`sbxt-<rand>`) with a veth pair to the host, a
TEST-NET-2 address (198.51.100.0/24, which the service does not block) on its side, a
host route to that address, and runs a command inside it. Its link addresses
(10.233.<link>.0/30) are private, so the service blocks them: a server bound to the
namespace's link address is reachable from the host but never from a sandbox.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time


def ip(*argv: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


class PublicHost:
    """A namespace with a "public" address `addr`, running `argv` inside once `start`ed."""

    def __init__(self, addr: str, link: int):
        tag = secrets.token_hex(3)
        self.addr, self.ns = addr, f"sbxt-{tag}"
        self.hif, self.nif = f"sbt{tag}h", f"sbt{tag}n"  # not the sandboxes' sbxh* prefix
        self.host_ip, self.link_ip = f"10.233.{link}.1", f"10.233.{link}.2"
        self.proc: subprocess.Popen | None = None
        try:
            ip("netns", "add", self.ns)
            ip("link", "add", self.hif, "type", "veth", "peer", "name", self.nif, "netns", self.ns)
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.hif)
            ip("link", "set", self.hif, "up")
            ip("-n", self.ns, "addr", "add", f"{self.link_ip}/30", "dev", self.nif)
            ip("-n", self.ns, "addr", "add", f"{addr}/32", "dev", self.nif)
            ip("-n", self.ns, "link", "set", self.nif, "up")
            ip("-n", self.ns, "link", "set", "lo", "up")
            ip("-n", self.ns, "route", "add", "default", "via", self.host_ip)
            ip("route", "add", f"{addr}/32", "via", self.link_ip, "dev", self.hif)
        except BaseException:
            self.close()
            raise

    def start(self, argv: list[str], wait_port: int) -> None:
        """Run `argv` in the namespace; return once `addr:wait_port` accepts connections."""
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv],
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.addr, wait_port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        ip("route", "del", f"{self.addr}/32", check=False)
        ip("link", "del", self.hif, check=False)
        ip("netns", "del", self.ns, check=False)
