"""Wire models of image builds, blobs and snapshots, shared by the SDK and the server
(public layer). pydantic only; must not import the server or FastAPI.

An image recipe is a list of steps; the first is a source (debian_slim, registry, image).
Local files travel separately as content-addressed blobs (sha256 hex), uploaded only when
the server lacks them, and are referenced from `files` steps by digest.

`POST /v1/images` answers with newline-delimited JSON (`application/x-ndjson`), one
BuildEvent per line: `{"type": "log", "line": ...}` while building, then exactly one
`{"type": "done", "image": ImageInfo}` or `{"type": "error", "error": {"code", "message"}}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._api import check_abs_path

SHA256_RE = r"^[0-9a-f]{64}$"
MAX_STEPS = 256
MAX_ENTRIES = 100_000


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebianSlimStep(_M):
    kind: Literal["debian_slim"]
    python_version: str | None = Field(None, max_length=16)
    force_build: bool = False


class RegistryStep(_M):
    kind: Literal["registry"]
    ref: str = Field(min_length=1, max_length=512)
    secret_env: dict[str, str] = Field(default_factory=dict)  # REGISTRY_USERNAME / _PASSWORD
    secret_names: list[str] = Field(default_factory=list, max_length=64)  # named secrets
    force_build: bool = False


class ImageStep(_M):
    kind: Literal["image"]
    image_id: str = Field(min_length=1, max_length=64)


class RunStep(_M):
    kind: Literal["run"]
    commands: list[Annotated[str, Field(min_length=1, max_length=65536)]] = Field(
        min_length=1, max_length=1000)
    secret_env: dict[str, str] = Field(default_factory=dict)
    secret_names: list[str] = Field(default_factory=list, max_length=64)
    force_build: bool = False


class AptStep(_M):
    kind: Literal["apt"]
    packages: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1, max_length=5000)
    extra_options: str = Field("", max_length=4096)
    secret_env: dict[str, str] = Field(default_factory=dict)
    secret_names: list[str] = Field(default_factory=list, max_length=64)
    force_build: bool = False


class PipStep(_M):
    kind: Literal["pip", "uv_pip"]
    packages: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        default_factory=list, max_length=5000)
    requirements: list[Annotated[str, Field(max_length=4 << 20)]] = Field(
        default_factory=list, max_length=64)
    index_url: str | None = Field(None, max_length=2048)
    extra_index_url: str | None = Field(None, max_length=2048)
    find_links: str | None = Field(None, max_length=2048)
    pre: bool = False
    extra_options: str = Field("", max_length=4096)
    secret_env: dict[str, str] = Field(default_factory=dict)
    secret_names: list[str] = Field(default_factory=list, max_length=64)
    force_build: bool = False


class EnvStep(_M):
    kind: Literal["env"]
    env: dict[str, str]

    @field_validator("env")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not k or "=" in k or "\0" in k:
                raise ValueError(f"environment variable name {k!r} is not valid")
        return v


class WorkdirStep(_M):
    kind: Literal["workdir"]
    path: str

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        return check_abs_path(v)


class ArgvStep(_M):
    kind: Literal["entrypoint", "cmd"]
    argv: list[Annotated[str, Field(max_length=65536)]] = Field(max_length=1000)


class UserStep(_M):
    kind: Literal["user"]
    user: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_.:-]*$")


class FileEntry(_M):
    path: str
    type: Literal["file", "dir", "symlink"] = "file"
    sha256: str | None = Field(None, pattern=SHA256_RE)
    mode: int = Field(0o644, ge=0, le=0o7777)
    target: str | None = Field(None, max_length=4096)

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        return check_abs_path(v)

    @model_validator(mode="after")
    def _complete(self) -> "FileEntry":
        if self.type == "file" and not self.sha256:
            raise ValueError(f"{self.path}: a file entry needs the sha256 of its content")
        if self.type == "symlink" and not self.target:
            raise ValueError(f"{self.path}: a symlink entry needs a target")
        return self


class FilesStep(_M):
    kind: Literal["files"]
    entries: list[FileEntry] = Field(min_length=1, max_length=MAX_ENTRIES)
    chown: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_.:-]+$")
    force_build: bool = False


class FunctionStep(_M):
    """Image.run_function: import `module` in a build container and call `qualname` with
    the pickled `(args, kwargs)`. `entries` (the module's source, uploaded as blobs) are
    mounted for the step only and are not part of the layer's key: `source_sha256` (the
    function's own source) is, so an edit elsewhere in the file does not rerun it."""
    kind: Literal["function"]
    module: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    qualname: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    source_sha256: str = Field(pattern=SHA256_RE)
    args_b64: str = Field("", max_length=1 << 20)
    entries: list[FileEntry] = Field(min_length=1, max_length=MAX_ENTRIES)
    timeout_s: float | None = Field(None, gt=0, le=86400)
    secret_env: dict[str, str] = Field(default_factory=dict)
    secret_names: list[str] = Field(default_factory=list, max_length=64)
    force_build: bool = False


Step = Annotated[Union[DebianSlimStep, RegistryStep, ImageStep, RunStep, AptStep, PipStep,
                       EnvStep, WorkdirStep, ArgvStep, UserStep, FilesStep, FunctionStep],
                 Field(discriminator="kind")]


class ImageBuildRequest(_M):
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    force_build: bool = False


class ImageInfo(_M):
    image_id: str
    digest: str
    created_at: float
    layers: int
    size_bytes: int
    python: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    source: str = ""
    built_layers: int = 0


class ImageList(_M):
    images: list[ImageInfo]
    disk_bytes: int = 0


class BlobsMissingRequest(_M):
    digests: list[Annotated[str, Field(pattern=SHA256_RE)]] = Field(max_length=MAX_ENTRIES)


class BlobsMissingResponse(_M):
    missing: list[str]


class GcResult(_M):
    removed_layers: int
    freed_bytes: int
    kept_layers: int


def image_info(rec: dict[str, Any]) -> ImageInfo:
    cfg = rec.get("config") or {}
    return ImageInfo(image_id=rec["image_id"], digest=rec["digest"], created_at=rec["created_at"],
                     layers=len(rec.get("layers") or []), size_bytes=int(rec.get("size_bytes") or 0),
                     python=rec.get("python"), env=dict(cfg.get("env") or {}),
                     workdir=cfg.get("workdir"), entrypoint=cfg.get("entrypoint"),
                     cmd=cfg.get("cmd"), user=cfg.get("user"), source=rec.get("source") or "",
                     built_layers=int(rec.get("built_layers") or 0))
