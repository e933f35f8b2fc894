"""GPU functions (Modal's grammar: one model, a count, a list of fallbacks) for the
real-server GPU tests: on a host without a GPU every call is refused, saying why."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-gpu")


@app.function(gpu=["H100", "A100-80GB:2", "any"], max_containers=1)
def which_gpu() -> str:
    import subprocess

    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout


@app.cls(gpu="any", max_containers=1)
class Model:
    @modal.method()
    def device(self) -> str:
        import os

        return os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
