"""A strict reader and extractor of POSIX pax tar streams from a hostile source
(runtimes layer; must not import the server, FastAPI, `sandbox_service` or `images`).

Used for sandbox snapshots (`_export`): the stream comes from inside a sandbox, whose root
can answer in the agent's place. No tarfile, no extractall: only ustar/pax regular files,
directories and symlinks, every name checked against the requested set, nothing below a
symlink, directories walked with O_NOFOLLOW from a descriptor of dest_dir, files created
with O_CREAT|O_EXCL|O_NOFOLLOW, symlinks last, setuid/setgid cleared, a byte cap. See
`extract_tar_sync` for the rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO

from ._errors import RuntimeFault

MAX_PAX = 1 << 20  # a pax extended header larger than this is refused
BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)


class ExportError(RuntimeFault):
    """The export was refused (hostile or broken stream, too large); dest_dir is left for
    the caller to remove."""


class _Pull:
    """A blocking read(n) for the extraction thread over an async chunk source that runs
    on the event loop (the thread drives it, so there is natural backpressure)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, next_chunk: Callable[[], Any]):
        self.loop = loop
        self.next_chunk = next_chunk
        self.buf = memoryview(b"")
        self.eof = False
        self.aborted = threading.Event()

    def read(self, n: int) -> bytes:
        while not self.buf and not self.eof:
            if self.aborted.is_set():
                raise ExportError("export aborted")
            fut = asyncio.run_coroutine_threadsafe(self.next_chunk(), self.loop)
            while True:
                try:
                    chunk = fut.result(timeout=1.0)
                    break
                except concurrent.futures.TimeoutError:
                    if self.aborted.is_set() or self.loop.is_closed():
                        fut.cancel()
                        raise ExportError("export aborted") from None
            if chunk:
                self.buf = memoryview(chunk)
            else:
                self.eof = True
        out = bytes(self.buf[:n])
        self.buf = self.buf[n:]
        return out


# ---- a strict pax tar reader ---------------------------------------------------------------

@dataclasses.dataclass
class _Member:
    name: bytes
    kind: str  # "f", "d", "l"
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    target: bytes


def _octal(field: bytes, what: str) -> int:
    s = field.rstrip(b"\x00 ").lstrip(b" ")
    if not s:
        return 0
    if not all(48 <= c <= 55 for c in s):
        raise ExportError(f"tar header: bad {what} field")
    return int(s, 8)


