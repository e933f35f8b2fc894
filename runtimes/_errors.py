"""The root of what a runtime raises (runtimes layer).

Every runtime exception subclasses `RuntimeFault`: the agent's answers (`AgentError`: the
request was refused, with a code; `AgentUnavailable`: the sandbox or its agent is gone),
and the host's failures (runsc, disks, networks, host commands, exports). The server maps
them to API errors in one place (`server/services/_sandbox_io.py`, `_agent_call`): an
`AgentError` by its code, an `AgentUnavailable` by what happened to the sandbox, and any
other `RuntimeFault` as `RuntimeUnavailableError` (the host is at fault: `sbx doctor`).
"""


class RuntimeFault(Exception):
    """Something a runtime could not do; the message says what and what to check."""
