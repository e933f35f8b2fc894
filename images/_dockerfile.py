"""Dockerfile parser (images layer): Dockerfile text -> the steps `Image` layers, no Docker.

Pure: no network, no files, stdlib only; the SDK parses on the client, so this module must
stay cheap to import (`images` loads it lazily). Follows Docker's
documented (BuildKit) rules; what cannot be reproduced without Docker (multi-stage builds,
heredocs, ADD from URLs or of archives, SHELL, ...) raises `DockerfileError` naming the
line and saying what to write instead.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re


class DockerfileError(ValueError):
    """A Dockerfile this parser does not accept; the message names the line and the fix."""


@dataclasses.dataclass(frozen=True)
class _Step:
    # Where the instruction starts, for the caller's messages; not compared.
    line: int = dataclasses.field(default=0, compare=False, kw_only=True)

@dataclasses.dataclass(frozen=True)
class From(_Step):
    ref: str  # image reference after ARG substitution

@dataclasses.dataclass(frozen=True)
class Run(_Step):
    argv: list[str] | None  # exec form
    shell: str | None  # shell form, verbatim: the shell expands $VARs at run time
    # The ARG values in scope (unless shadowed by ENV): Docker puts them in this command's
    # environment only, never in the image's.
    build_env: dict[str, str] = dataclasses.field(default_factory=dict, kw_only=True)

@dataclasses.dataclass(frozen=True)
class Copy(_Step):
    sources: list[str]  # as written (after substitution), relative to the build context
    dest: str  # absolute (resolved against WORKDIR); ends in "/" if written so, or as "."
    chown: str | None
    chmod: int | None
    add: bool  # written as ADD

@dataclasses.dataclass(frozen=True)
class Env(_Step):
    values: dict[str, str]

@dataclasses.dataclass(frozen=True)
class Workdir(_Step):
    path: str  # absolute and normalized

@dataclasses.dataclass(frozen=True)
class User(_Step):
    user: str

@dataclasses.dataclass(frozen=True)
class Entrypoint(_Step):
    argv: list[str]  # shell form becomes ["/bin/sh", "-c", text]

@dataclasses.dataclass(frozen=True)
class Cmd(_Step):
    argv: list[str]  # shell form becomes ["/bin/sh", "-c", text]


Instruction = From | Run | Copy | Env | Workdir | User | Entrypoint | Cmd

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_WS = re.compile(r"[\t\v\f\r ]+")
_FLAG = re.compile(r"\s*(--\S*)")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://|git@")
_NAME = re.compile(r"\d+|[@*#?$!-]|\w*")
_HEREDOC = re.compile(r"\d*<<-?[^<]+")
_TARS = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz", ".tar.zst")
# Docker's automatic platform ARGs: global scope, so usable in FROM; re-declare to use later.
_PLATFORM_ARGS = {"BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64",
                  "BUILDVARIANT": "", "TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux",
                  "TARGETARCH": "amd64", "TARGETVARIANT": ""}
_AMD64 = ("linux/amd64", "linux/x86_64", "linux/amd64/v1")
_IGNORED = ("LABEL", "EXPOSE", "STOPSIGNAL", "MAINTAINER")  # image metadata only
_REJECTED = {"HEALTHCHECK": "sandboxes have no health checks; remove it",
             "ONBUILD": "put the commands in RUN instead",
             "VOLUME": "sandboxes have no volumes; remove it (create it with RUN mkdir -p)",
             "SHELL": 'use the exec form with the shell you want: RUN ["bash", "-c", "..."]'}
# What Docker gives an image that sets no PATH; ENV PATH=/x:$PATH is common.
DEFAULT_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_FLAGS = {"FROM": {"platform"}, "COPY": {"chown", "chmod", "from", "link"},
          "ADD": {"chown", "chmod", "link"}}


class _Word:
    """One word through Docker's shell lexer: quotes removed, escapes applied, $VARs expanded."""

    def __init__(self, text: str, env: dict[str, str], escape: str):
        self.s, self.i, self.env, self.esc = text, 0, env, escape

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += len(ch)
        return ch

    def run(self, stop: str = "") -> str:
        out: list[str] = []
        while ch := self.next():
            if ch == stop:
                return "".join(out)
            if ch == "'":  # everything up to the next ' as is
                if (end := self.s.find("'", self.i)) < 0:
                    raise ValueError("unterminated single quote")
                out.append(self.s[self.i:end])
                self.i = end + 1
            elif ch == '"':
                out.append(self._double())
            elif ch == "$":
                out.append(self._dollar())
            elif ch == self.esc:  # escapes any character; dropped at the end
                out.append(self.next())
            else:
                out.append(ch)
        if stop:
            raise ValueError("missing '}' in ${...}")
        return "".join(out)

    def _double(self) -> str:  # after the opening "
        out: list[str] = []
        while (ch := self.next()) != '"':
            if not ch:
                raise ValueError("unterminated double quote")
            if ch == "$":
                out.append(self._dollar())
                continue
            if ch == self.esc and self.peek() in ('"', "$", self.esc):
                ch = self.next()  # only these can be escaped inside "..."
            out.append(ch)
        return "".join(out)

    def _name(self) -> str:  # digits, a special parameter ($@, $# ...: empty here) or a name
        m = _NAME.match(self.s, self.i)
        self.i = m.end()
        return m.group()

    def _dollar(self) -> str:  # after the $
        if self.peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.i += 1
        if not self.peek() or self.peek() in "{}:":
            raise ValueError("bad substitution: ${ must be followed by a variable name")
        name = self._name()
        op, value, is_set = self.next(), self.env.get(name, ""), name in self.env
        if op == "}":
            return value
        if colon := op == ":":
            op = self.next()
        if not op or op not in "-+?":
            raise ValueError(f"unsupported modifier ({':' * colon}{op}) in ${{{name}...}}; use "
                             "${NAME}, ${NAME:-default}, ${NAME:+alternative} or ${NAME:?}"
                             if op else "missing '}' in ${...}")
        word = self.run("}")
        unset = not is_set or (colon and value == "")
        if op == "-":
            return word if unset else value
        if op == "+":
            return "" if unset else word
        if unset:  # ${NAME?message}
            raise ValueError(f"{name}: {word or 'is not allowed to be unset or empty'}")
        return value