def _cstr(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _pax_int(v: bytes, what: str) -> int:
    if not v.isdigit() or len(v) > 20:
        raise ExportError(f"pax header: bad {what}")
    return int(v)


def _pax_time(v: bytes) -> int:
    neg = v.startswith(b"-")
    whole, _, frac = v[neg:].partition(b".")
    if not whole.isdigit() or len(whole) > 15 or (frac and not frac.isdigit()):
        raise ExportError("pax header: bad mtime")
    ns = int(whole) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0"))
    return -ns if neg else ns


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\x00") == b"":
            break
        sp = data.find(b" ", pos, pos + 21)
        if sp < 0 or not data[pos:sp].isdigit():
            raise ExportError("pax header: bad record length")
        length = int(data[pos:sp])
        rec = data[pos:pos + length]
        if length <= sp - pos + 1 or len(rec) != length or not rec.endswith(b"\n"):
            raise ExportError("pax header: bad record")
        key, eq, value = rec[sp - pos + 1:-1].partition(b"=")
        if not eq:
            raise ExportError("pax header: record without '='")
        out[key] = value
        pos += length
    return out


class _TarReader:
    """Reads members one at a time; the caller reads a regular file's data with
    `data(member)` before asking for the next member."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self._unread = 0  # data bytes (plus padding) of the current member not yet consumed
        self.ended = False

    def _exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = self._read(min(n - got, 1 << 20))
            if not chunk:
                raise ExportError("the tar stream ended early")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _skip(self) -> None:
        while self._unread:
            n = min(self._unread, 1 << 20)
            self._exact(n)
            self._unread -= n

    def data(self, member: _Member):
        """Yield the member's bytes in chunks (exactly member.size), then its padding."""
        left = member.size
        while left:
            chunk = self._read(min(left, 1 << 20))
            if not chunk:
                raise ExportError("the tar stream ended early")
            left -= len(chunk)
            self._unread -= len(chunk)
            yield chunk

    def finish(self) -> None:
        """After the end-of-archive block: the rest must be zero padding, then the end."""
        left = 1 << 20
        while True:
            chunk = self._read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
            if chunk.count(0) != len(chunk) or left <= 0:
                raise ExportError("the tar stream has data after its end")

    def next(self) -> _Member | None:
        self._skip()
        pax: dict[bytes, bytes] = {}
        while True:
            block = self._exact(BLOCK)
            if block == _ZERO_BLOCK:
                self.ended = True
                return None
            stored = _octal(block[148:156], "checksum")
            unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
            if stored != unsigned:
                raise ExportError("tar header: bad checksum")
            if block[257:265] != b"ustar\x0000":
                raise ExportError("tar header: not a POSIX ustar/pax archive")
            flag = block[156:157]
            size = _octal(block[124:136], "size")
            if flag == b"x":
                if size > MAX_PAX:
                    raise ExportError("pax header too large")
                pax.update(_pax_records(self._exact(-(-size // BLOCK) * BLOCK)[:size]))
                continue
            if flag in (b"0", b"\x00"):
                kind = "f"
            elif flag == b"5":
                kind = "d"
            elif flag == b"2":
                kind = "l"
            elif flag == b"1":
                raise ExportError("the tar stream has a hard link member")
            else:
                raise ExportError(f"the tar stream has a member of type {flag!r}")
            if any(k.startswith((b"GNU.", b"SCHILY.", b"LIBARCHIVE.")) for k in pax):
                raise ExportError("pax header: unsupported extension")
            prefix, name = _cstr(block[345:500]), _cstr(block[0:100])
            name = pax.get(b"path", prefix + b"/" + name if prefix else name)
            target = pax.get(b"linkpath", _cstr(block[157:257]))
            size = _pax_int(pax[b"size"], "size") if b"size" in pax else size
            uid = _pax_int(pax[b"uid"], "uid") if b"uid" in pax else _octal(block[108:116], "uid")
            gid = _pax_int(pax[b"gid"], "gid") if b"gid" in pax else _octal(block[116:124], "gid")
            mtime = (_pax_time(pax[b"mtime"]) if b"mtime" in pax
                     else _octal(block[136:148], "mtime") * 1_000_000_000)
            mode = _octal(block[100:108], "mode") & 0o7777
            if uid >= 2**32 - 1 or gid >= 2**32 - 1:
                raise ExportError("tar header: bad owner")
            if kind != "f" and size:
                raise ExportError("tar header: a non-file member with data")
            self._unread = -(-size // BLOCK) * BLOCK
            return _Member(name, kind, mode, uid, gid, size, mtime, target)


# ---- extraction ----------------------------------------------------------------------------

def _member_name(raw: bytes, kind: str) -> bytes:
    name = raw[:-1] if kind == "d" and raw.endswith(b"/") else raw
    if (not name or b"\x00" in name or name.startswith(b"/")
            or any(c in (b"", b".", b"..") for c in name.split(b"/"))):
        raise ExportError(f"the tar stream has a bad member name {raw[:200]!r}")
    return name


class _Tree:
    """Creates entries under dest_dir without ever following a symlink."""

    def __init__(self, dest_dir: str):
        self.root = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.is_root = os.geteuid() == 0
        self._cached: tuple[bytes, int] | None = None  # (dir name, fd) of the last parent

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _open_dir(self, name: bytes, create: bool) -> int:
        """An fd for directory `name` (relative, b"" = dest_dir), walking one component at
        a time with O_NOFOLLOW and creating missing ones as 0755 root-owned directories."""
        fd = os.dup(self.root)
        try:
            for comp in name.split(b"/") if name else ():
                if create:
                    try:
                        os.mkdir(comp, 0o755, dir_fd=fd)
                        created = True
                    except FileExistsError:
                        created = False
                else:
                    created = False
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
                os.close(fd)
                fd = nfd
                if created:  # umask may have narrowed it; owner: this process (root)
                    os.fchmod(fd, 0o755)
        except OSError as e:
            os.close(fd)
            raise ExportError(f"cannot create the directory for {name[:200]!r}: {e}") from None
        return fd

    def parent(self, name: bytes) -> tuple[int, bytes]:
        dirname, _, base = name.rpartition(b"/")
        if self._cached is None or self._cached[0] != dirname:
            self._drop_cache()
            self._cached = (dirname, self._open_dir(dirname, create=True))
        return self._cached[1], base

    def _owner(self, fd: int, uid: int, gid: int) -> None:
        if self.is_root:
            os.fchown(fd, uid, gid)

    def write_file(self, m: _Member, chunks) -> None:
        dfd, base = self.parent(m.name)
        try:
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
        except OSError as e:
            raise ExportError(f"cannot create {m.name[:200]!r}: {e}") from None
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self._apply(fd, m)
        except OSError as e:
            raise ExportError(f"cannot write {m.name[:200]!r}: {e}") from None
        finally:
            os.close(fd)

    def _apply(self, fd: int, m: _Member) -> None:
        """Owner (when root), mode without setuid/setgid, mtime: through the descriptor."""
        try:
            self._owner(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & ~(stat.S_ISUID | stat.S_ISGID))
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        except (OSError, OverflowError, ValueError) as e:
            raise ExportError(f"cannot set the metadata of {m.name[:200]!r}: {e}") from None

    def make_dir(self, m: _Member) -> None:
        dfd, base = self.parent(m.name)
        try:
            os.mkdir(base, 0o700, dir_fd=dfd)
        except FileExistsError:
            pass  # created earlier as the parent of another member; its metadata comes later
        except OSError as e:
            raise ExportError(f"cannot create {m.name[:200]!r}: {e}") from None

    def finish_dir(self, m: _Member) -> None:
        fd = self._open_dir(m.name, create=False)
        try:
            self._apply(fd, m)
        finally:
            os.close(fd)

    def make_symlink(self, m: _Member) -> None:
        dfd, base = self.parent(m.name)
        try:
            os.symlink(m.target, base, dir_fd=dfd)
            if self.is_root:
                os.chown(base, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(base, ns=(m.mtime_ns, m.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        except (OSError, OverflowError, ValueError) as e:
            raise ExportError(f"cannot create symlink {m.name[:200]!r}: {e}") from None


def extract_tar_sync(read: Callable[[int], bytes], dest_dir: str, allowed: set[str],
                     max_bytes: int) -> tuple[int, int]:
    """Extract a hostile pax tar stream into `dest_dir` (an existing, empty directory);
    returns (entries written, regular-file bytes). Blocking. Raises ExportError, leaving
    dest_dir for the caller to remove, when:
    - a member name is not a canonical relative path (no leading "/", no empty, "." or
      ".." component, no NUL; a directory may end with one "/"), or is not in `allowed`
      (absolute paths; a member "a/b" stands for "/a/b"), or comes twice;
    - a member is anything but a regular file, a directory or a symlink (hard links,
      devices, fifos, GNU or unknown extensions);
    - a member lies below a symlink member (either order);
    - the regular files add up to more than `max_bytes`;
    - the stream is malformed or ends early.
    Regular files and directories are created as they come (missing parents as 0755
    root-owned directories), symlinks after everything else, directory metadata last
    (deepest first). Setuid/setgid bits are cleared; owner, mode and mtime (ns) are
    applied through descriptors or without following symlinks (owner only when root).
    """
    allow = {os.fsencode(p)[1:] for p in allowed if p.startswith("/")}
    reader = _TarReader(read)
    tree = _Tree(dest_dir)
    seen: dict[bytes, str] = {}
    prefixes: set[bytes] = set()  # proper prefixes of every member so far
    symlinks: list[_Member] = []
    dirs: list[_Member] = []
    written = total = 0
    try:
        while True:
            m = reader.next()
            if m is None:
                reader.finish()
                break
            name = _member_name(m.name, m.kind)
            m.name = name
            if name not in allow:
                raise ExportError(f"the tar stream has an unrequested member {name[:200]!r}")
            if name in seen:
                raise ExportError(f"the tar stream has {name[:200]!r} twice")
            parts = name.split(b"/")
            mine = [b"/".join(parts[:i]) for i in range(1, len(parts))]
            if any(seen.get(p) == "l" for p in mine):
                raise ExportError(f"the tar stream has {name[:200]!r} below a symlink")
            if m.kind == "l":
                if name in prefixes:
                    raise ExportError(f"the tar stream has entries below symlink {name[:200]!r}")
                if not m.target or b"\x00" in m.target:
                    raise ExportError(f"the tar stream has a bad symlink {name[:200]!r}")
            seen[name] = m.kind
            prefixes.update(mine)
            if m.kind == "f":
                total += m.size
                if total > max_bytes:
                    raise ExportError(f"the snapshot is too large: more than {max_bytes} bytes "
                                      "of changed files")
                tree.write_file(m, reader.data(m))
            elif m.kind == "d":
                tree.make_dir(m)
                dirs.append(m)
            else:
                symlinks.append(m)
            written += 1
        for m in symlinks:
            tree.make_symlink(m)
        tree._drop_cache()
        for m in sorted(dirs, key=lambda d: d.name.count(b"/"), reverse=True):
            tree.finish_dir(m)
    finally:
        tree.close()
    return written, total


async def extract_tar(source: BinaryIO | AsyncIterator[bytes] | Any, dest_dir: str,
                      allowed: set[str], max_bytes: int) -> tuple[int, int]:
    """`extract_tar_sync` in a worker thread, reading from a binary file object (anything
    with read(n)), an async iterator of byte chunks, or an object with an async
    next_chunk() returning b"" at the end. Waits for the thread even when cancelled, so
    nothing writes into dest_dir after this returns."""
    loop = asyncio.get_running_loop()
    pull = None
    if hasattr(source, "next_chunk"):
        pull = _Pull(loop, source.next_chunk)
    elif hasattr(source, "__aiter__"):
        it = source.__aiter__()

        async def _next() -> bytes:
            try:
                return await it.__anext__()
            except StopAsyncIteration:
                return b""

        pull = _Pull(loop, _next)
    read = pull.read if pull is not None else source.read
    fut = loop.run_in_executor(None, extract_tar_sync, read, dest_dir, allowed, max_bytes)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if pull is not None:
            pull.aborted.set()
        if hasattr(source, "close"):
            source.close()
        await asyncio.wait({fut})
        raise
