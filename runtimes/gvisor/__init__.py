"""gVisor (runsc) backend (runtimes layer): one `GVisorRuntime` and the host checks
`sbx doctor` reports. Other packages import these names from here, never from the private
modules."""

from ._cgroups import CGROUP_ROOT
from ._cgroups import version as cgroup_version
from ._disk import unavailable as disk_unavailable
from ._gpu_spec import driver_mounts as gpu_driver_mounts
from ._gpu_spec import gpu_unavailable
from ._runsc import Features, detect_features, find_runsc
from ._runtime import AGENT_DIR, BootError, GVisorRuntime, RuntimeUnavailable

__all__ = ["AGENT_DIR", "BootError", "CGROUP_ROOT", "Features", "GVisorRuntime",
           "RuntimeUnavailable", "cgroup_version", "detect_features", "disk_unavailable",
           "find_runsc", "gpu_driver_mounts", "gpu_unavailable"]
