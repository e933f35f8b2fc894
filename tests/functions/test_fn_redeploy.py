"""A redeploy while calls are in flight: the calls already running or queued on the old
version finish there (nothing dropped), new calls, even through a handle looked up before
the redeploy, run the new code."""

from __future__ import annotations

import importlib.util
import sys
import uuid

import fntest

import sandbox_service as modal

SOURCE = '''
import time
import sandbox_service as modal

app = modal.App("fn-redeploy")
VERSION = {version}


@app.function(max_containers=1, timeout=60)
def which(x):
    time.sleep(1.5)
    return (VERSION, x)
'''


def _load(path, name: str, version: int):
    path.write_text(SOURCE.format(version=version))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_redeploy_during_calls(server, tmp_path):
    modname = f"fnapp_redeploy_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{modname}.py"
    sys.path.insert(0, str(tmp_path))
    name = f"fn-redeploy-{uuid.uuid4().hex[:8]}"
    v1 = _load(path, modname, 1)
    v1.app.deploy(name=name)
    app_id = v1.app.app_id
    try:
        f = modal.Function.from_name(name, "which")
        running, queued = f.spawn("a"), f.spawn("b")  # one container: a runs, b waits
        fntest.wait_for(lambda: fntest.function_info(f.object_id)["running"] >= 1, 60,
                        "the first input to run")
        v2 = _load(path, modname, 2)
        v2.app.deploy(name=name)
        after = f.spawn("c")  # the old handle: forwarded to the new version
        assert running.get(timeout=120) == (1, "a")
        assert queued.get(timeout=120) == (1, "b")
        assert after.get(timeout=120) == (2, "c")
        assert modal.Function.from_name(name, "which").remote("d") == (2, "d")
        # the old version's containers go once its calls are done
        fntest.wait_for(lambda: len(fntest.containers(app_id)) <= 1, 60,
                        "the old version's container to go")
    finally:
        sys.path.remove(str(tmp_path))
        fntest.stop_app(app_id)
    fntest.wait_for(lambda: not fntest.live_function_sandboxes(app_id), 60,
                    "the app's containers to go")
