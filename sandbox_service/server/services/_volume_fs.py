"""File operations on a volume's host directory (server layer), for the API's reads and
writes from outside a container. Blocking: callers run them in a thread.

A volume is written by code in containers, so its tree is hostile: a symlink may point at
/etc/shadow, a FIFO would block a reader, a name may be anything. Every path is walked
one component at a time from the volume's root descriptor with O_NOFOLLOW, so the API never
follows a symlink (it lists one as "symlink" and refuses to read through it), never leaves
the volume, and opens only regular files (O_NONBLOCK, then fstat). Device nodes cannot be
opened at all: the filesystem is mounted nodev (runtimes/_volume_disk.py).

An upload goes to a hidden temporary file next to its target, is fsynced, then linked
(no overwrite) or renamed (`force`) into place: a reader never sees half a file, and a
failed upload leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Iterator

from ...wire import VolumeFile, volume_path_parts
from ...wire import errors as E

CHUNK = 1 << 20
MAX_LISTING = 100_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_PREFIX = ".sbx-upload-"


def _err(path: str, e: OSError) -> E.SandboxError:
    if isinstance(e, FileNotFoundError):
        return E.SandboxFileNotFoundError(f"{path!r}: no such file or directory in the volume")
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return E.StorageFullError(
            f"{path!r}: the volumes of this principal are full (their quota, "
            "SBX_VOLUME_QUOTA_MIB, is reached): remove files, or ask the operator for more")
    if e.errno == errno.ELOOP:
        return E.SandboxFileError(f"{path!r} is a symlink: the volume API does not follow "
                                  "links (read it through the link's target path)")
    if e.errno == errno.ENOTDIR:
        return E.SandboxFileError(f"{path!r}: a component of the path is not a directory")
    if e.errno == errno.EISDIR:
        return E.SandboxFileError(f"{path!r} is a directory")
    if e.errno == errno.ENOTEMPTY:
        return E.SandboxFileError(f"{path!r} is a directory that is not empty: pass "
                                  "recursive=True to remove it and everything in it")
    if isinstance(e, FileExistsError):
        return E.SandboxFileError(f"{path!r} already exists: pass force=True to overwrite")
    return E.SandboxFileError(f"{path!r}: {e.strerror or e}")


def _parts(path: str) -> list[str]:
    try:
        return volume_path_parts(path)
    except ValueError as e:
        raise E.InvalidRequestError(str(e)) from None


def open_root(root: str) -> int:
    return os.open(root, _DIR)


def _walk(root_fd: int, parts: list[str], path: str, *, create: bool = False) -> int:
    """A descriptor of the directory `parts` below the root (made with `create`)."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            try:
                nfd = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except OSError as e:
        os.close(fd)
        raise _err(path, e) from None


def _entry(rel: str, st: os.stat_result) -> VolumeFile:
    kind = ("file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode)
            else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
    return VolumeFile(path=rel, type=kind, size=st.st_size, mtime=st.st_mtime,
                      mode=stat.S_IMODE(st.st_mode))


def list_dir(root_fd: int, path: str, recursive: bool) -> tuple[list[VolumeFile], bool]:
    """Entries below `path` (one level, or all with `recursive`), paths relative to the
    volume's root; a file's path gives that file alone. (entries, truncated)."""
    parts = _parts(path)
    if parts:
        parent = _walk(root_fd, parts[:-1], path)
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                return [_entry("/".join(parts), st)], False
            start = os.open(parts[-1], _DIR, dir_fd=parent)
        except OSError as e:
            raise _err(path, e) from None
        finally:
            os.close(parent)
    else:
        start = os.dup(root_fd)
    out: list[VolumeFile] = []
    stack = [(start, "/".join(parts))]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                with os.scandir(fd) as it:
                    for de in it:
                        if de.name.startswith(_TMP_PREFIX):
                            continue
                        rel = f"{prefix}/{de.name}" if prefix else de.name
                        st = de.stat(follow_symlinks=False)
                        out.append(_entry(rel, st))
                        if len(out) >= MAX_LISTING:
                            return sorted(out, key=lambda e: e.path), True
                        if recursive and stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append((os.open(de.name, _DIR, dir_fd=fd), rel))
                            except OSError:
                                pass  # removed meanwhile, or replaced by a link
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    return sorted(out, key=lambda e: e.path), False


def open_file(root_fd: int, path: str) -> tuple[int, int]:
    """(descriptor, size) of the regular file at `path`."""
    parts = _parts(path)
    if not parts:
        raise E.SandboxFileError("the volume's root is a directory: name a file in it")
    parent = _walk(root_fd, parts[:-1], path)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)
    except OSError as e:
        raise _err(path, e) from None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise E.SandboxFileError(f"{path!r} is a {'directory' if stat.S_ISDIR(st.st_mode) else 'special file'}, "
                                 "not a regular file: only files can be read")
    os.set_blocking(fd, True)
    return fd, st.st_size


def read_chunks(fd: int) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, CHUNK):
            yield chunk
    finally:
        os.close(fd)


