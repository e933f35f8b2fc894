"""Host files a sandbox's bundle needs (runtimes layer, gVisor backend): the agent package
installed once with its bytecode, the sandbox's own /etc/hosts, and private files for specs
that hold secrets. No runsc calls here."""

from __future__ import annotations

import os

AGENT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agent")
PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


def install_agent(target: str) -> str:
    """Copy the agent package into a directory of its own (the only thing the sandbox sees
    there) with precompiled .pyc files: compiling at every boot costs ~20 ms under gVisor.
    The .pyc files are used when the image's Python has the host's minor version;
    otherwise the image's python3 compiles the sources itself."""
    import compileall

    src_pkg = os.path.join(AGENT_DIR, "sbxagent")
    dst_pkg = os.path.join(target, "sbxagent")
    os.makedirs(dst_pkg, mode=0o755, exist_ok=True)
    changed = False
    for name in sorted(os.listdir(src_pkg)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(src_pkg, name), "rb") as f:
            code = f.read()
        dst = os.path.join(dst_pkg, name)
        try:
            with open(dst, "rb") as f:
                if f.read() == code:
                    continue
        except OSError:
            pass
        tmp = dst + ".tmp"
        with open(tmp, "wb") as f:
            f.write(code)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        changed = True
    if changed or not os.path.isdir(os.path.join(dst_pkg, "__pycache__")):
        compileall.compile_dir(dst_pkg, quiet=1, force=True,
                               invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return target


def private_file(path: str):
    """A new text file only the service's user can read (the spec holds secrets' values)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o600), "w")


# The sandbox's own /etc/hosts (as Docker writes one): its hostname resolves, so `sudo`,
# `hostname -f` and JVMs do not stall or complain. Writable: the file is the sandbox's own.
HOSTS = ("127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n")


def hosts_file(base: str) -> str:
    path = os.path.join(base, "hosts")
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o644), "w") as f:
        f.write(HOSTS)
    return path