def _words(rest: str, esc: str) -> list[str]:
    """Docker's parseWords: split on whitespace outside quotes; quotes and escapes kept."""
    e = re.escape(esc)
    word = rf"""(?:"(?:{e}.|[^"{e}])*"?|'[^']*'?|{e}.|[^\s"'{e}]|{e})+"""
    return re.findall(word, rest, re.DOTALL)


def _fail(line: int, message: str) -> DockerfileError:
    return DockerfileError(f"Dockerfile line {line}: {message}")


def _logical_lines(text: str) -> tuple[list[tuple[int, str]], str]:
    """Directives, comments, blank lines and continuations -> [(first line number, text)]."""
    raw = text.removeprefix("\ufeff").split("\n")
    esc, seen, directives, out, i = "\\", set(), True, [], 0
    while i < len(raw):
        start, line, i = i + 1, raw[i].rstrip("\r").lstrip(), i + 1
        if directives:  # `# name=value` lines at the very top, before anything else
            m = _DIRECTIVE.fullmatch(line)
            key = m.group(1).lower() if m else None
            if key in ("escape", "syntax", "check"):
                if key in seen or (key == "escape" and m.group(2) not in ("\\", "`")):
                    raise _fail(start, f"bad parser directive {line!r}: each may appear once, "
                                "and the escape character must be \\ or `")
                seen.add(key)
                esc = m.group(2) if key == "escape" else esc
                continue
            directives = False
        if not line or line.startswith("#"):
            continue
        cont = re.compile(re.escape(esc) + r"[ \t]*$")  # a trailing escape continues the line
        joined, more = cont.subn("", line)
        while more and i < len(raw):  # comment and blank lines inside are skipped
            part, i = raw[i].rstrip("\r"), i + 1
            if part.strip() and not part.lstrip().startswith("#"):
                part, more = cont.subn("", part)
                joined += part
        if joined.strip():
            out.append((start, joined))
    return out, esc


