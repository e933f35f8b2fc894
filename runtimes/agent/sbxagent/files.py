"""File operations, done inside the sandbox so the host never resolves a sandbox path.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import errno
import os
import stat
import threading

from .execs import _describe
from .proto import DATA, EOF, READ_CHUNK, RESP, _write_all, recv_frame

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
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb", buffering=0) as f:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                if not stat.S_ISREG(st.st_mode):  # /dev/zero would stream forever
                    conn.send_json(RESP, {"error": "not_regular", "message": (
                        "it is a device, FIFO or socket, not a regular file: read it with "
                        "exec (e.g. `head -c 1048576 %s`)" % (path,))})
                    return
                os.set_blocking(fd, True)
                conn.send_json(RESP, {"ok": True, "size": st.st_size})
                while True:
                    chunk = f.read(READ_CHUNK)
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
