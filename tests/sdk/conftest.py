"""Fixtures for the fast tests: the real app on a fake runtime (tests/fakeserver.py).
The real-server fixtures (`server`, `api`, `sandbox`) still come from tests/conftest.py."""

from fakeserver import fake_sdk, fake_server, make_fake_server  # noqa: F401 (fixtures)
