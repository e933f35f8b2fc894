"""Fixtures of the real-server function tests: the app modules under apps/ are importable
by their own names (the SDK ships each module file into its containers at /root, and the
runner imports it by that name)."""

from __future__ import annotations

import os
import sys

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
if APPS not in sys.path:
    sys.path.insert(0, APPS)
