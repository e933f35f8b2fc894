"""The agent's socket server: workers, one handler per connection.

Control channel: a Unix socket in a per-sandbox directory bind-mounted from the host
(runsc --host-uds=create), so a restarted server reconnects to running sandboxes. One
connection per request, handled by reused worker threads. PID 1 starts in boot.py,
which listens and answers the first ping before this module is even imported.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import os
import socket
import threading
import time

from .execs import handle_exec
from .files import handle_file
from .jsonc import loads
from .mainproc import handle_main
from .ports import handle_port
from .procs import REAPER
from .proto import REQ, RESP, Conn, recv_frame
from .snapshot import handle_snapshot

def handle(sock):
    """One connection accepted by a worker: its first frame is the request."""
    try:
        ftype, payload = recv_frame(sock)
    except (OSError, ValueError):
        ftype = payload = None
    handle_first(sock, ftype, payload)


def handle_first(sock, ftype, payload):
    """One connection whose first frame was read (by a worker, or by boot.py's early loop:
    then `sock` is a file descriptor)."""
    if not isinstance(sock, socket.socket):
        sock = socket.socket(fileno=sock)
    conn = Conn(sock)
    try:
        if ftype != REQ:
            return
        req = loads(payload)
        op = req.get("op")
        if op == "ping":
            conn.send_json(RESP, {"ok": True, "pid": os.getpid(), "agent": 1})
        elif op == "setenv":  # a pre-booted sandbox handed to its caller: its env
            env = req.get("env") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise ValueError("env must map str to str")
            os.environ.update(env)
            conn.send_json(RESP, {"ok": True})
        elif op == "exec":
            handle_exec(conn, req)
        elif op in ("main_start", "main_attach", "main_stdin"):
            handle_main(conn, req)
        elif op == "port_connect":
            handle_port(conn, req)
        elif op in ("fs_manifest", "fs_tar"):
            handle_snapshot(conn, req)
        elif str(op).startswith("ctx_"):  # interpreter contexts: imported on first use
            from .contexts import handle_context

            handle_context(conn, req)
        else:
            handle_file(conn, req)
    except Exception as e:  # never let one bad request take PID 1 down
        try:
            conn.send_json(RESP, {"error": "agent_error", "message": "%s: %s" % (type(e).__name__, e)})
        except Exception:
            pass
    finally:
        _linger_close(sock)


def _linger_close(sock):
    """Close without resetting the connection: the host may still be writing (stdin EOF
    after a command that failed to start). Closing with unread data would send RST, and
    the host would lose the frames already sent. Stop writing, drain briefly, close."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2.0)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Workers:
    """Reused handler threads that accept connections themselves: creating a thread costs
    ~1.3 ms under gVisor's ptrace platform, and handing a socket from an accept thread to
    a worker costs a wake-up. There is always one idle worker waiting in accept()."""

    MAX_IDLE = 16

    def __init__(self, srv):
        self.srv = srv
        self.lock = threading.Lock()
        self.idle = 0

    def start(self, n=2):
        for _ in range(n):
            self._spawn()

    def _spawn(self):
        with self.lock:
            self.idle += 1
        try:
            threading.Thread(target=self._work, daemon=True).start()
        except RuntimeError:  # no thread to be had (RLIMIT_NPROC): the caller goes on
            with self.lock:
                self.idle -= 1
            return False
        return True

    def _work(self):
        while True:
            try:
                sock, _ = self.srv.accept()
            except InterruptedError:
                continue
            except OSError:
                time.sleep(0.01)
                continue
            with self.lock:
                self.idle -= 1
                spawn = self.idle == 0
            if spawn:  # keep someone in accept() while this one works
                self._spawn()  # if no thread can be had, this one comes back to accept
            handle(sock)
            with self.lock:
                if self.idle >= self.MAX_IDLE:
                    return
                self.idle += 1


def preload():
    """What the first exec, file operation or pty would import: loaded here, in boot.py's
    background load, so no handler imports while another thread does and the first exec
    does not pay for it (`subprocess` alone is ~15-20 ms under gVisor). A module this
    image's Python lacks (termios, fcntl: ptys only) fails the request that needs it, as it
    would without the preload, never the whole agent."""
    import subprocess  # noqa: F401

    for name in ("fcntl", "termios"):
        try:
            __import__(name)
        except ImportError:
            pass


def start_workers(listen_fd):
    """The reaper and the workers, accepting on the (already listening) socket `listen_fd`
    through a socket object of their own."""
    srv = socket.socket(fileno=os.dup(listen_fd))
    threading.Thread(target=REAPER.run, daemon=True).start()
    workers = Workers(srv)
    workers.start(2)
    return workers


def main_loop(workers):
    """PID 1's main thread waits (signals need a live main thread), and puts a worker back
    in accept() if none could be spawned (RLIMIT_NPROC)."""
    while True:
        time.sleep(1.0)
        if workers.idle == 0:
            workers._spawn()
