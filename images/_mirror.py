"""Choosing the Debian mirror that debootstrap fetches from (images layer).

Order: the explicit argument, then `SBX_DEBIAN_MIRROR`, then the host's apt sources (deb822
`*.sources` files and classic `deb URL suite ...` lines, for an entry whose suite is exactly
the one being built), then http://deb.debian.org/debian. The mirror is never part of an
image's digest: the same recipe from two mirrors is the same image.

This module must not import the server (`sandbox_service.server`) or FastAPI.
"""

from __future__ import annotations

import glob
import logging
import os

log = logging.getLogger("sbx.images")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
_SCHEMES = ("http://", "https://", "file:/", "ftp://")


def resolve_mirror(explicit: str | None = None, suite: str = "bookworm", *,
                   apt_dir: str = "/etc/apt") -> str:
    """The mirror URL to use for `suite` (no trailing slash)."""
    if explicit:
        return explicit.rstrip("/")
    found = mirror_from_apt(suite, apt_dir=apt_dir)
    if found:
        return found
    return DEFAULT_MIRROR


def mirror_from_apt(suite: str, *, apt_dir: str = "/etc/apt") -> str | None:
    """The first `deb` mirror in the apt configuration that serves exactly `suite`."""
    files: list[str] = []
    main = os.path.join(apt_dir, "sources.list")
    if os.path.isfile(main):
        files.append(main)
    files += sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.list")))
    files += sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.sources")))
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            log.debug("cannot read apt source %s: %s", path, e)
            continue
        parse = _parse_deb822 if path.endswith(".sources") else _parse_one_line
        for types, uris, suites in parse(text):
            if "deb" not in types or suite not in suites:
                continue
            for uri in uris:
                if uri.startswith(_SCHEMES):
                    log.debug("mirror for %s from %s: %s", suite, path, uri)
                    return uri.rstrip("/")
    return None


def _parse_one_line(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """Classic sources.list: `deb [opt=val ...] URI suite [component ...]`."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind, rest = words[0], words[1:]
        if rest and rest[0].startswith("["):
            # Options may contain spaces: skip through the closing bracket.
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            out.append(([kind], [rest[0]], [rest[1]]))
    return out


def _parse_deb822(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """deb822 `.sources`: paragraphs of `Field: value` with continuation lines."""
    out = []
    for para in _paragraphs(text):
        if para.get("enabled", "yes").strip().lower() == "no":
            continue
        out.append((para.get("types", "").split(), para.get("uris", "").split(),
                    para.get("suites", "").split()))
    return out


def _paragraphs(text: str) -> list[dict[str, str]]:
    paras: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                paras.append(cur)
            cur, key = {}, None
            continue
        if raw[0] in " \t":
            if key is not None:
                cur[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        cur[key] = value.strip()
    if cur:
        paras.append(cur)
    return paras
