"""Wire models of functions, classes and their calls (wire layer), and the frame format
between the server and the function runner inside a container.

Arguments, results and class parameters are cloudpickle bytes made by the SDK or the
runner; here they are base64 text (`*_b64`) that the server stores and forwards but never
unpickles. Both ends import this module; it imports pydantic and the stdlib only.

The runner's frames are in _frames.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ._api import ENV_NAMES, MAX_TIMEOUT_S, _check_env, _Model
from ._volumes import VolumeMount, check_mounts

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # one argument tuple or one result, pickled
MAX_INPUTS_PER_REQUEST = 1000
MAX_FUNCTIONS_PER_APP = 256
_NAME = r"^[A-Za-z_][A-Za-z0-9_.]*$"
_APP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

OutputStatus = Literal["success", "failure", "timeout", "cancelled", "init_failure",
                       "terminated", "item", "expired"]


class ScheduleSpec(_Model):
    """`schedule=modal.Cron(...)` or `modal.Period(...)` of a deployed function."""
    kind: Literal["cron", "period"]
    cron: str | None = Field(None, max_length=256)
    timezone: str = Field("UTC", max_length=64)
    seconds: float = Field(0.0, ge=0, description="a Period's weeks..seconds, in seconds")
    months: int = Field(0, ge=0, le=1200, description="a Period's years and months")

    @model_validator(mode="after")
    def _v_complete(self) -> "ScheduleSpec":
        if self.kind == "cron" and not (self.cron or "").strip():
            raise ValueError("a Cron schedule needs its cron string")
        if self.kind == "period" and self.months == 0 and self.seconds < 1:
            raise ValueError("a Period must be at least 1 second")
        return self


class WebSpec(_Model):
    """A web endpoint (`@modal.fastapi_endpoint`, `asgi_app`, `wsgi_app`, `web_server`)."""
    kind: Literal["fastapi", "asgi", "wsgi", "server"]
    method: str = Field("GET", max_length=16)
    label: str | None = Field(None, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    docs: bool = False
    requires_proxy_auth: bool = False
    port: int | None = Field(None, ge=1, le=65535)
    startup_timeout_s: float = Field(5.0, gt=0, le=3600)
    attr: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="the @app.cls method that is the endpoint")


class RetryPolicy(_Model):
    """Modal's `Retries`: the bounds are Modal's."""

    max_retries: int = Field(..., ge=0, le=10)
    backoff_coefficient: float = Field(2.0, ge=1.0, le=10.0)
    initial_delay_s: float = Field(1.0, ge=0.0, le=60.0)
    max_delay_s: float = Field(60.0, ge=1.0, le=60.0)

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1 is the first retry)."""
        return min(self.max_delay_s,
                   self.initial_delay_s * self.backoff_coefficient ** max(0, attempt - 1))


class FunctionSpec(_Model):
    """One `@app.function` or `@app.cls` as the SDK registers it."""

    name: str = Field(..., min_length=1, max_length=128, pattern=_NAME,
                      description="the tag: the function's name, or the class's")
    module: str | None = Field(None, max_length=256, description=(
        "module the runner imports in the container (None with serialized_b64)"))
    qualname: str = Field(..., min_length=1, max_length=256)
    serialized_b64: str | None = Field(None, description="cloudpickle of the function or class "
                                       "(serialized=True), opaque to the server")
    is_class: bool = False
    methods: list[str] = Field(default_factory=list, max_length=256)
    generators: list[str] = Field(default_factory=list, max_length=256,
                                  description="the function or methods that are generators")
    image: str = Field("debian_slim", max_length=256)
    cpu: float | None = Field(None, gt=0, le=64)
    memory_mib: int | None = Field(None, ge=32, le=256 * 1024)
    disk_mib: int | None = Field(None, ge=16, le=16 * 1024 * 1024)
    gpu: str | list[str] | None = None
    timeout_s: float = Field(300.0, gt=0, le=MAX_TIMEOUT_S, description="per input")
    startup_timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    retries: RetryPolicy | None = None
    secret_names: list[str] = Field(default_factory=list, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, json_schema_extra=ENV_NAMES)
    min_containers: int = Field(0, ge=0, le=100)
    max_containers: int | None = Field(None, ge=1, le=1000)
    buffer_containers: int = Field(0, ge=0, le=100)
    scaledown_window_s: float = Field(60.0, ge=1, le=24 * 3600)
    single_use_containers: bool = False
    block_network: bool = False
    cidr_allowlist: list[str] | None = None
    restrict_modal_access: bool = False
    max_inputs: int = Field(1, ge=1, le=1000, description="@concurrent(max_inputs=)")
    target_inputs: int | None = Field(None, ge=1, le=1000)
    batch_max_size: int | None = Field(None, ge=1, le=1000, description="@batched")
    batch_wait_ms: int | None = Field(None, ge=0, le=10 * 60 * 1000)
    schedule: ScheduleSpec | None = None
    web: WebSpec | None = None
    volumes: list[VolumeMount] = Field(default_factory=list)

    _v_env = field_validator("env")(lambda cls, v: _check_env(v))
    _v_volumes = field_validator("volumes")(lambda cls, v: check_mounts(v))

    @model_validator(mode="after")
    def _v_code(self) -> "FunctionSpec":
        if not self.module and not self.serialized_b64:
            raise ValueError("a function needs its module (importable in the container) "
                             "or serialized_b64")
        if self.max_containers is not None and self.min_containers > self.max_containers:
            raise ValueError(f"min_containers ({self.min_containers}) is above "
                             f"max_containers ({self.max_containers})")
        return self


