"""An app whose module raises while its container imports it (here, where the test imports
it, it loads fine), and a class whose @enter raises."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-broken")

if not modal.is_local():
    raise RuntimeError("boom at import: the module cannot load in its container")


@app.function(max_containers=1)
def never_runs(x):
    return x
