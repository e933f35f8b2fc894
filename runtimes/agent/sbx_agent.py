#!/usr/bin/env python3
"""The in-sandbox agent: PID 1 of every sandbox (runtimes layer, runs INSIDE gVisor).

Stdlib only, Python 3.9+. It must not import anything from the project: this file is
bind-mounted read-only into the sandbox and run by the image's own python3. The host
side imports it too, for the frame constants and helpers, so both ends share one
definition of the wire format.

Duties: reap zombies; run each command in its own session (process group) with the
requested user, workdir and env; stream stdout/stderr separately; take stdin and EOF;
deliver signals to the whole process group; enforce per-exec timeouts; do file
operations from inside the sandbox (the host never resolves sandbox-controlled paths).

Control channel: a Unix socket in a per-sandbox directory bind-mounted from the host
(runsc --host-uds=create), so a restarted server reconnects to running sandboxes.
One connection per request. Frames: 1 byte type, 4 bytes big-endian length, payload.
"""

import errno
import json
import os
import queue
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time

HEADER = struct.Struct(">BI")
MAX_FRAME = 16 * 1024 * 1024

REQ = ord("R")  # host -> agent: JSON request, first frame of a connection
RESP = ord("P")  # agent -> host: JSON response
STARTED = ord("T")  # agent -> host: JSON {"pid"}
OUT = ord("O")  # stdout bytes
ERR = ord("E")  # stderr bytes
IN = ord("I")  # stdin bytes
EOF = ord("C")  # stdin end (host -> agent), or end of a data stream (agent -> host)
SIG = ord("S")  # JSON {"signal": n}
RESIZE = ord("Z")  # JSON {"rows", "cols"}
EXIT = ord("X")  # JSON {"exit_code", "timed_out", "signal"}
DATA = ord("D")  # file bytes, either way

EXIT_TIMEOUT = 124
READ_CHUNK = 64 * 1024
DRAIN_GRACE_S = 0.25
MAIN_BUFFER = 16 * 1024 * 1024


def encode(ftype, payload=b""):
    return HEADER.pack(ftype, len(payload)) + payload


def encode_json(ftype, obj):
    return encode(ftype, json.dumps(obj, separators=(",", ":")).encode())


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None, None
    ftype, length = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise ValueError("frame too large")
    payload = recv_exact(sock, length) if length else b""
    if payload is None:
        return None, None
    return ftype, payload


