"""A function image whose python is not the server's (Debian 13's 3.13 against the
server's 3.11): the runner starts, and code inside can call the service, because the SDK
mount carries pydantic_core built for that Python too (scripts/fetch-sdk-wheels.sh)."""

from __future__ import annotations

import fnapp_py313 as m
import fntest
import pytest

pytestmark = pytest.mark.timeout(900)


def test_a_python_313_function_calls_the_service(server):
    with fntest.running(m.app):
        assert m.square.remote(7) == 49
        assert m.version_and_call.remote(5) == ([3, 13], 25, [1, 4], "from a sandbox\n")
