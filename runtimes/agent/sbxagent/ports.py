"""Inbound ports: connect to a TCP port inside the sandbox and splice it with the host's
agent connection, so the service reaches a sandbox's server without any network between
them (a block_network sandbox has only loopback; nothing on the host listens for it).

Protocol (op "port_connect", {"port": N}): the agent connects to 127.0.0.1:N (then ::1),
answers one RESP frame, {"ok": true} or {"error": "port_refused" | "port_timeout" |
"port_error" | "bad_request", "message"}, and after an OK the connection is a raw byte
pipe both ways (no frames). A half-close travels: EOF from the host becomes a TCP
shutdown(SHUT_WR) to the in-sandbox server and the other way round; the pipe ends when
both directions have ended or either side errors.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import errno
import socket
import threading

from .proto import RESP

CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
_ADDRS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))


def _connect(port):
    """A connected socket, or a (code, message) pair saying why not."""
    refused = None
    for family, addr in _ADDRS:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(CONNECT_TIMEOUT_S)
        try:
            s.connect((addr, port))
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s, None
        except socket.timeout:
            s.close()
            return None, ("port_timeout", "connecting to port %d inside the sandbox timed "
                                          "out after %gs" % (port, CONNECT_TIMEOUT_S))
        except OSError as e:
            s.close()
            if e.errno in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
                           errno.ENETUNREACH):
                refused = e
                continue
            return None, ("port_error", "connecting to port %d inside the sandbox failed: "
                                        "%s" % (port, e.strerror or e))
    return None, ("port_refused", "nothing listens on port %d inside the sandbox (%s): start "
                                  "a server on 127.0.0.1 or 0.0.0.0 there first"
                  % (port, getattr(refused, "strerror", None) or "connection refused"))


def _pipe(src, dst, done):
    """Copy src -> dst until EOF, then half-close dst. Any error ends both directions."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    except OSError:
        for s in (src, dst):  # wake the other direction up: the pipe is broken
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    finally:
        done.set()


def handle_port(conn, req):
    port = req.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        conn.send_json(RESP, {"error": "bad_request", "message": "port must be 1-65535"})
        return
    tcp, why = _connect(port)
    if tcp is None:
        conn.send_json(RESP, {"error": why[0], "message": why[1]})
        return
    try:
        if not conn.send_json(RESP, {"ok": True}):
            return
        host = conn.sock
        back = threading.Event()
        threading.Thread(target=_pipe, args=(tcp, host, back), daemon=True).start()
        _pipe(host, tcp, threading.Event())  # host -> sandbox server in this worker
        back.wait()
    finally:
        tcp.close()
