"""A sandbox's filesystem changes relative to its image, as a layer diff on the host
(runtimes layer; must not import the server, FastAPI, `sandbox_service` or `images`).

Every write of a sandbox lives in gVisor's memory overlay (runsc --overlay2=root:memory),
invisible to the host, or on its disk (a host overlayfs: see `upper` below). `export_changes` computes the image rootfs's manifest on the host,
asks the in-sandbox agent for the sandbox's (fs_manifest, see agent/sbxagent/snapshot.py),
and fetches a tar of only the entries that differ (fs_tar), which it extracts into
`dest_dir`. Deletions are returned, not materialised (the caller writes whiteouts).

What a difference is, measured on runsc 0.0~20221219 with `--overlay2=root:memory`:
- An entry the sandbox has not touched shows inside gVisor exactly the host's lstat of
  the image file: mode, uid, gid, size and st_mtime_ns to the nanosecond (an image file
  with mtime ...123456789 ns reads back ...123456789; no truncation). So records are
  compared exactly, at full nanosecond precision, and the tar carries mtime as a pax
  decimal with 9 fraction digits, so the exported mtime is exact too.
- A chmod copies the file up and keeps its mtime: only the mode differs, and that is
  detected. A touch or a write changes mtime (and size).
- A directory that gets anything copied up, created or deleted inside it shows the time
  of that change as its mtime, and the overlay's size (20 bytes an entry: 40, 60, ...,
  never the 4096 of ext4). So the ancestors of every changed entry are exported too, as
  directory entries (a layer carries them anyway), and directory sizes are not compared.
- Conversely a directory that still shows the image's exact mode, owner, size and mtime
  had nothing below it copied up: the agent does not enter it (`prune`, the default),
  so a snapshot costs what changed rather than the size of the image (an 11k-entry
  Debian image: ~15 ms for an untouched sandbox against ~1.5-2 s for the full walk,
  which costs ~100 us an lstat under the ptrace platform).
- `/` itself is never listed (runsc creates mount points in it at boot). /proc, /sys,
  /dev and /.sbx are skipped on both sides, and so is whatever `exclude` names (bind
  mounts); /tmp (a tmpfs in the sandbox) is included, so whatever the image had in /tmp
  is reported deleted.
Limits: a change that restores size and mtime exactly (a same-size rewrite, then
touch -d with the old nanoseconds) is invisible to a metadata diff. Special files
(fifos, sockets, devices) are never exported: they are listed in `skipped`, and where
the image had a file, directory or symlink at their path it is reported deleted.
Entries that change while the export runs may be left out or be half-updated: pause the
sandbox's work first if that matters.

The tar stream comes from a hostile sandbox (root inside can answer in the agent's
place), so it is parsed here by a strict reader of the POSIX pax format (no tarfile, no
extractall): see `_untar.extract_tar_sync` for the rules. Nothing is ever resolved through a
symlink on the host: every directory is walked with O_NOFOLLOW from a descriptor of
dest_dir, files are created with O_CREAT|O_EXCL|O_NOFOLLOW, and symlinks only after
every other entry. Whoever packs dest_dir into a layer must not follow its symlinks
either (tar does not).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
from collections.abc import Iterable
from typing import Any

from ._agent_client import AgentClient, AgentUnavailable, Channel, _raise_if_error
from ._untar import ExportError, extract_tar
from .agent.sbxagent import proto

SKIP_TOP = frozenset(("/proc", "/sys", "/dev", "/.sbx"))
MAX_ENTRIES = 1_000_000  # a sandbox manifest longer than this is refused (~250 MB here)
MAX_MANIFEST_BYTES = 256 << 20  # and so is one whose records take more bytes than this
WALK_IDLE_S = 600.0  # the agent walks a large tree before its first frame: wait this long
_TYPES = ("f", "d", "l", "o")


@dataclasses.dataclass
class ExportResult:
    deleted: list[str]  # absolute paths in the image, gone in the sandbox (top-most only)
    changed: int  # entries written to dest_dir
    bytes: int  # regular-file bytes written
    # changed paths that could not be exported (special files) and directories the agent
    # could not read (nothing below them is reported deleted)
    skipped: list[str] = dataclasses.field(default_factory=list)


async def _frame(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    """One frame from the agent, refusing a length over proto.MAX_FRAME before reading it
    (a hostile agent could announce 4 GiB)."""
    try:
        ftype, length = proto.HEADER.unpack(await reader.readexactly(proto.HEADER.size))
        if length > proto.MAX_FRAME:
            raise ExportError(f"the agent sent a {length}-byte frame")
        return ftype, (await reader.readexactly(length) if length else b"")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None, b""


def _answer(ftype: int | None, payload: bytes, what: str) -> dict:
    """A RESP frame's object, raising AgentError for an error answer."""
    if ftype is None:
        raise AgentUnavailable(f"the agent closed the connection {what}")
    try:
        obj = json.loads(payload) if ftype == proto.RESP else None
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise ExportError(f"unexpected frame {ftype!r} from the agent {what}")
    return _raise_if_error(obj)


