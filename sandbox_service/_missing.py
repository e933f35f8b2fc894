"""Modal names this service does not have yet (public layer): a clear AttributeError that
says so and what to use, instead of a bare one. Used by the package's and the submodules'
module-level `__getattr__`.
"""

from __future__ import annotations

# name -> what to do meanwhile
PLANNED = {
    "Volume": "pass data as function arguments or results, or use a sandbox's filesystem",
    "NetworkFileSystem": "pass data as function arguments or results",
    "CloudBucketMount": "download inside the function instead",
    "Dict": "pass data as function arguments or results",
    "Queue": "pass data as function arguments or results",
    "Cron": "run the job from your own scheduler (cron, systemd timers) with Function.from_name",
    "Period": "run the job from your own scheduler with Function.from_name",
    "fastapi_endpoint": "call the function with Function.from_name(...).remote()",
    "web_endpoint": "call the function with Function.from_name(...).remote()",
    "asgi_app": "serve the app from a Sandbox with encrypted_ports= and its tunnel",
    "wsgi_app": "serve the app from a Sandbox with encrypted_ports= and its tunnel",
    "web_server": "serve it from a Sandbox with encrypted_ports= and its tunnel",
    "current_function_call_id": "pass an id as an argument",
    "current_input_id": "pass an id as an argument",
    "interact": "use `sbx container exec` or a Sandbox",
    "Proxy": "use cidr_allowlist / domain_allowlist on the sandbox",
    "SchedulerPlacement": "everything runs on this one server",
    "Environment": "one server is one environment",
}


def missing(module: str, name: str) -> AttributeError:
    what = PLANNED.get(name)
    if what is not None:
        return AttributeError(f"{module}.{name} is not available yet in sandbox-service (it "
                              f"is planned); meanwhile: {what}")
    return AttributeError(f"module {module!r} has no attribute {name!r} (sandbox-service "
                          "implements Modal's API for sandboxes, images, secrets, apps, "
                          "functions and classes; see docs/modal-compat.md)")