class Conn:
    """A socket with a write lock so several pump threads can send frames."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.alive = True

    def send(self, ftype, payload=b""):
        if not self.alive:
            return False
        try:
            with self.lock:
                self.sock.sendall(encode(ftype, payload))
            return True
        except OSError:
            self.alive = False
            return False

    def send_json(self, ftype, obj):
        return self.send(ftype, json.dumps(obj, separators=(",", ":")).encode())


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
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


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
                cwd=cwd, close_fds=True, start_new_session=True,
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
            code = EXIT_TIMEOUT
        return code, sig


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
        conn.send_json(EXIT, {"exit_code": 127 if missing else 126, "timed_out": False,
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
        code = EXIT_TIMEOUT
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
                        proc.signal(int(json.loads(payload)["signal"]))
                    elif ftype == RESIZE and proc.pty:
                        import fcntl
                        import termios

                        size = json.loads(payload)
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
        _close_quiet(proc.stdin_fd)
        for fd, ftype in proc.out_fds:
            threading.Thread(target=main.pump, args=(fd, ftype), daemon=True).start()
        threading.Thread(target=main.run, daemon=True).start()
        MAIN.append(main)
        conn.send_json(RESP, {"ok": True, "pid": proc.pid})
    elif not MAIN:
        conn.send_json(RESP, {"error": "not_found", "message": "this sandbox has no main command"})
    else:
        conn.send_json(STARTED, {"pid": MAIN[0].proc.pid})
        MAIN[0].attach(conn, req.get("offsets") or {})


def _close_quiet(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _describe(e, argv=None):
    if isinstance(e, FileNotFoundError) and argv and e.filename in (argv[0], None):
        return "command not found: %s" % (argv[0],)
    if isinstance(e, OSError):
        name = e.filename if e.filename is not None else ""
        return "%s%s" % (os.strerror(e.errno) if e.errno else str(e), (": %s" % name) if name else "")
    return str(e)


def _errno_code(e):
    return {
        errno.ENOENT: "not_found", errno.EISDIR: "is_a_directory", errno.ENOTDIR: "not_a_directory",
        errno.EEXIST: "already_exists", errno.EACCES: "permission_denied",
        errno.EPERM: "permission_denied", errno.ENOTEMPTY: "not_empty", errno.ENOSPC: "no_space",
        errno.EROFS: "read_only", errno.ENAMETOOLONG: "invalid_path",
    }.get(e.errno, "file_error")


def _stat_entry(path, name=None):
    st = os.lstat(path)
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else (
        "file" if stat.S_ISREG(st.st_mode) else "other")
    return {"name": name if name is not None else os.path.basename(path) or path, "path": path,
            "type": kind, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime}


def handle_file(conn, req):
    op = req["op"]
    path = req.get("path", "")
    try:
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise ValueError("path must be absolute")
        if op == "read":
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                conn.send_json(RESP, {"ok": True, "size": st.st_size})
                while True:
                    chunk = f.read(READ_CHUNK * 4)
                    if not chunk:
                        break
                    if not conn.send(DATA, chunk):
                        return
            conn.send(EOF)
            return
        if op == "write":
            if req.get("parents"):
                os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            tmp = "%s.sbx-%d-%d.tmp" % (path, os.getpid(), threading.get_ident())
            mode = req.get("mode")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            total = 0
            try:
                conn.send_json(RESP, {"ok": True})
                while True:
                    ftype, payload = recv_frame(conn.sock)
                    if ftype is None:
                        raise ConnectionError("host went away")
                    if ftype == EOF:
                        break
                    _write_all(fd, payload)
                    total += len(payload)
                if mode is not None:
                    os.fchmod(fd, int(mode))
                os.close(fd)
                fd = None
                os.replace(tmp, path)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            conn.send_json(RESP, {"ok": True, "size": total})
            return
        if op == "list":
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode):
                entries = [_stat_entry(path)]
            else:
                entries = []
                with os.scandir(path) as it:
                    for i, de in enumerate(it):
                        if i >= int(req.get("limit", 10000)):
                            break
                        try:
                            entries.append(_stat_entry(os.path.join(path, de.name), de.name))
                        except OSError:
                            pass
                entries.sort(key=lambda e: e["name"])
            result = {"ok": True, "entries": entries}
        elif op == "stat":
            result = {"ok": True, "entry": _stat_entry(path)}
        elif op == "mkdir":
            if req.get("parents"):
                os.makedirs(path, exist_ok=True)
            else:
                os.mkdir(path)
            result = {"ok": True}
        elif op == "remove":
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                if req.get("recursive"):
                    import shutil

                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
            result = {"ok": True}
        else:
            result = {"error": "bad_request", "message": "unknown file op %r" % (op,)}
    except OSError as e:
        result = {"error": _errno_code(e), "message": _describe(e)}
    except (ValueError, TypeError, ConnectionError) as e:
        result = {"error": "invalid_path" if isinstance(e, ValueError) else "bad_request",
                  "message": str(e)}
    conn.send_json(RESP, result)


def handle(sock):
    conn = Conn(sock)
    try:
        ftype, payload = recv_frame(sock)
        if ftype != REQ:
            return
        req = json.loads(payload)
        op = req.get("op")
        if op == "ping":
            conn.send_json(RESP, {"ok": True, "pid": os.getpid(), "agent": 1})
        elif op == "exec":
            handle_exec(conn, req)
        elif op in ("main_start", "main_attach"):
            handle_main(conn, req)
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
    """Reused handler threads: creating a thread costs ~1.3 ms under gVisor's ptrace
    platform, more than the rest of a small request."""

    MAX_IDLE = 16

    def __init__(self, prestart=2):
        self.queue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        for _ in range(prestart):
            self._spawn()
            self.idle += 1

    def _spawn(self):
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, sock):
        with self.lock:
            reuse = self.idle > 0
            if reuse:
                self.idle -= 1
        self.queue.put(sock)
        if not reuse:
            self._spawn()

    def _work(self):
        while True:
            handle(self.queue.get())
            with self.lock:
                if self.idle >= self.MAX_IDLE:
                    return
                self.idle += 1


def serve(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(128)  # ready: the host may connect now; the rest starts while it does
    threading.Thread(target=REAPER.run, daemon=True).start()
    workers = Workers()
    while True:
        try:
            sock, _ = srv.accept()
        except InterruptedError:
            continue
        except OSError:
            time.sleep(0.01)
            continue
        workers.submit(sock)


def _ignore_signal(signum, frame):
    pass


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/.sbx/run/agent.sock"
    # PID 1 must not die of these, but must not *ignore* them either: an ignored signal
    # stays ignored across exec, and every command would inherit that. A handler resets.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore_signal)
    serve(path)


if __name__ == "__main__":
    main()