class Upload:
    """One file being written: `write` its chunks, then `commit` or `abort`."""

    def __init__(self, root_fd: int, path: str, *, force: bool, mode: int | None):
        parts = _parts(path)
        if not parts or path.endswith("/"):
            raise E.InvalidRequestError(f"{path!r} names a directory: an upload names a file")
        self.path, self.name, self.force = path, parts[-1], force
        self.mode = 0o644 if mode is None else mode & 0o7777
        self.dir_fd = _walk(root_fd, parts[:-1], path, create=True)
        if not force:
            self._refuse_existing()
        self.tmp = _TMP_PREFIX + secrets.token_hex(8)
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        except OSError as e:
            os.close(self.dir_fd)
            raise _err(path, e) from None
        self.size = 0

    def _refuse_existing(self) -> None:
        try:
            os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        os.close(self.dir_fd)
        raise E.ConflictError(f"{self.path!r} already exists in the volume: pass force=True "
                              "(`sbx volume put --force`) to overwrite it")

    def write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            self.size += len(data)
        except OSError as e:
            self.abort()
            raise _err(self.path, e) from None

    def commit(self) -> None:
        try:
            os.fchmod(self.fd, self.mode)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            if self.force:
                os.rename(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            else:  # link() never replaces: a file that appeared meanwhile wins
                os.link(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd,
                        follow_symlinks=False)
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            os.fsync(self.dir_fd)
        except FileExistsError:
            self.abort()
            raise E.ConflictError(f"{self.path!r} already exists in the volume: pass "
                                  "force=True to overwrite it") from None
        except OSError as e:
            self.abort()
            raise _err(self.path, e) from None
        os.close(self.dir_fd)
        self.dir_fd = -1

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.dir_fd >= 0:
            try:
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            except OSError:
                pass
            os.close(self.dir_fd)
            self.dir_fd = -1


def _rmtree_at(dir_fd: int, name: str) -> None:
    """Remove `name` (a directory) and everything below it, never following a link."""
    fd = os.open(name, _DIR, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as it:
            entries = [(de.name, de.is_dir(follow_symlinks=False)) for de in it]
        for child, is_dir in entries:
            if is_dir:
                _rmtree_at(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def remove(root_fd: int, path: str, recursive: bool) -> None:
    parts = _parts(path)
    if not parts:
        raise E.InvalidRequestError("name a path inside the volume; to delete the whole "
                                    "volume use Volume.delete(name) or `sbx volume delete`")
    parent = _walk(root_fd, parts[:-1], path)
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(parts[-1], dir_fd=parent)
        elif recursive:
            _rmtree_at(parent, parts[-1])
        else:
            os.rmdir(parts[-1], dir_fd=parent)
    except OSError as e:
        raise _err(path, e) from None
    finally:
        os.close(parent)


def _copy_file(src_dir: int, src: str, dst_dir: int, dst: str, mode: int) -> None:
    rfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    tmp = _TMP_PREFIX + secrets.token_hex(8)
    try:
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      mode & 0o7777, dir_fd=dst_dir)
        try:
            while chunk := os.read(rfd, CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(wfd, view):]
            os.fsync(wfd)
        finally:
            os.close(wfd)
        os.rename(tmp, dst, src_dir_fd=dst_dir, dst_dir_fd=dst_dir)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dst_dir)
        except OSError:
            pass
        raise
    finally:
        os.close(rfd)


def _copy_at(src_dir: int, src: str, dst_dir: int, dst: str, recursive: bool,
             shown: str) -> None:
    st = os.stat(src, dir_fd=src_dir, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        _copy_file(src_dir, src, dst_dir, dst, st.st_mode)
    elif stat.S_ISLNK(st.st_mode):  # the link itself, as `cp -P`
        target = os.readlink(src, dir_fd=src_dir)
        try:
            os.unlink(dst, dir_fd=dst_dir)
        except FileNotFoundError:
            pass
        os.symlink(target, dst, dir_fd=dst_dir)
    elif stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise E.SandboxFileError(f"{shown!r} is a directory: pass recursive=True to copy it")
        try:
            os.mkdir(dst, 0o755, dir_fd=dst_dir)
        except FileExistsError:
            pass
        sfd, dfd = os.open(src, _DIR, dir_fd=src_dir), os.open(dst, _DIR, dir_fd=dst_dir)
        try:
            with os.scandir(sfd) as it:
                names = [de.name for de in it if not de.name.startswith(_TMP_PREFIX)]
            for name in names:
                _copy_at(sfd, name, dfd, name, True, f"{shown}/{name}")
        finally:
            os.close(sfd)
            os.close(dfd)
    # FIFOs, sockets, device nodes: skipped, as put_directory does


def copy(root_fd: int, src_paths: list[str], dst_path: str, recursive: bool) -> None:
    """Modal's copy_files, with cp's rules: into `dst_path` when it is a directory (or
    ends with "/", or there are several sources), else to `dst_path` itself."""
    dst_parts = _parts(dst_path)
    into = dst_path.endswith("/") or len(src_paths) > 1 or not dst_parts
    if not into:
        parent = _walk(root_fd, dst_parts[:-1], dst_path)
        try:
            into = stat.S_ISDIR(os.stat(dst_parts[-1], dir_fd=parent,
                                        follow_symlinks=False).st_mode)
        except FileNotFoundError:
            pass
        finally:
            os.close(parent)
    dst_fd = _walk(root_fd, dst_parts if into else dst_parts[:-1], dst_path, create=True)
    try:
        for src in src_paths:
            parts = _parts(src)
            if not parts:
                raise E.InvalidRequestError("the volume's root cannot be copied: name a path "
                                            "inside it")
            if into and dst_parts[:len(parts)] == parts:
                raise E.InvalidRequestError(f"cannot copy {src!r} into itself ({dst_path!r})")
            src_dir = _walk(root_fd, parts[:-1], src)
            try:
                _copy_at(src_dir, parts[-1], dst_fd, parts[-1] if into else dst_parts[-1],
                         recursive, src)
            except OSError as e:
                raise _err(src, e) from None
            finally:
                os.close(src_dir)
    finally:
        os.close(dst_fd)
