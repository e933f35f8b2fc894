"""The exec contract, checked without a server: one exit-status shape from the agent to the
SDK, exit codes decided in one module, and requests built with the wire models."""

from __future__ import annotations

import dataclasses
import signal

import pytest

import sandbox_service as sbx
from runtimes import ExitFrame, exit_codes
from sandbox_service._client import wire_model
from sandbox_service.wire import ExecRequest, ExecResult, ExitStatus, SandboxCreate

pytestmark = pytest.mark.fast


def test_one_exit_status_shape():
    frame = {f.name for f in dataclasses.fields(ExitFrame)}
    assert frame == set(ExitStatus.model_fields) - {"type"} == {"exit_code", "timed_out", "signal"}
    assert frame <= set(ExecResult.model_fields)
    ev = ExitFrame(exit_codes.TIMEOUT, True, signal.SIGKILL)
    assert ExitStatus(**dataclasses.asdict(ev)).model_dump() == {
        "type": "exit", "exit_code": 124, "timed_out": True, "signal": 9}


def test_exit_codes_follow_the_shell():
    assert (exit_codes.TIMEOUT, exit_codes.NOT_EXECUTABLE, exit_codes.NOT_FOUND,
            exit_codes.KILLED) == (124, 126, 127, 137)
    assert exit_codes.of_returncode(-signal.SIGTERM) == (143, signal.SIGTERM)
    assert exit_codes.of_returncode(3) == (3, None)


def test_the_sdk_checks_requests_with_the_wire_models():
    assert wire_model(ExecRequest, argv=["echo", "hi"], timeout_s=5).timeout_s == 5
    with pytest.raises(sbx.InvalidRequestError, match="argv"):
        wire_model(ExecRequest, argv=[])
    with pytest.raises(sbx.InvalidRequestError, match="timeout_s"):
        wire_model(ExecRequest, argv=["true"], timeout_s=-1)
    with pytest.raises(sbx.InvalidRequestError, match="memory_mib"):
        wire_model(SandboxCreate, memory_mib=-5)
