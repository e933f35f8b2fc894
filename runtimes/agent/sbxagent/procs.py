"""Processes: the PID 1 reaper and one command in its own session.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import errno
import os
import signal
import struct
import threading
import time

from . import exits
from .proto import ERR, OUT

class Reaper:
    """PID 1 duty: wait for every child; hand exit statuses to whoever spawned them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiters = {}  # pid -> [event, status]
        self.early = {}  # statuses reaped before the spawner registered
        self.children = threading.Event()

    def spawn(self, fn):
        """Run fn() -> pid under the lock so the pid is registered before any dispatch."""
        with self.lock:
            pid = fn()
            wake_r, wake_w = os.pipe()
            slot = [threading.Event(), None, wake_r, wake_w]
            if pid in self.early:
                self._deliver(slot, self.early.pop(pid))
            else:
                self.waiters[pid] = slot
        self.children.set()
        return slot

    def run(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self.children.clear()
                self.children.wait(1.0)
                continue
            except InterruptedError:
                continue
            with self.lock:
                slot = self.waiters.pop(pid, None)
                if slot is None:
                    self.early[pid] = status
                    if len(self.early) > 4096:
                        self.early.clear()
                else:
                    self._deliver(slot, status)

    @staticmethod
    def _deliver(slot, status):
        slot[1] = status
        slot[0].set()
        try:
            os.write(slot[3], b"x")  # wakes a selector waiting on slot[2]
        except OSError:
            pass


REAPER = Reaper()


def exit_code_of(status):
    return exits.of_wait_status(status)


def _set_ctty(fd):
    """preexec hook for pty mode: make the pty the session's controlling terminal."""

    def setup():
        import fcntl
        import termios

        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)

    return setup


class Process:
    """One command in its own session, with pumps from its pipes to a connection."""

    def __init__(self, req):
        self.argv = req["argv"]
        self.env = req.get("env")
        self.cwd = req.get("cwd") or None
        self.uid = req.get("uid")
        self.gid = req.get("gid")
        self.timeout_s = req.get("timeout_s")
        self.pty = bool(req.get("pty"))
        self.rows = req.get("rows") or 24
        self.cols = req.get("cols") or 80
        self.timed_out = False
        self.pid = None
        self.slot = None
        self.stdin_fd = None
        self.out_fds = []  # [(fd, frame type)]
        self.pass_fds = ()  # extra fds the child keeps (an interpreter context's protocol)

    def start(self):
        import subprocess

        env = dict(os.environ)  # the sandbox's env; the request's env is layered on top
        env.update(self.env or {})
        if self.pty:
            import fcntl
            import termios

            master, slave = os.openpty()
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
            env.setdefault("TERM", "xterm-256color")
            try:
                popen = self._spawn(subprocess, env, slave, slave, slave, slave)
            finally:
                os.close(slave)
            self.stdin_fd = master
            self.out_fds = [(os.dup(master), OUT)]
            return popen
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            popen = self._spawn(subprocess, env, in_r, out_w, err_w, None)
        finally:
            os.close(in_r)
            os.close(out_w)
            os.close(err_w)
        self.stdin_fd = in_w
        self.out_fds = [(out_r, OUT), (err_r, ERR)]
        return popen

    def _spawn(self, subprocess, env, stdin, stdout, stderr, pty_slave):
        cwd = self.cwd
        if cwd and not os.path.isdir(cwd):
            raise FileNotFoundError(errno.ENOENT, "workdir does not exist", cwd)

        def fn():
            p = subprocess.Popen(
                self.argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                cwd=cwd, close_fds=True, pass_fds=self.pass_fds, start_new_session=True,
                user=self.uid, group=self.gid,
                extra_groups=[] if self.gid is not None else None,
                preexec_fn=_set_ctty(pty_slave) if pty_slave is not None else None,
            )
            self.popen = p
            return p.pid

        self.slot = REAPER.spawn(fn)
        self.pid = self.popen.pid
        return self.popen

    def signal(self, signum):
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signum)
            except OSError:
                pass

    def wait(self):
        """Wait for the leader (with the timeout); return (exit_code, signal)."""
        deadline = None if not self.timeout_s else time.monotonic() + float(self.timeout_s)
        while not self.slot[0].is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.timed_out = True
                self.signal(signal.SIGKILL)
                self.slot[0].wait()
                break
            self.slot[0].wait(left if left is not None else 3600)
        self.popen.returncode = self.slot[1]
        code, sig = exit_code_of(self.slot[1])
        if self.timed_out:
            code = exits.TIMEOUT
        return code, sig
