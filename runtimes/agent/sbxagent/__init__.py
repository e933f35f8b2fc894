"""The in-sandbox agent: PID 1 of every sandbox (runtimes layer, runs INSIDE gVisor).

Stdlib only, Python 3.9+. This package is bind-mounted read-only into the sandbox and
imported by the image's own python3 (`import sbxagent; sbxagent.main()`); the host
imports `sbxagent.proto` for the frame format.

Duties: reap zombies; run each command in its own session with the requested user,
workdir and env; stream stdout/stderr separately; take stdin and EOF; deliver signals to
the whole process group; enforce per-exec timeouts; do file operations from inside the
sandbox (the host never resolves sandbox-controlled paths); keep the main command alive
across server restarts.
"""


def main():
    from .boot import main as _main

    _main()
