"""The app of tests/functions/test_fn_deploy.py, deployed under a unique name and called
by name (Function.from_name, Cls.from_name), from outside and from inside a container."""

from __future__ import annotations

import sandbox_service as modal

app = modal.App("fn-deploy")


@app.function(max_containers=1)
def triple(x):
    return 3 * x


@app.function(max_containers=1)
def items(n):
    yield from range(n)


@app.function(max_containers=1)
def via_name(app_name, x):
    """Calls another function of the deployed app by name, from inside its container."""
    return modal.Function.from_name(app_name, "triple").remote(x) + 1


@app.cls(max_containers=1)
class Counter:
    start: int = modal.parameter(default=0)

    @modal.enter()
    def up(self):
        self.n = self.start

    @modal.method()
    def incr(self, by=1):
        self.n += by
        return self.n

    @modal.exit()
    def down(self):
        print(f"COUNTER-EXIT start={self.start} n={self.n}", flush=True)
