"""The sandbox's main command, which outlives host connections (server restarts).

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import errno
import os
import threading

from .execs import _describe
from .procs import Process
from .proto import (DRAIN_GRACE_S, ERR, EXIT, MAIN_BUFFER, OUT, READ_CHUNK, RESP, STARTED,
                    _close_quiet, _write_all)

class MainProcess:
    """The sandbox's main command: it outlives host connections so a restarted server can
    re-attach. Output is kept (the newest MAIN_BUFFER bytes per stream) with absolute
    offsets, so an attach can resume exactly where the last one stopped."""

    def __init__(self, proc):
        self.proc = proc
        self.cond = threading.Condition()
        self.bufs = {OUT: bytearray(), ERR: bytearray()}
        self.base = {OUT: 0, ERR: 0}  # absolute offset of bufs[t][0]
        self.open_streams = len(proc.out_fds)
        self.exit = None
        self.stdin_fd = None
        self.stdin_lock = threading.Lock()

    def pump(self, fd, ftype):
        try:
            while True:
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    break
                if not data:
                    break
                with self.cond:
                    buf = self.bufs[ftype]
                    buf += data
                    if len(buf) > MAIN_BUFFER:
                        drop = len(buf) - MAIN_BUFFER
                        del buf[:drop]
                        self.base[ftype] += drop
                    self.cond.notify_all()
        finally:
            os.close(fd)
            with self.cond:
                self.open_streams -= 1
                self.cond.notify_all()

    def run(self):
        code, sig = self.proc.wait()
        with self.cond:
            self.cond.wait_for(lambda: self.open_streams == 0, DRAIN_GRACE_S)
            self.exit = {"exit_code": code, "timed_out": self.proc.timed_out, "signal": sig}
            self.cond.notify_all()

    def attach(self, conn, offsets):
        """Send output from the given absolute offsets, live, then the exit frame."""
        pos = {OUT: int(offsets.get("stdout", 0)), ERR: int(offsets.get("stderr", 0))}
        while conn.alive:
            with self.cond:
                self.cond.wait_for(lambda: self.exit is not None or any(
                    self.base[t] + len(self.bufs[t]) > pos[t] for t in pos), 5.0)
                chunks = []
                for t in (OUT, ERR):
                    start = max(pos[t], self.base[t])
                    end = self.base[t] + len(self.bufs[t])
                    if end > start:
                        chunks.append((t, bytes(self.bufs[t][start - self.base[t]:])))
                        pos[t] = end
                done = self.exit
            for t, data in chunks:
                for i in range(0, len(data), READ_CHUNK * 4):
                    conn.send(t, data[i:i + READ_CHUNK * 4])
            if done is not None and not chunks:
                conn.send_json(EXIT, done)
                return


MAIN = []


def handle_main(conn, req):
    if req["op"] == "main_start":
        if MAIN:
            conn.send_json(RESP, {"error": "conflict", "message": "main command already started"})
            return
        proc = Process(req)
        try:
            proc.start()
        except (OSError, ValueError, TypeError) as e:
            conn.send_json(RESP, {"error": "exec_failed", "message": _describe(e, proc.argv)})
            return
        main = MainProcess(proc)
        if req.get("keep_stdin"):  # Modal's sb.stdin: written with main_stdin
            main.stdin_fd = proc.stdin_fd
        else:
            _close_quiet(proc.stdin_fd)
        for fd, ftype in proc.out_fds:
            threading.Thread(target=main.pump, args=(fd, ftype), daemon=True).start()
        threading.Thread(target=main.run, daemon=True).start()
        MAIN.append(main)
        conn.send_json(RESP, {"ok": True, "pid": proc.pid})
    elif not MAIN:
        conn.send_json(RESP, {"error": "not_found", "message": "this sandbox has no main command"})
    elif req["op"] == "main_stdin":
        _main_stdin(conn, MAIN[0], req)
    else:
        conn.send_json(STARTED, {"pid": MAIN[0].proc.pid})
        MAIN[0].attach(conn, req.get("offsets") or {})


def _main_stdin(conn, main, req):
    """Write to the main command's stdin (base64 `data`), then close it if `eof`."""
    import base64

    with main.stdin_lock:
        if main.stdin_fd is None:
            conn.send_json(RESP, {"error": "stdin_closed", "message": "the main command's "
                                  "stdin is closed (write_eof was called, or it was started "
                                  "without stdin)"})
            return
        try:
            data = base64.b64decode(req.get("data") or "")
            if data:
                _write_all(main.stdin_fd, data)
        except OSError as e:  # the command exited or closed its stdin
            _close_quiet(main.stdin_fd)
            main.stdin_fd = None
            conn.send_json(RESP, {"error": "stdin_closed", "message": "the main command no "
                                  "longer reads stdin (%s)" % e.strerror})
            return
        if req.get("eof"):
            _close_quiet(main.stdin_fd)
            main.stdin_fd = None
    conn.send_json(RESP, {"ok": True})