# ---- manifests ---------------------------------------------------------------------------
# A record is (type, mode, uid, gid, size, mtime_ns, target): type "f", "d", "l" or "o",
# target the symlink's target (else None). Keys are absolute paths inside the sandbox, str
# with surrogate escapes for names that are not UTF-8 (os.fsencode gives the bytes back).

def rootfs_manifest(rootfs: str, exclude: Iterable[str] = ()) -> dict[str, tuple]:
    """The manifest of an image rootfs on the host, keyed by in-sandbox path (blocking:
    call it in a thread). Skips the same directories as the agent: SKIP_TOP and
    `exclude`."""
    out: dict[str, tuple] = {}
    root = os.path.abspath(rootfs)
    skip = SKIP_TOP.union(exclude)
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root + rel if rel else root) as it:
                names = [de.name for de in it]
        except OSError:
            continue
        for name in names:
            path = rel + "/" + name
            if path in skip:
                continue
            try:
                st = os.lstat(root + path)
                target = os.readlink(root + path) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                continue
            m = st.st_mode
            kind = ("d" if stat.S_ISDIR(m) else "f" if stat.S_ISREG(m)
                    else "l" if stat.S_ISLNK(m) else "o")
            if kind == "d":
                stack.append(path)
            out[path] = (kind, stat.S_IMODE(m), st.st_uid, st.st_gid, st.st_size,
                         st.st_mtime_ns, target)
    return out


def _valid_path(p: Any) -> bool:
    if not isinstance(p, str) or not p.startswith("/") or "\x00" in p or len(p) > 4096:
        return False
    try:
        os.fsencode(p)  # a lone surrogate that no file name decodes to
    except UnicodeError:
        return False
    return all(c not in ("", ".", "..") for c in p[1:].split("/"))