class _Parser:
    def __init__(self, build_args: dict[str, str], base_env: dict[str, str], esc: str):
        self.build_args, self.esc, self.env = build_args, esc, dict(base_env)
        self.meta: dict[str, str | None] = dict(_PLATFORM_ARGS)  # ARGs declared before FROM
        self.args: dict[str, str | None] = {}  # ARGs declared after FROM
        self.workdir, self.from_line, self.line, self.name = "/", 0, 0, ""
        self.out: list[Instruction] = []

    def fail(self, message: str) -> DockerfileError:
        return _fail(self.line, message)

    def scope(self) -> dict[str, str]:
        if not self.from_line:
            return {k: v for k, v in self.meta.items() if v is not None}
        return {**{k: v for k, v in self.args.items() if v is not None}, **self.env}

    def expand(self, word: str, env: dict[str, str] | None = None) -> str:
        try:
            return _Word(word, self.scope() if env is None else env, self.esc).run()
        except ValueError as e:
            raise self.fail(f"{self.name}: {e}") from None

    def parse(self, line: int, text: str) -> None:
        name, rest = (text.split(None, 1) + [""])[:2]
        self.line, self.name = line, (name := name.upper())
        handler = getattr(self, "do_" + name.lower(), None)
        if name in _REJECTED:
            raise self.fail(f"{name} is not supported; {_REJECTED[name]}")
        if handler is None and name not in _IGNORED:
            raise self.fail(f"unknown instruction {name}; use FROM, ARG, RUN, COPY, ADD, ENV, "
                            "WORKDIR, USER, CMD, ENTRYPOINT (LABEL, EXPOSE, ... are ignored)")
        if not self.from_line and name not in ("FROM", "ARG"):
            raise self.fail(f"{name} before FROM; start with FROM (only ARG may precede it)")
        flags: dict[str, str | None] = {}
        while handler and (m := _FLAG.match(rest)) and m.group(1) != "--":
            rest, (flag, eq, value) = rest[m.end():], m.group(1)[2:].partition("=")
            if flag not in _FLAGS.get(name, ()) or flag in flags:
                why = " twice" if flag in flags else " (BuildKit-only)" if name == "RUN" else ""
                raise self.fail(f"{name} --{flag} is not supported{why}; remove it")
            flags[flag] = value if eq else None
        if handler:
            handler(flags, (rest[m.end():] if m else rest).strip())

    def do_from(self, flags: dict, rest: str) -> None:
        if self.from_line:
            raise self.fail(f"FROM: multi-stage builds are not supported (a second FROM; the "
                            f"first is on line {self.from_line}); build the final stage only")
        words = _WS.split(rest) if rest else []
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise self.fail("FROM takes an image, optionally followed by AS name; e.g. "
                            "FROM python:3.11-slim")
        p = self.expand(flags.get("platform") or "linux/amd64").lower()
        if p not in _AMD64:
            raise self.fail(f"FROM --platform={p} is not supported; sandboxes run linux/amd64")
        if not (ref := self.expand(words[0])):
            raise self.fail(f"FROM: {words[0]} is empty; give the ARG a default or a build_arg")
        self.from_line = self.line
        self.out.append(From(ref, line=self.line))

    def do_arg(self, flags: dict, rest: str) -> None:
        if not (words := _words(rest, self.esc)):
            raise self.fail("ARG needs a name: ARG NAME or ARG NAME=default")
        table = self.args if self.from_line else self.meta
        for key, eq, default in (w.partition("=") for w in words):
            if not key:
                raise self.fail(f"ARG ={default} has no name; write ARG NAME=default")
            value = table.get(key)  # re-declared without a value: keeps its value
            if key in self.build_args:
                value = self.build_args[key]
            elif eq:
                value = self.expand(default)
            elif self.from_line and self.meta.get(key) is not None:
                value = self.meta[key]  # ARG NAME after FROM takes the global ARG's value
            table[key] = value

    def do_env(self, flags: dict, rest: str) -> None:
        if not (words := _words(rest, self.esc)):
            raise self.fail("ENV needs a value: ENV NAME=value")
        pairs = [w.split("=", 1) for w in words]
        if "=" not in words[0]:  # legacy form: ENV NAME the rest of the line
            pairs = [_WS.split(rest, maxsplit=1)]
        if bad := [p[0] for p in pairs if len(p) < 2]:
            raise self.fail(f"ENV: {bad[0]} has no value; write ENV {bad[0]}=value")
        scope, values = self.scope(), {}  # all pairs see the variables from before this ENV
        for key, value in pairs:
            if not (key := self.expand(key, scope)):
                raise self.fail("ENV: a variable name is empty; write NAME=value")
            values[key] = self.expand(value, scope)
        self.env.update(values)
        self.out.append(Env(values, line=self.line))

    def exec_form(self, rest: str) -> list[str] | None:
        """The argv when `rest` is a JSON array (exec form), else None (shell form)."""
        try:
            value = json.loads(rest) if rest.startswith("[") else None
        except ValueError:
            value = None
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise self.fail(f"{self.name}: the exec form must be a JSON array of strings")
            return value
        words = _words(rest, self.esc) if self.name in ("RUN", "COPY", "ADD") else []
        if any(_HEREDOC.fullmatch(w) for w in words):
            raise self.fail(f"{self.name} with a heredoc (<<EOF) is not supported; " + (
                "put the file in the build context" if self.name in ("COPY", "ADD") else
                "join the commands with && on continued lines (ending in \\)"))
        return None

    def do_run(self, flags: dict, rest: str) -> None:
        if not (argv := self.exec_form(rest)) and (argv is not None or not rest):
            raise self.fail("RUN needs a command, e.g. RUN pip install -r requirements.txt")
        build_env = {k: v for k, v in self.args.items() if v is not None and k not in self.env}
        shell = None if argv is not None else rest
        self.out.append(Run(argv, shell, build_env=build_env, line=self.line))

    def do_cmd(self, flags: dict, rest: str) -> None:
        if (argv := self.exec_form(rest)) is None and not rest:
            raise self.fail(f'{self.name} needs a command, e.g. {self.name} ["python", "app.py"]')
        step = Cmd if self.name == "CMD" else Entrypoint
        self.out.append(step(["/bin/sh", "-c", rest] if argv is None else argv, line=self.line))

    do_entrypoint = do_cmd

    def do_workdir(self, flags: dict, rest: str) -> None:
        if not (path := self.expand(rest)):
            raise self.fail("WORKDIR needs a path, e.g. WORKDIR /app")
        self.workdir = _normalize(posixpath.join(self.workdir, path))
        self.out.append(Workdir(self.workdir, line=self.line))

    def do_user(self, flags: dict, rest: str) -> None:
        if not (user := self.expand(rest)):
            raise self.fail("USER needs a user name or uid, e.g. USER 1000:1000")
        self.out.append(User(user, line=self.line))

    def do_copy(self, flags: dict, rest: str) -> None:
        n = self.name
        if "from" in flags:
            raise self.fail(f"{n} --from is not supported: multi-stage builds are not supported; "
                            "build the final stage only and copy from the build context")
        if len(words := self.exec_form(rest) or _WS.split(rest)) < 2:
            raise self.fail(f"{n} needs sources and a destination, e.g. {n} app.py /app/")
        *sources, dest = [self.expand(w) for w in words]
        for src in sources:
            if _URL.match(src):
                raise self.fail(f"{n} from a URL ({src}) is not supported; download it in a RUN "
                                "step instead (RUN curl -fsSLo DEST URL, or Image.run_commands)")
            norm = posixpath.normpath(src or "/")
            if norm.startswith(("/", "../")) or norm == "..":
                raise self.fail(f"{n} source {src!r} is not inside the build context; sources "
                                "are paths relative to context_dir")
            if n == "ADD" and src.lower().endswith(_TARS):
                raise self.fail(f"ADD would unpack the archive {src}, which is not supported; "
                                "COPY it and unpack it with RUN tar -xf instead")
        slash = "/" if dest in ("", ".") or dest.endswith("/") else ""  # as Docker: a directory
        dest = (_normalize(posixpath.join(self.workdir, dest)).rstrip("/") + slash) or "/"
        if len(sources) > 1 and not dest.endswith("/"):
            raise self.fail(f"{n} of several sources needs a directory ending in /: {dest}/")
        if (chown := flags.get("chown")) is not None and not (chown := self.expand(chown)):
            raise self.fail(f"{n} --chown needs a user, e.g. --chown=1000:1000")
        if (chmod := flags.get("chmod")) is not None:
            if not re.fullmatch(r"[0-7]{1,4}", chmod := self.expand(chmod)):
                raise self.fail(f"{n} --chmod={chmod} is not an octal mode such as 755")
            chmod = int(chmod, 8)
        self.out.append(Copy(sources, dest, chown, chmod, n == "ADD", line=self.line))

    do_add = do_copy


def _normalize(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def parse_dockerfile(text: str, *, build_args: dict[str, str] | None = None,
                     base_env: dict[str, str] | None = None) -> list[Instruction]:
    """A single-stage Dockerfile's build steps, in order; raises InvalidRequestError.
    base_env: the FROM image's environment, which substitutions see (PATH defaults as Docker's)."""
    build_args, base_env = dict(build_args or {}), {**DEFAULT_BASE_ENV, **(base_env or {})}
    if any(not isinstance(x, str) for d in (build_args, base_env) for x in (*d, *d.values())):
        raise DockerfileError("build_args and base_env must map names (str) to str")
    lines, esc = _logical_lines(text)
    parser = _Parser(build_args, base_env, esc)
    for line, instruction in lines:
        parser.parse(line, instruction)
    if not parser.from_line:
        raise _fail(len(text.rstrip("\n").split("\n")),
                    "the Dockerfile has no FROM instruction; start it with FROM <image>")
    return parser.out
