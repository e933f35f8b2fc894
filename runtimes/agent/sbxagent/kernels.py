"""One interpreter context: a persistent python3 process (kernel.py) with its own state.

The agent starts, tracks, interrupts and kills it (the registry and ops: contexts.py). One thread per context pumps the
kernel's stdout, stderr and event pipes to whichever host connection runs the current
cell (output between cells is dropped). A run waits for the kernel's "done" event, its
timeout (SIGINT), the host going away (SIGINT), or the process dying; an interrupt is
repeated every second and escalates to SIGKILL of the context's session after
INTERRUPT_KILL_S, which loses the context (later runs get "context_dead").

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import json
import os
import selectors
import shutil
import signal
import sys
import threading
import time

from .execs import _describe
from .procs import Process, exit_code_of
from .proto import (ERR, EVENT, OUT, READ_CHUNK, SIG, STARTED, _close_quiet, _write_all,
                    recv_frame)

READY_TIMEOUT_S = 30.0
INTERRUPT_REPEAT_S = 1.0
INTERRUPT_KILL_S = 5.0
DEFAULT_OUTPUT_CAP = 1 << 20
MAX_EVENT_LINE = 14 << 20  # an event must fit in one agent frame (proto.MAX_FRAME, 16 MiB)
AGENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = "import sys; sys.path.append(%r); from sbxagent.kernel import main; main()" % AGENT_DIR
STREAM_NAMES = {OUT: "stdout", ERR: "stderr"}


class ContextError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Cell:
    def __init__(self, conn, cap, timeout_s):
        self.conn = conn
        self.cap = cap
        self.timeout_s = timeout_s
        self.sent = {OUT: 0, ERR: 0}
        self.truncated = {OUT: False, ERR: False}
        self.done = False
        self.timed_out = False
        self.interrupt_at = None
        self.last_sigint = 0.0
        self.killed = False


class Context:
    def __init__(self, ctx_id):
        self.id = ctx_id
        self.created_at = time.time()
        self.lock = threading.Lock()  # cell, exit
        self.fd_lock = threading.Lock()  # req_w: a run writes, the pump closes
        self.cell = None
        self.exit = None  # (exit_code, signal) once the process is gone
        self.info = {}
        self.ready = threading.Event()
        self.boot_output = bytearray()
        self.wake_r, self.wake_w = os.pipe()
        self.proc = None
        self.req_w = self.ev_r = None
        self.thread = None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self, req):
        env = dict(req.get("env") or {})
        if "MPLBACKEND" not in env and "MPLBACKEND" not in os.environ:
            env["MPLBACKEND"] = "Agg"  # figures render off-screen; the kernel sends them as PNG
        path = env.get("PATH", os.environ.get("PATH"))
        python = "python3" if shutil.which("python3", path=path) else sys.executable
        req_r, self.req_w = os.pipe()
        self.ev_r, ev_w = os.pipe()
        proc = Process({"argv": [python, "-c", BOOT, str(req_r), str(ev_w)], "env": env,
                        "cwd": req.get("cwd"), "uid": req.get("uid"), "gid": req.get("gid")})
        proc.pass_fds = (req_r, ev_w)
        try:
            proc.start()
        except (OSError, ValueError, TypeError) as e:
            raise ContextError("exec_failed", "cannot start python3 for the context: %s"
                               % _describe(e, proc.argv))
        finally:
            os.close(req_r)
            os.close(ev_w)
        _close_quiet(proc.stdin_fd)  # stdin is at EOF: input() raises EOFError
        self.proc = proc
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()
        if not self.ready.wait(READY_TIMEOUT_S):
            self.kill()
            raise ContextError("exec_failed", "the context's python3 did not start within %gs"
                               % READY_TIMEOUT_S)
        if self.exit is not None:
            out = bytes(self.boot_output).decode(errors="replace").strip()
            raise ContextError("exec_failed", "the context's python3 exited at start (%s)%s"
                               % (self._how(), (": " + out[-2000:]) if out else ""))

    def kill(self):
        if self.proc is not None and self.proc.pid:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self):
        """Kill the process and wait briefly for the pump and any run to finish."""
        self.kill()
        if self.thread is not None:
            self.thread.join(5.0)
        deadline = time.monotonic() + 5.0
        while self.cell is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.cell is None:
            _close_quiet(self.wake_r)
            _close_quiet(self.wake_w)

    def describe(self):
        with self.lock:
            alive, busy = self.exit is None, self.cell is not None
        return {"context_id": self.id, "language": "python", "pid": self.info.get("pid"),
                "python": self.info.get("python"), "cwd": self.info.get("cwd"),
                "created_at": self.created_at, "alive": alive, "busy": busy}

    def _how(self):
        code, sig = self.exit or (None, None)
        return "killed by signal %d" % sig if sig else "exit code %s" % code

    def dead_message(self):
        return ("context %s is dead (its python3 process ended, %s): its variables are lost. "
                "Create a new context (or delete this one)" % (self.id, self._how()))

    def _wake(self):
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    # ---- the pump: kernel pipes -> the running cell's connection -------------------------
    def _pump(self):
        sel = selectors.DefaultSelector()
        for fd, tag in self.proc.out_fds:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, tag)
        os.set_blocking(self.ev_r, False)
        sel.register(self.ev_r, selectors.EVENT_READ, "event")
        sel.register(self.proc.slot[2], selectors.EVENT_READ, "exit")
        buf = bytearray()
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "exit":
                        for fd, tag in list((k.fd, k.data) for k in sel.get_map().values()):
                            if tag != "exit":
                                while self._read(sel, fd, tag, buf):
                                    pass
                        return
                    self._read(sel, key.fd, key.data, buf)
        finally:
            for fd in [k.fd for k in sel.get_map().values() if k.data != "exit"]:
                _close_quiet(fd)
            sel.close()
            if self.proc.slot[0].is_set():  # the reaper is done with the wake pipe
                _close_quiet(self.proc.slot[2])
                _close_quiet(self.proc.slot[3])
            status = self.proc.slot[1]
            with self.lock:
                self.exit = exit_code_of(status) if status is not None else (None, None)
            self.kill()  # whatever the context left running in its session
            with self.fd_lock:
                _close_quiet(self.req_w)
                self.req_w = None
            self.ready.set()
            self._wake()

    def _read(self, sel, fd, tag, buf):
        """One non-blocking read; False when nothing more is there now."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            sel.unregister(fd)
            _close_quiet(fd)
            return False
        if tag != "event":
            self._output(tag, data)
            return True
        buf += data
        while True:
            line, sep, rest = bytes(buf).partition(b"\n")
            if not sep:
                if len(buf) > MAX_EVENT_LINE:
                    buf.clear()
                break
            buf[:] = rest
            try:
                self._event(sel, json.loads(line))
            except ValueError:
                pass
        return True

    def _output(self, tag, data):
        with self.lock:
            cell = self.cell
        if cell is None or cell.done:
            if not self.ready.is_set():  # kept for the error message of a failed start
                self.boot_output += data
                del self.boot_output[:-4096]
            return  # output between cells (background threads) is dropped
        room = cell.cap - cell.sent[tag]
        if room > 0:
            cell.conn.send(tag, data[:room])
            cell.sent[tag] += min(room, len(data))
        if len(data) > room and not cell.truncated[tag]:
            cell.truncated[tag] = True
            cell.conn.send(tag, ("\n[sbx: %s truncated: this cell wrote more than %d bytes; "
                                 "the rest was dropped]\n" % (STREAM_NAMES[tag], cell.cap)).encode())

    def _event(self, sel, ev):
        kind = ev.get("type")
        if kind == "ready":
            self.info = ev
            self.ready.set()
            return
        if kind == "done":  # output written before "done" is in the pipes: send it first
            for fd, tag in [(k.fd, k.data) for k in sel.get_map().values() if k.data in STREAM_NAMES]:
                while self._read(sel, fd, tag, None):
                    pass
            with self.lock:
                if self.cell is not None:
                    self.cell.done = True
            self._wake()
            return
        with self.lock:
            cell = self.cell
        if cell is None or cell.done:
            return
        if kind == "error" and ev.get("name") == "KeyboardInterrupt":
            if cell.timed_out:
                ev["value"] = ("the cell ran past its timeout of %gs and was interrupted; the "
                               "context keeps its earlier state" % cell.timeout_s)
            elif cell.interrupt_at is not None:
                ev["value"] = "interrupted by request; the context keeps its earlier state"
        cell.conn.send_json(EVENT, ev)

    # ---- running a cell -------------------------------------------------------------------
    def interrupt(self):
        """SIGINT the running cell (repeated by its run until it stops); False if idle."""
        with self.lock:
            cell = self.cell
            if cell is None or cell.done or self.exit is not None:
                return False
            now = time.monotonic()
            if cell.interrupt_at is None:
                cell.interrupt_at = now
            cell.last_sigint = now
            if not self.proc.slot[0].is_set():
                try:
                    os.kill(self.proc.pid, signal.SIGINT)
                except OSError:
                    pass
        self._wake()
        return True

    def run(self, conn, req):
        code = req.get("code")
        if not isinstance(code, str):
            raise ContextError("bad_request", "code must be a string")
        timeout_s = req.get("timeout_s")
        cap = int(req.get("max_output_bytes") or DEFAULT_OUTPUT_CAP)
        with self.lock:
            if self.exit is not None:
                raise ContextError("context_dead", self.dead_message())
            if self.cell is not None:
                raise ContextError("context_busy", "context %s is running another cell: wait "
                                   "for it, or interrupt it" % self.id)
            cell = self.cell = Cell(conn, cap, timeout_s)
        start = time.monotonic()
        try:
            while True:  # stale wake-ups from the previous cell
                try:
                    os.set_blocking(self.wake_r, False)
                    if not os.read(self.wake_r, 4096):
                        break
                except BlockingIOError:
                    break
            conn.send_json(STARTED, {"pid": self.proc.pid})
            try:
                with self.fd_lock:
                    if self.req_w is not None:
                        _write_all(self.req_w, (json.dumps({"code": code}) + "\n").encode())
            except OSError:
                pass  # the kernel died: the pump reports it
            self._wait(conn, cell, start)
        finally:
            with self.lock:
                died = self.exit is not None and not cell.done
            if died:
                why = ("the cell ignored interrupts for %gs, so its context was killed"
                       % INTERRUPT_KILL_S if cell.killed else
                       "the context's python3 process ended (%s) while the cell ran"
                       % self._how())
                conn.send_json(EVENT, {"type": "error", "name": "ContextDied", "traceback": "",
                                       "value": why + ": its variables are lost; create a new "
                                       "context"})
            conn.send_json(EVENT, {
                "type": "end", "duration_ms": round((time.monotonic() - start) * 1000, 3),
                "timed_out": cell.timed_out, "interrupted": cell.interrupt_at is not None,
                "stdout_truncated": cell.truncated[OUT], "stderr_truncated": cell.truncated[ERR],
                "context_alive": not died})
            with self.lock:
                self.cell = None

    def _wait(self, conn, cell, start):
        sel = selectors.DefaultSelector()
        sel.register(conn.sock, selectors.EVENT_READ, "ctl")
        os.set_blocking(self.wake_r, False)
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        deadline = start + float(cell.timeout_s) if cell.timeout_s else None
        try:
            while True:
                with self.lock:
                    if cell.done or self.exit is not None:
                        return
                now = time.monotonic()
                if deadline is not None and now >= deadline and not cell.timed_out:
                    cell.timed_out = True
                    self.interrupt()
                if cell.interrupt_at is not None and not cell.killed:
                    if now - cell.interrupt_at >= INTERRUPT_KILL_S:
                        cell.killed = True
                        self.kill()
                    elif now - cell.last_sigint >= INTERRUPT_REPEAT_S:
                        self.interrupt()  # an `except:` may have swallowed the last one
                waits = []
                if deadline is not None and not cell.timed_out:
                    waits.append(deadline - now)
                if cell.interrupt_at is not None and not cell.killed:
                    waits.append(min(cell.last_sigint + INTERRUPT_REPEAT_S,
                                     cell.interrupt_at + INTERRUPT_KILL_S) - now)
                for key, _ in sel.select(max(0.0, min(waits)) if waits else None):
                    if key.data == "wake":
                        try:
                            os.read(self.wake_r, 4096)
                        except OSError:
                            pass
                        continue
                    try:
                        ftype, payload = recv_frame(conn.sock)
                    except (OSError, ValueError):
                        ftype = None
                    if ftype is None:  # the host went away: nobody will see the cell's end
                        sel.unregister(conn.sock)
                        conn.alive = False
                        self.interrupt()
                    elif ftype == SIG:
                        self.interrupt()
        finally:
            sel.close()
