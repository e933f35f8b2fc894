"""Modal names this service does not have yet (public layer): a clear AttributeError that
says so and what to use, instead of a bare one. Used by the package's and the submodules'
module-level `__getattr__`.
"""

from __future__ import annotations

# name -> what to do meanwhile
PLANNED = {
    "NetworkFileSystem": "use a Volume (one filesystem shared by every container here)",
    "CloudBucketMount": "download inside the function instead",
    "interact": "use `sbx container exec` or a Sandbox",
    "Proxy": "use cidr_allowlist / domain_allowlist on the sandbox",
    "SchedulerPlacement": "everything runs on this one server",
    "Environment": "one server is one environment",
}

# name -> what to use instead (not planned as such)
INSTEAD = {
    "forward": "make a Sandbox with encrypted_ports=[port] and use sb.tunnels()[port] or "
               "sb.forward_port(port)",
    "Probe": "poll readiness yourself: sb.exec('sh', '-c', 'until <check>; do sleep 0.2; done')",
    "Mount": "use Image.add_local_dir / add_local_file / add_local_python_source (Modal 1.0's "
             "replacement for mounts)",
    "SandboxSnapshot": "use sb.snapshot_filesystem(), which returns an Image to create from",
}


def missing(module: str, name: str) -> AttributeError:
    instead = INSTEAD.get(name)
    if instead is not None:
        return AttributeError(f"{module}.{name} is not available in sandbox-service: {instead}")
    what = PLANNED.get(name)
    if what is not None:
        return AttributeError(f"{module}.{name} is not available yet in sandbox-service (it "
                              f"is planned); meanwhile: {what}")
    return AttributeError(f"module {module!r} has no attribute {name!r} (sandbox-service "
                          "implements Modal's API for sandboxes, images, secrets, apps, "
                          "functions, classes, web endpoints, schedules and storage; docs/modal-compat.md lists "
                          "what exists)")