def _parse_record(line: bytes) -> tuple[str, tuple | None, str | None]:
    """(path, record, error): error set for an unreadable-directory record."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ExportError(f"bad manifest record: {e}") from None
    if not isinstance(rec, list) or not rec or not _valid_path(rec[0]):
        raise ExportError("bad manifest record: path")
    if len(rec) == 3 and rec[1] == "!":
        return rec[0], None, str(rec[2])
    if len(rec) != 8 or rec[1] not in _TYPES:
        raise ExportError("bad manifest record: shape")
    path, kind, mode, uid, gid, size, mtime, target = rec
    if not all(type(v) is int for v in (mode, uid, gid, size, mtime)):
        raise ExportError("bad manifest record: numbers")
    if (kind == "l") != isinstance(target, str) or (target is not None and kind != "l"):
        raise ExportError("bad manifest record: symlink target")
    return path, (kind, mode, uid, gid, size, mtime, target), None


async def _send_lines(writer: asyncio.StreamWriter, items) -> None:
    """JSON lines in DATA frames, then EOF (what the agent reads after fs_tar and after
    fs_manifest with base_dirs)."""
    batch: list[str] = []
    for item in items:
        batch.append(json.dumps(item, separators=(",", ":")))
        if len(batch) >= 2048:
            writer.write(proto.encode(proto.DATA, ("\n".join(batch) + "\n").encode()))
            batch = []
            await writer.drain()
    if batch:
        writer.write(proto.encode(proto.DATA, ("\n".join(batch) + "\n").encode()))
    writer.write(proto.encode(proto.EOF))
    await writer.drain()


def _same_dir(a: tuple, b: tuple) -> bool:
    """Whether two directory records agree on everything the agent compares when it
    decides not to enter a directory (mode, uid, gid, size, mtime_ns)."""
    return a[0] == b[0] == "d" and a[1:6] == b[1:6]


async def sandbox_manifest(agent: AgentClient, base: dict[str, tuple] | None = None, *,
                           exclude: Iterable[str] = (), max_entries: int = MAX_ENTRIES
                           ) -> tuple[dict[str, tuple], list[str]]:
    """The sandbox's manifest from its agent, and the directories it could not read.

    With `base` (the image's manifest), the agent does not enter a directory that still
    shows the image's exact mode, uid, gid, size and mtime_ns (nothing below it was
    copied up: see agent/sbxagent/snapshot.py `walk`), so the walk costs what changed,
    not the image's size; the entries below such a directory are missing from the result
    and `diff_manifests(..., pruned=True)` reads them as unchanged. `exclude`: absolute
    paths left out with everything below them (bind mounts)."""
    exclude = sorted(set(exclude))
    skip = SKIP_TOP.union(exclude)
    chan = await agent._request({"op": "fs_manifest", "base_dirs": base is not None,
                                 "exclude": exclude})
    entries: dict[str, tuple] = {}
    unreadable: list[str] = []
    try:
        if base is not None:
            await _send_lines(chan.writer, ([p, *r[1:6]] for p, r in base.items() if r[0] == "d"))
        _answer(*await chan.next(read=_frame, idle_s=WALK_IDLE_S), "before the manifest")
        pending = b""
        received = 0
        while True:
            ftype, payload = await chan.next(read=_frame, idle_s=WALK_IDLE_S)
            if ftype == proto.EOF:
                break
            received += len(payload)
            if received > MAX_MANIFEST_BYTES:  # bounds the host memory a sandbox can take
                raise ExportError(f"the snapshot is too large: its file list is over "
                                  f"{MAX_MANIFEST_BYTES >> 20} MiB")
            if ftype != proto.DATA:
                _answer(ftype, payload, "mid-manifest")
                raise ExportError("the agent answered twice")
            lines = (pending + payload).split(b"\n")
            pending = lines.pop()
            if len(pending) > 1 << 20:
                raise ExportError("bad manifest record: too long")
            for line in lines:
                if not line:
                    continue
                path, rec, _err = _parse_record(line)
                if _under_any(path, skip, self_too=True):
                    continue  # not ours to snapshot (a well-behaved agent never sends it)
                if rec is None:
                    unreadable.append(path)
                    continue
                if path in entries:
                    raise ExportError(f"manifest lists {path!r} twice")
                entries[path] = rec
                if len(entries) > max_entries:
                    raise ExportError(f"the sandbox has more than {max_entries} files: "
                                      "too many to snapshot")
            await asyncio.sleep(0)  # parsing is CPU work: let the loop breathe
        if pending.strip():
            raise ExportError("manifest ends mid-record")
    finally:
        chan.close()
    return entries, unreadable


def _differs(base: tuple | None, cur: tuple) -> bool:
    if base is None or base[0] != cur[0]:
        return True
    if cur[0] == "d":  # a directory's size is the filesystem's business (4096 vs overlay)
        return base[1:4] != cur[1:4] or base[5] != cur[5]
    return base[1:] != cur[1:]


def diff_manifests(base: dict[str, tuple], cur: dict[str, tuple], unreadable=(), *,
                   pruned: bool = False, copied: frozenset[str] = frozenset()
                   ) -> tuple[list[str], list[str], list[str]]:
    """(changed, deleted, skipped), each sorted. changed: exportable entries (f/d/l) that
    are new or differ; deleted: top-most paths of the image gone in the sandbox;
    skipped: changed special files, and unreadable directories. `pruned`: `cur` came from
    a walk that did not enter directories identical to the image's (see
    `sandbox_manifest`); what lies below them counts as unchanged."""
    changed, skipped = [], []
    for path, rec in cur.items():
        if _differs(base.get(path), rec):
            (changed if rec[0] != "o" else skipped).append(path)
    opaque = set(unreadable)  # directories whose contents `cur` does not show
    if pruned:
        opaque.update(p for p, rec in cur.items()
                      if p in base and p not in copied and _same_dir(base[p], rec))
    gone = set()
    for path, rec in base.items():
        now = cur.get(path)
        if now is not None and not (now[0] == "o" and rec[0] != "o"):
            continue
        if opaque and _under_any(path, opaque):
            continue
        gone.add(path)
    deleted = []
    for path in gone:
        parent = path.rsplit("/", 1)[0]
        if parent in gone:
            continue  # its directory is listed
        if parent and parent in cur and cur[parent][0] != "d":
            continue  # the directory was replaced by a file: nothing below it remains
        deleted.append(path)
    return sorted(changed), sorted(deleted), sorted(skipped) + sorted(unreadable)


def _under_any(path: str, dirs: set[str] | frozenset[str], self_too: bool = False) -> bool:
    if self_too and path in dirs:
        return True
    while True:
        path = path.rsplit("/", 1)[0]
        if not path:
            return False
        if path in dirs:
            return True


# ---- the tar stream from the agent -------------------------------------------------------

class _TarSource:
    """fs_tar on one connection: sends the path list, then hands out the tar's bytes."""

    def __init__(self, agent: AgentClient, paths: list[str]):
        self.agent = agent
        self.paths = paths
        self.chan: Channel | None = None
        self.done = False

    async def open(self) -> None:
        self.chan = await self.agent._request({"op": "fs_tar"})
        await _send_lines(self.chan.writer, self.paths)
        _answer(*await self.chan.next(read=_frame, idle_s=WALK_IDLE_S), "before the tar")

    async def next_chunk(self) -> bytes:
        if self.done:
            return b""
        assert self.chan is not None
        ftype, payload = await self.chan.next(read=_frame, idle_s=WALK_IDLE_S)
        if ftype == proto.DATA:
            return payload
        if ftype == proto.EOF:
            self.done = True
            return b""
        _answer(ftype, payload, "mid-tar")
        raise ExportError("the agent answered twice")

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()


