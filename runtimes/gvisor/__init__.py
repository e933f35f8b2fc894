"""gVisor (runsc) backend."""

from ._runsc import Features, detect_features, find_runsc
from ._runtime import AGENT_DIR, BootError, GVisorRuntime, RuntimeUnavailable

__all__ = ["AGENT_DIR", "BootError", "Features", "GVisorRuntime", "RuntimeUnavailable",
           "detect_features", "find_runsc"]
