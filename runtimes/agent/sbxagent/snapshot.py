"""Filesystem snapshot support: a manifest of the whole tree and a tar of chosen entries.

The host diffs the manifest against the image's rootfs (which it can read itself) and
asks for a tar of only what changed: the sandbox's writes live in gVisor's memory
overlay, invisible to the host.

fs_manifest: REQ {"op": "fs_manifest", "base_dirs": bool, "exclude": [abs path, ...]},
  then, when base_dirs is true, DATA frames of JSON lines [path, mode, uid, gid, size,
  mtime_ns] (the image's directories, see `walk`) and EOF -> RESP {"ok": true}, DATA*,
  EOF. The DATA frames carry JSON lines, whole lines per frame, one record per path (`/`
  itself is not listed):
    [path, type, mode, uid, gid, size, mtime_ns, target]   type "f", "d", "l" or "o" (other);
                                                          target is null unless type "l"
    [path, "!", message]                                   a directory that could not be read
  JSON arrays keep the records small (~70 bytes) and self-delimiting, parse with the
  stdlib on both ends, and carry any byte string: a name that is not UTF-8 is a str with
  surrogate escapes here, which json writes as \\udcXX and the host decodes back.
  /proc, /sys, /dev and /.sbx (the agent's mounts) and the paths in "exclude" (e.g. bind
  mounts) are skipped entirely, with everything below them; symlinks are
  never followed; a path that vanishes during the walk is left out.
fs_tar: REQ {"op": "fs_tar"}, then DATA frames of JSON lines (one absolute path each),
  then EOF -> RESP {"ok": true}, DATA* (a POSIX pax tar), EOF. Exactly the listed entries,
  in that order, non-recursively: regular files (with content), directories and
  symlinks; anything else, and any path that vanished, is left out. Hard links become
  separate regular files. mtime travels with full nanosecond precision in a pax header.
  Files are streamed through one 1 MiB buffer, never held in memory (see _TarWriter).

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import os
import stat

from .jsonc import dumps, loads
from .proto import DATA, EOF, HEADER, READ_CHUNK, RESP, recv_frame

SKIP_TOP = frozenset(("/proc", "/sys", "/dev", "/.sbx"))
FRAME_TARGET = READ_CHUNK * 4  # batch manifest records into frames of ~256 KiB
FRAME_DATA = 1 << 20  # tar bytes per DATA frame
BLOCK = 512
RECORD = 20 * BLOCK
_ZEROS = bytes(RECORD)
MAX_LIST_BYTES = 1 << 30  # what the host may send after its request


class _Closed(Exception):
    """The host went away mid-stream."""


def _record(path, st, target):
    m = st.st_mode
    t = "d" if stat.S_ISDIR(m) else "f" if stat.S_ISREG(m) else "l" if stat.S_ISLNK(m) else "o"
    return [path, t, stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, target]


def walk(top="/", same=None, exclude=()):
    """Yield manifest records for everything below `top` (not `top` itself), leaving out
    SKIP_TOP and the absolute paths in `exclude` (bind mounts), with all below them.

    `same` maps directory paths to [mode, uid, gid, size, mtime_ns] as the image has them:
    a directory that shows exactly these is listed but not entered. In gVisor's overlay a
    directory that had anything copied up, created or deleted inside it has the upper
    layer's size and the time of that change as its mtime, so an exact match means
    nothing below it differs from the image."""
    skip = SKIP_TOP.union(exclude)
    stack = [top]
    while stack:
        d = stack.pop()
        prefix = d if d.endswith("/") else d + "/"
        try:
            with os.scandir(d) as it:
                entries = [de.name for de in it]
        except FileNotFoundError:
            continue  # vanished since its parent was listed
        except OSError as e:
            yield [d, "!", f"{type(e).__name__}: {e.strerror or e}"]
            continue
        entries.sort()
        subdirs = []
        for name in entries:
            path = prefix + name
            if path in skip:
                continue
            try:
                st = os.lstat(path)
                target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                continue  # vanished (or changed type) during the walk
            rec = _record(path, st, target)
            if rec[1] == "d" and (same is None or same.get(path) != rec[2:7]):
                subdirs.append(path)
            yield rec
        stack.extend(reversed(subdirs))  # depth-first, in name order


def _manifest(conn, req):
    exclude = req.get("exclude") or []
    if not all(isinstance(p, str) for p in exclude):
        raise ValueError("exclude must be a list of paths")
    same = None
    if req.get("base_dirs"):
        same = {}
        for rec in _read_lines(conn):
            if not (isinstance(rec, list) and len(rec) == 6 and isinstance(rec[0], str)):
                raise ValueError("base_dirs lines must be [path, mode, uid, gid, size, mtime_ns]")
            same[rec[0]] = rec[1:]
    conn.send_json(RESP, {"ok": True})
    buf = []
    size = 0
    for rec in walk("/", same, exclude):
        line = dumps(rec)
        buf.append(line)
        size += len(line) + 1
        if size >= FRAME_TARGET:
            if not conn.send(DATA, ("\n".join(buf) + "\n").encode("ascii")):
                return
            buf, size = [], 0
    if buf and not conn.send(DATA, ("\n".join(buf) + "\n").encode("ascii")):
        return
    conn.send(EOF)


def _read_lines(conn):
    """JSON lines from the host: DATA frames, then EOF."""
    out = []
    pending = b""
    total = 0
    while True:
        ftype, payload = recv_frame(conn.sock)
        if ftype is None:
            raise _Closed()
        if ftype == EOF:
            break
        if ftype != DATA:
            raise ValueError("unexpected frame in a list from the host")
        total += len(payload)
        if total > MAX_LIST_BYTES:
            raise ValueError("list from the host too large")
        lines = (pending + payload).split(b"\n")
        pending = lines.pop()
        out.extend(loads(line) for line in lines if line)
    if pending.strip():
        out.append(loads(pending))
    return out


def _check_path(p):
    if not isinstance(p, str) or not p.startswith("/") or "\x00" in p or p == "/":
        raise ValueError("paths must be absolute and not /")
    return p


def _send_frame(conn, view):
    """One DATA frame straight from `view` (no copy: sendmsg with the header)."""
    parts = [HEADER.pack(DATA, len(view)), view]
    try:
        with conn.lock:
            while parts:
                sent = conn.sock.sendmsg(parts)
                while parts and sent >= len(parts[0]):
                    sent -= len(parts[0])
                    parts.pop(0)
                if sent:
                    parts[0] = memoryview(parts[0])[sent:]
    except OSError:
        conn.alive = False
        raise _Closed() from None


class _TarWriter:
    """A POSIX pax tar written into DATA frames through one reused buffer: headers come
    from tarfile (TarInfo.tobuf), file contents are read straight into the buffer.

    Not tarfile's stream mode ("w|"), which copies every block several times into new
    bytes objects: fresh memory is expensive under gVisor's ptrace platform, and that
    made the export of a 100 MB file 2-3x slower than reading it."""

    def __init__(self, conn, size=FRAME_DATA):
        self.conn = conn
        self.view = memoryview(bytearray(size))
        self.used = 0
        self.total = 0

    def _room(self):
        if self.used == len(self.view):
            self.flush()
        return len(self.view) - self.used

    def write(self, data):
        data = memoryview(data)
        while data:
            n = min(self._room(), len(data))
            self.view[self.used:self.used + n] = data[:n]
            self.used += n
            self.total += n
            data = data[n:]

    def zeros(self, n):
        while n:
            k = min(n, len(_ZEROS))
            self.write(_ZEROS[:k])
            n -= k

    def copy(self, fd, size):
        """Exactly `size` bytes of fd: zero padding if the file shrank since its stat,
        the first `size` bytes if it grew."""
        left = size
        while left:
            k = min(self._room(), left)
            n = os.readv(fd, [self.view[self.used:self.used + k]])
            if not n:
                self.zeros(left)
                return
            self.used += n
            self.total += n
            left -= n

    def flush(self):
        if self.used:
            _send_frame(self.conn, self.view[:self.used])
            self.used = 0

    def close(self):
        self.zeros(2 * BLOCK)  # end of archive, then a full record like tar(1) writes
        self.zeros(-self.total % RECORD)
        self.flush()


def _pax_mtime(ns):
    sec, frac = divmod(ns, 1000000000)
    return f"{sec}.{frac:09d}" if frac else str(sec)


def _add(out, path):
    """One entry (file, directory or symlink) of `path`, or nothing."""
    import tarfile

    try:
        st = os.lstat(path)
    except OSError:
        return  # vanished since the manifest
    ti = tarfile.TarInfo(path.lstrip("/"))
    fd = None
    try:
        if stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                st = os.fstat(fd)
            except OSError:
                return
            if not stat.S_ISREG(st.st_mode):
                return  # replaced by something else meanwhile
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
        elif stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            try:
                ti.linkname = os.readlink(path)
            except OSError:
                return
            ti.type = tarfile.SYMTYPE
        else:
            return  # devices, fifos, sockets: not part of a snapshot
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = st.st_mtime_ns // 1000000000
        ti.pax_headers = {"mtime": _pax_mtime(st.st_mtime_ns)}  # full ns precision
        out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if fd is not None:
            out.copy(fd, ti.size)
            out.zeros(-ti.size % BLOCK)
    finally:
        if fd is not None:
            os.close(fd)


def _tar(conn, paths):
    conn.send_json(RESP, {"ok": True})
    out = _TarWriter(conn)
    for path in paths:
        _add(out, path)
    out.close()
    conn.send(EOF)


def handle_snapshot(conn, req):
    op = req.get("op")
    try:
        if op == "fs_manifest":
            _manifest(conn, req)
        elif op == "fs_tar":
            _tar(conn, [_check_path(p) for p in _read_lines(conn)])
        else:
            conn.send_json(RESP, {"error": "bad_request", "message": f"unknown op {op!r}"})
    except _Closed:
        pass
    except (ValueError, TypeError) as e:
        conn.send_json(RESP, {"error": "bad_request", "message": str(e)})
