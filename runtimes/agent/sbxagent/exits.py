"""Exit codes: the one module that decides them (stdlib only; the agent and the host both
import it).

A command's exit status travels as one shape from the agent to the SDK: `exit_code`,
`timed_out`, `signal` (the agent's EXIT frame, `runtimes.ExitFrame`, the wire's
`ExitStatus`). The codes follow the shell's conventions, so scripts read them as usual:

| code | when |
|---|---|
| the command's own | it exited |
| 128 + N | it was killed by signal N (`signal` = N) |
| 124 | it ran past its `timeout_s` and was killed (`timed_out`; as `timeout(1)`) |
| 126 | it could not be run (not executable, bad working directory, ...) |
| 127 | the program does not exist |
| 137 | it was killed (SIGKILL) because its sandbox ended under it or was terminated; a
  sandbox that ran out of memory, was terminated or died also finishes with 137 |
"""

import os
import signal

TIMEOUT = 124
NOT_EXECUTABLE = 126
NOT_FOUND = 127
KILLED = 128 + signal.SIGKILL  # 137


def of_signal(signum):
    """The code of a command killed by `signum`."""
    return 128 + int(signum)


def of_wait_status(status):
    """(exit code, signal or None) of an `os.waitpid` status."""
    if os.WIFSIGNALED(status):
        return of_signal(os.WTERMSIG(status)), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def of_returncode(rc):
    """(exit code, signal or None) of a `subprocess` return code (negative: a signal)."""
    if rc < 0:
        return of_signal(-rc), -rc
    return rc, None
