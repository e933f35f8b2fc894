"""An app stopped while its containers boot, run and stop. Its module imports slowly in a
container (BOOT_DELAY_S), so a stop can land while a container boots."""

from __future__ import annotations

import time

import sandbox_service as modal

app = modal.App("fn-stop")

BOOT_DELAY_S = 2.0
if not modal.is_local():
    time.sleep(BOOT_DELAY_S)


@app.function(max_containers=2)
def hang(seconds: float):
    time.sleep(seconds)
    return seconds


@app.cls(max_containers=2)
class SlowExit:
    """Its @exit takes a while, so stopping its containers takes a while."""

    @modal.method()
    def hold(self, seconds: float):
        time.sleep(seconds)
        return seconds

    @modal.exit()
    def down(self):
        time.sleep(4)
