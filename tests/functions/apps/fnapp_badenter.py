"""A class whose @modal.enter() raises in its container."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-badenter")


class EnterFailed(Exception):
    pass


@app.cls(max_containers=1)
class BadEnter:
    @modal.enter()
    def load(self):
        raise EnterFailed("enter could not load the model")

    @modal.method()
    def predict(self, x):
        return x
