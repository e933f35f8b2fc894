"""Image.run_function through the real server: the function runs once in a build container
of the image (its module imported there, with the SDK), what it writes is the next layer,
and the layer is cached by the function's own source and arguments (an edit elsewhere in
the file does not rerun it); a failing function fails the build with its traceback."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

import sandbox_service as modal
from sandbox_service.exception import ImageBuildError, InvalidRequestError

pytestmark = pytest.mark.timeout(600)

MODULE = '''
import os

import sandbox_service as modal

app = modal.App("fn-run-function")
assets = modal.Image.debian_slim().add_local_dir("only-on-my-laptop", "/assets")


def bake(word, times=1):
    import json
    import sys
    with open("/baked.json", "w") as f:
        json.dump({{"word": word * times, "secret": os.environ.get("BAKE_TOKEN"),
                   "python": sys.version_info[:2], "name": __name__}}, f)


def broken():
    raise RuntimeError("the download failed")
{extra}
'''


@pytest.fixture(autouse=True)
def _in_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as a user runs from the project's directory


def _load(tmp_path, name, extra=""):
    (tmp_path / "only-on-my-laptop").mkdir(exist_ok=True)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE.format(extra=extra)))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def _read(image, path="/baked.json"):
    sb = modal.Sandbox.create(image=image, timeout=60)
    try:
        p = sb.exec("cat", path)
        return p.stdout.read(), p.wait()
    finally:
        sb.terminate()


def test_run_function_bakes_a_layer_once(server, tmp_path):
    import json

    mod = _load(tmp_path, "bakemod")
    secret = modal.Secret.from_dict({"BAKE_TOKEN": "s3cr3t"})
    image = modal.Image.debian_slim().run_function(mod.bake, args=("ab",), kwargs={"times": 2},
                                                   secrets=[secret])
    image.build()
    out, rc = _read(image)
    assert rc == 0
    baked = json.loads(out)
    # the module was imported by its own name, the arguments and the secret arrived
    assert baked == {"word": "abab", "secret": "s3cr3t", "python": [3, 11], "name": "bakemod"}
    first = image.object_id

    # an edit elsewhere in the file keeps the layer; an edit of the function reruns it
    mod2 = _load(tmp_path, "bakemod", extra="\n\ndef unrelated():\n    return 1\n")
    same = modal.Image.debian_slim().run_function(mod2.bake, args=("ab",), kwargs={"times": 2},
                                                  secrets=[secret]).build()
    assert same.object_id == first
    other_args = modal.Image.debian_slim().run_function(mod2.bake, args=("cd",),
                                                        secrets=[secret]).build()
    assert other_args.object_id != first
    assert json.loads(_read(other_args)[0])["word"] == "cd"


def test_a_failing_function_fails_the_build_with_its_traceback(server, tmp_path):
    mod = _load(tmp_path, "brokenbake")
    with pytest.raises(ImageBuildError) as ei:
        modal.Image.debian_slim().run_function(mod.broken).build()
    assert "the download failed" in str(ei.value)
    assert "RuntimeError" in str(ei.value)


def test_run_function_refuses_what_it_cannot_run(server, tmp_path):
    def local_fn():
        pass
    with pytest.raises(InvalidRequestError, match="global scope"):
        modal.Image.debian_slim().run_function(local_fn)
    mod = _load(tmp_path, "volbake")
    with pytest.raises(InvalidRequestError, match="volumes"):
        modal.Image.debian_slim().run_function(mod.bake, volumes={"/data": object()})
