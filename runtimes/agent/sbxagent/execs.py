"""One exec: a single thread multiplexes the command's pipes, stdin, the host's control
frames and the reaper's exit notification with a selector.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import os
import selectors
import signal
import struct
import threading
import time

from .procs import Process, exit_code_of
from . import exits
from .jsonc import loads
from .proto import (DRAIN_GRACE_S, EOF, ERR, EXIT, IN, READ_CHUNK, RESIZE, SIG,
                    STARTED, _close_quiet, recv_frame)

def handle_exec(conn, req):
    """One command, one connection, one thread: a selector multiplexes its output pipes,
    stdin, the host's control frames and the reaper's exit notification."""
    proc = Process(req)
    try:
        proc.start()
    except (OSError, ValueError, TypeError) as e:
        # like a shell: 127 when the command is missing, 126 when it cannot run
        missing = isinstance(e, FileNotFoundError) and e.filename in (proc.argv[0], None)
        conn.send_json(STARTED, {"pid": 0})
        conn.send(ERR, ("sbx: %s\n" % _describe(e, proc.argv)).encode())
        conn.send_json(EXIT, {"exit_code": exits.NOT_FOUND if missing else exits.NOT_EXECUTABLE,
                              "timed_out": False,
                              "signal": None})
        return
    conn.send_json(STARTED, {"pid": proc.pid})
    try:
        _exec_loop(conn, proc)
    finally:
        for fd in (proc.slot[2], proc.slot[3]):
            _close_quiet(fd)
    code, sig = exit_code_of(proc.slot[1])
    if proc.timed_out:
        code = exits.TIMEOUT
    conn.send_json(EXIT, {"exit_code": code, "timed_out": proc.timed_out, "signal": sig})


def _exec_loop(conn, proc):
    sel = selectors.DefaultSelector()
    outs = {}
    for fd, ftype in proc.out_fds:
        sel.register(fd, selectors.EVENT_READ, ftype)
        outs[fd] = ftype
    sel.register(conn.sock, selectors.EVENT_READ, "ctl")
    sel.register(proc.slot[2], selectors.EVENT_READ, "wake")
    os.set_blocking(proc.stdin_fd, False)
    pending = bytearray()
    stdin_state = "open"  # open -> eof_pending -> closed
    host = True
    deadline = time.monotonic() + float(proc.timeout_s) if proc.timeout_s else None
    exit_at = None
    try:
        while True:
            now = time.monotonic()
            if exit_at is None and proc.slot[0].is_set():
                exit_at = now
            if exit_at is not None and (not outs or now - exit_at >= DRAIN_GRACE_S):
                break
            wait = None
            if exit_at is not None:
                wait = exit_at + DRAIN_GRACE_S - now
            elif deadline is not None:
                if now >= deadline:
                    proc.timed_out = True
                    proc.signal(signal.SIGKILL)
                    deadline = None
                    continue
                wait = deadline - now
            for key, _ in sel.select(wait):
                tag = key.data
                if tag == "wake":
                    os.read(proc.slot[2], 64)
                elif tag == "ctl":
                    ftype, payload = _recv_ctl(conn.sock)
                    if ftype is None:  # the host went away: nobody can see the command
                        host = False
                        sel.unregister(conn.sock)
                        proc.signal(signal.SIGKILL)
                    elif ftype == IN and stdin_state == "open":
                        pending += _tty_signals(proc, payload) if proc.pty else payload
                    elif ftype == EOF and stdin_state == "open":
                        if proc.pty:
                            pending += b"\x04"
                        else:
                            stdin_state = "eof_pending"
                    elif ftype == SIG:
                        proc.signal(int(loads(payload)["signal"]))
                    elif ftype == RESIZE and proc.pty:
                        import fcntl
                        import termios

                        size = loads(payload)
                        fcntl.ioctl(proc.stdin_fd, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", size["rows"], size["cols"], 0, 0))
                elif tag == "stdin":
                    pass
                else:
                    fd = key.fd
                    try:
                        data = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""  # EIO: the pty's slave side closed
                    if data:
                        if host and not conn.send(tag, data):
                            host = False
                            sel.unregister(conn.sock)
                            proc.signal(signal.SIGKILL)
                    else:
                        sel.unregister(fd)
                        del outs[fd]
                        os.close(fd)
            stdin_state = _flush_stdin(sel, proc, pending, stdin_state)
    finally:
        sel.close()
        if outs:  # background children still hold the pipes: drain them elsewhere
            threading.Thread(target=_drain, args=(list(outs),), daemon=True).start()
        if stdin_state != "closed":
            _close_quiet(proc.stdin_fd)


def _tty_signals(proc, data):
    """This runsc's pty never turns ^C/^\\/^Z into signals: do what the line discipline
    would, sending them to the terminal's foreground process group."""
    import termios

    try:
        attrs = termios.tcgetattr(proc.stdin_fd)
    except (OSError, termios.error):
        return data
    if not attrs[3] & termios.ISIG:
        return data
    cc = attrs[6]
    keys = {}
    for idx, signum in ((termios.VINTR, signal.SIGINT), (termios.VQUIT, signal.SIGQUIT),
                        (termios.VSUSP, signal.SIGTSTP)):
        key = cc[idx]
        key = key if isinstance(key, bytes) else bytes([key])
        if key != b"\x00":
            keys[key[0]] = signum
    if not any(b in keys for b in data):
        return data
    out = bytearray()
    for b in data:
        if b in keys:
            _signal_session(proc.pid, keys[b])
        else:
            out.append(b)
    return bytes(out)


def _signal_session(sid, signum):
    """Signal every process group of a session. (tcgetpgrp is wrong under this gVisor, so
    the foreground group is unknown; interactive shells ignore SIGINT, so signalling every
    group reaches the foreground job the way a terminal would.)"""
    groups = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[3] == str(sid):
                groups.add(int(fields[2]))
    for pgid in groups or (sid,):
        try:
            os.killpg(pgid, signum)
        except OSError:
            pass


def _recv_ctl(sock):
    try:
        return recv_frame(sock)
    except (OSError, ValueError):
        return None, None


def _flush_stdin(sel, proc, pending, state):
    """Write what fits into the (non-blocking) stdin pipe; close it after EOF."""
    if state == "closed":
        return state
    while pending:
        try:
            n = os.write(proc.stdin_fd, pending)
        except BlockingIOError:
            break
        except OSError:
            pending.clear()  # the command closed its stdin
            break
        del pending[:n]
    try:
        sel.modify(proc.stdin_fd, selectors.EVENT_WRITE, "stdin") if pending else sel.unregister(proc.stdin_fd)
    except KeyError:
        if pending:
            sel.register(proc.stdin_fd, selectors.EVENT_WRITE, "stdin")
    except (ValueError, OSError):
        pass
    if not pending and state == "eof_pending":
        _close_quiet(proc.stdin_fd)
        return "closed"
    return state


def _drain(fds):
    """Read and discard output that outlives its command, so writers never block."""
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    while sel.get_map():
        for key, _ in sel.select():
            try:
                data = os.read(key.fd, READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fd)
                _close_quiet(key.fd)


def _describe(e, argv=None):
    if isinstance(e, FileNotFoundError) and argv and e.filename in (argv[0], None):
        return "command not found: %s" % (argv[0],)
    if isinstance(e, OSError):
        name = e.filename if e.filename is not None else ""
        return "%s%s" % (os.strerror(e.errno) if e.errno else str(e), (": %s" % name) if name else "")
    return str(e)
