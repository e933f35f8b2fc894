"""PID 1's first moments: listen, answer the host's readiness ping, load the rest.

A fresh sandbox opens every file for the first time through the gofer, so each module
imported before the agent answers costs far more than it does later (measured on the 2024
runsc with systrap: the full agent's imports put ~37 ms on a `python3 -I -S` start in a
warm sandbox and more in a cold one). This module uses only modules built into the
interpreter (`_socket`, `_thread`, `_signal`, `_struct`; `os` and `sys` are loaded before
any code runs), so the socket is listening and the ping answered at once. The rest of the
agent (`server` and what every exec needs, `subprocess` included) loads in a background
thread while the host goes on with the create; any request but a ping waits for it. No
handler ever runs while that thread imports, so no two threads import at once.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import _signal
import _socket
import _struct
import _thread
import os
import sys

# the frame format of proto.py, for the one frame this module answers (a test pins it)
_HEADER = ">BI"
_REQ, _RESP = ord("R"), ord("P")
PING = b'{"op":"ping"}'  # what AgentClient.ping sends, byte for byte


def pong():
    body = b'{"ok":true,"pid":%d,"agent":1}' % os.getpid()
    return _struct.pack(_HEADER, _RESP, len(body)) + body


def error_frame(message):
    body = ('{"error":"agent_error","message":"%s"}'
            % message.replace("\\", "/").replace('"', "'")).encode()
    return _struct.pack(_HEADER, _RESP, len(body)) + body


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _ignore_signal(signum, frame):
    pass


class Boot:
    """The listening socket and the state of the background load."""

    def __init__(self, path):
        self.path = path
        self.loaded = _thread.allocate_lock()
        self.loaded.acquire()  # released once `server` and its workers are up (or failed)
        self.done = False
        self.failure = None
        self.server = None
        self.workers = None
        self.srv = None

    def listen(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        srv = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        srv.bind(self.path)
        srv.listen(128)  # ready: the host may connect now
        self.srv = srv

    def load(self):
        """Background: import the agent proper and start its workers on the same socket;
        then wake the early loop with a connection of its own so it stops accepting."""
        try:
            from . import server

            server.preload()
            self.workers = server.start_workers(self.srv.fileno())
            self.server = server
        except BaseException as e:  # every request but a ping is answered with it
            self.failure = "%s: %s" % (type(e).__name__, e)
        finally:
            self.loaded.release()
            self.done = self.server is not None
        if self.done:
            try:
                wake = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                wake.connect(self.path)
                wake.close()
            except OSError:
                pass

    def wait_loaded(self):
        self.loaded.acquire()
        self.loaded.release()

    def early_loop(self):
        """Main thread: accept until the rest has loaded (for good, if it cannot); answer
        pings, hand anything else to a thread that waits for the load."""
        while not self.done:
            try:
                fd, _ = self.srv._accept()
            except OSError:
                continue
            sock = _socket.socket(fileno=fd)
            try:
                head = _recv_exact(sock, _struct.calcsize(_HEADER))
                ftype, length = _struct.unpack(_HEADER, head) if head else (None, 0)
                payload = _recv_exact(sock, length) if length else b""
            except OSError:
                ftype, payload = None, None
            if ftype == _REQ and payload == PING:
                try:
                    sock.sendall(pong())
                except OSError:
                    pass
                sock.close()
            elif ftype is None or payload is None:  # the load's wake-up, or a host gone
                sock.close()
            else:
                _thread.start_new_thread(self._late, (sock, ftype, payload))

    def _late(self, sock, ftype, payload):
        self.wait_loaded()
        if self.server is None:
            try:
                sock.sendall(error_frame("the agent failed to load: %s" % self.failure))
            except OSError:
                pass
            sock.close()
            return
        self.server.handle_first(sock.detach(), ftype, payload)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/.sbx/run/agent.sock"
    # PID 1 must not die of these, but must not *ignore* them either: an ignored signal
    # stays ignored across exec, and every command would inherit that. A handler resets.
    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(sig, _ignore_signal)
    boot = Boot(path)
    boot.listen()
    _thread.start_new_thread(boot.load, ())
    boot.early_loop()  # returns once the rest is up; never if it could not load
    boot.server.main_loop(boot.workers)