def upper_dirs(upper: str) -> frozenset[str]:
    """Every directory in an overlayfs upper directory, as absolute paths of the sandbox.
    The tree is sandbox-written: walked by descriptor, never through a symlink."""
    out = set()
    for dirpath, _dirs, _files, _fd in os.fwalk(upper, follow_symlinks=False):
        rel = os.path.relpath(dirpath, upper)
        if rel != ".":
            out.add("/" + rel)
        if len(out) > MAX_ENTRIES:
            raise ExportError(f"the sandbox has more than {MAX_ENTRIES} directories: too "
                              "many to snapshot")
    return frozenset(out)


# ---- the whole export ----------------------------------------------------------------------

async def export_changes(agent: AgentClient, base_rootfs: str, dest_dir: str, *,
                         max_bytes: int = 8 << 30, prune: bool = True,
                         exclude: Iterable[str] = (), upper: str | None = None
                         ) -> ExportResult:
    """Write the sandbox's changes relative to `base_rootfs` into `dest_dir` (an existing,
    empty directory) and list what it deleted. Raises ExportError (dest_dir then holds a
    partial tree for the caller to remove), AgentError or AgentUnavailable.

    `prune=False` walks the sandbox's whole tree instead of skipping directories that are
    identical to the image's (same result; ~10x slower on an unchanged image).
    `exclude`: absolute paths left out on both sides with everything below them (the
    sandbox's bind mounts: they are not part of its filesystem).
    `upper`: the host directory holding the sandbox's writes when its rootfs is a host
    overlayfs (its disk, gvisor/_disk.py). Kernel overlayfs copies a directory up with the
    image's mtime and its ext4 size, so an exact match does not mean nothing below it
    changed: every directory present in `upper` is entered instead of pruned."""
    exclude = [os.path.normpath(p) for p in exclude]
    if not all(p.startswith("/") and p != "/" for p in exclude):
        raise ValueError("exclude takes absolute paths other than /")
    base = await asyncio.to_thread(rootfs_manifest, base_rootfs, exclude)
    copied = await asyncio.to_thread(upper_dirs, upper) if upper else frozenset()
    same = {p: r for p, r in base.items() if p not in copied} if prune else None
    cur, unreadable = await sandbox_manifest(agent, same, exclude=exclude)
    changed, deleted, skipped = diff_manifests(base, cur, unreadable, pruned=prune,
                                               copied=copied)
    planned = sum(cur[p][4] for p in changed if cur[p][0] == "f")
    if planned > max_bytes:
        raise ExportError(f"the snapshot is too large: {planned} bytes of changed files, "
                          f"more than {max_bytes}")
    written = total = 0
    if changed:
        src = _TarSource(agent, changed)
        try:
            await src.open()
            written, total = await extract_tar(src, dest_dir, set(changed), max_bytes)
        finally:
            src.close()
    return ExportResult(deleted=deleted, changed=written, bytes=total, skipped=skipped)
