"""GPU requests in Modal's grammar (wire layer: both ends parse them the same way).

`"H100"`, `"a100-80gb:2"`, `"any"`, `"L40S:4"`: a model (case-insensitive) and an optional
`:N` count (1-8). Functions may give a list, tried in order (fallbacks). `"H100!"` and
`"B200+"` are Modal's ways of saying "exactly this model" and "this or newer"; here a model
is always matched exactly (an H100 request never gets an H200) so both forms mean the same
as the plain name.

`GpuRequest.matches(name, memory_mib)` says whether a device NVML reports (its name, e.g.
`"NVIDIA H100 80GB HBM3"`, `"NVIDIA A100-SXM4-40GB"`, `"Tesla T4"`) is of the requested
model. An A100 without a size takes either size, as Modal's does.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

MAX_GPUS = 8
# model -> the words that identify it in an NVML device name (any of them)
MODELS: dict[str, tuple[str, ...]] = {
    "T4": ("T4",), "L4": ("L4",), "A10": ("A10", "A10G"), "A10G": ("A10G", "A10"),
    "A100": ("A100",), "A100-40GB": ("A100",), "A100-80GB": ("A100",), "L40S": ("L40S",),
    "H100": ("H100",), "H200": ("H200",), "B200": ("B200",), "ANY": (),
}
_SIZES = {"A100-40GB": (0, 60 * 1024), "A100-80GB": (60 * 1024, 1 << 30)}
_FORM = re.compile(r"^([A-Za-z0-9]+(?:-\d+GB)?)([!+]?)(?::(\d+))?$", re.IGNORECASE)
EXAMPLES = "'H100', 'A100-80GB:2', 'L4', 'any', or for functions a list of them"


@dataclasses.dataclass(frozen=True)
class GpuRequest:
    model: str  # canonical: "H100", "A100-80GB", "ANY"
    count: int = 1

    def matches(self, name: str, memory_mib: int) -> bool:
        if self.model == "ANY":
            return True
        words = set(re.split(r"[\s\-_]+", name.upper()))
        if not words.intersection(MODELS[self.model]):
            return False
        low, high = _SIZES.get(self.model, (0, 1 << 30))
        return low <= memory_mib < high

    def __str__(self) -> str:
        model = "any" if self.model == "ANY" else self.model
        return model if self.count == 1 else f"{model}:{self.count}"


def parse_gpu(value: Any) -> GpuRequest:
    """One GPU request from Modal's string form; ValueError says what to write."""
    if not isinstance(value, str):
        raise ValueError(f"gpu={value!r} is not a GPU type: write {EXAMPLES} "
                         "(modal.gpu.* objects are deprecated in Modal too)")
    m = _FORM.match(value.strip())
    model = m.group(1).upper() if m else ""
    if not m or model not in MODELS:
        raise ValueError(f"gpu={value!r} is not a GPU type: write {EXAMPLES} (known models: "
                         f"{', '.join(k for k in MODELS if k != 'ANY')}, any)")
    count = int(m.group(3)) if m.group(3) else 1
    if not 1 <= count <= MAX_GPUS:
        raise ValueError(f"gpu={value!r}: the count after ':' must be 1 to {MAX_GPUS}")
    return GpuRequest(model, count)


def parse_gpus(value: Any) -> list[GpuRequest]:
    """A request or a list of fallbacks (tried in order); [] for None."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError("gpu=[] lists no GPU type: leave gpu unset for none")
    return [parse_gpu(v) for v in items]