class AppDeploy(_Model):
    """Register an app's functions: an ephemeral run (`app.run()`, `sbx run`) or a deploy."""

    name: str | None = Field(None, min_length=1, max_length=64, pattern=_APP_NAME)
    mode: Literal["ephemeral", "deployed"] = "ephemeral"
    functions: list[FunctionSpec] = Field(default_factory=list, max_length=MAX_FUNCTIONS_PER_APP)

    @model_validator(mode="after")
    def _v_names(self) -> "AppDeploy":
        names = [f.name for f in self.functions]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"two functions are named {dup!r}: give one name= another name")
        if self.mode == "deployed" and not self.name:
            raise ValueError("a deployed app needs a name: App('my-app')")
        return self


class AppDeployed(_Model):
    app_id: str
    name: str | None
    mode: str
    version: int
    functions: dict[str, str] = Field(..., description="function name -> function id")
    web_urls: dict[str, str] = Field(default_factory=dict, description=(
        "web endpoints: function name -> URL (a path on the server when no web domain is "
        "set: the SDK joins it to its server URL)"))


class AppSummary(_Model):
    app_id: str
    name: str | None
    state: str = Field(..., description="ephemeral, deployed or stopped")
    version: int = 0
    created_at: float
    functions: list[str] = Field(default_factory=list)
    containers: int = 0
    next_runs: dict[str, float] = Field(default_factory=dict, description=(
        "scheduled functions -> the time of their next run"))


class AppSummaryList(_Model):
    apps: list[AppSummary]


class FunctionInfo(_Model):
    function_id: str
    app_id: str
    app_name: str | None
    name: str
    version: int
    is_class: bool
    methods: list[str]
    generators: list[str]
    state: str
    containers: int = 0
    queued: int = 0
    running: int = 0
    web_url: str | None = None
    web_requests: int = 0
    web_errors: int = Field(0, description="requests answered 5xx")
    web_latency_ms: dict[str, float] = Field(default_factory=dict, description=(
        "p50 / p99 over the last 1000 requests"))


OVERRIDABLE = ("cpu", "memory_mib", "gpu", "timeout_s", "retries", "secret_names", "env",
               "min_containers", "max_containers", "buffer_containers", "scaledown_window_s",
               "max_inputs", "target_inputs", "batch_max_size", "batch_wait_ms")


class CallCreate(_Model):
    method: str | None = Field(None, max_length=128, description="a class's method")
    overrides: dict[str, Any] | None = Field(None, description=(
        "Cls.with_options / with_concurrency / with_batching: FunctionSpec fields "
        f"({', '.join(OVERRIDABLE)}); each distinct set gets its own containers"))
    params_b64: str | None = Field(None, description="a parametrized class's parameters")
    inputs_b64: list[str] = Field(default_factory=list, max_length=MAX_INPUTS_PER_REQUEST)
    kind: Literal["call", "map", "spawn", "gen"] = "call"
    closed: bool = Field(True, description="no more inputs will be added")


    @field_validator("overrides")
    @classmethod
    def _v_overrides(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        bad = sorted(set(v or ()) - set(OVERRIDABLE))
        if bad:
            raise ValueError(f"cannot override {bad}; these can be: {list(OVERRIDABLE)}")
        return v or None


class CallInputs(_Model):
    inputs_b64: list[str] = Field(..., max_length=MAX_INPUTS_PER_REQUEST)
    closed: bool = False


class CallCreated(_Model):
    call_id: str
    inputs: int


class CallOutput(_Model):
    index: int
    status: OutputStatus
    data_b64: str | None = None
    message: str | None = None
    traceback: str | None = None


class CallOutputs(_Model):
    outputs: list[CallOutput]
    next_seq: int = Field(..., description="pass as after_seq to get the outputs after these")
    done: bool = Field(..., description="every input has its final output")
    inputs: int
    closed: bool


class CallInfo(_Model):
    call_id: str
    function_id: str
    kind: str
    created_at: float
    inputs: int
    finished: int
    closed: bool
    cancelled: bool


class ContainerSummary(_Model):
    container_id: str
    function_id: str
    app_id: str
    function_name: str
    state: str
    started_at: float
    running_inputs: int


class ContainerSummaryList(_Model):
    containers: list[ContainerSummary]


def check_payload(b64: str | None, what: str) -> None:
    """Raise ValueError when a base64 payload decodes to more than MAX_PAYLOAD_BYTES."""
    if b64 is not None and len(b64) * 3 // 4 > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{what} is {len(b64) * 3 // 4} bytes pickled; the limit is "
                         f"{MAX_PAYLOAD_BYTES} bytes: pass a Volume or a path instead")


# the runner's frames: _frames.py (stdlib only)
from ._frames import MAX_HEADER, RUNNER_PORT, encode_frame  # noqa: E402,F401
