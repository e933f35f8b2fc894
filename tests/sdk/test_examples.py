"""The examples run unchanged against a real server, as a user would run them."""

import os
import subprocess
import sys

from sbxtest import REPO


def test_modal_style_example(server):
    env = server.env()
    env["SBX_TOKEN"] = server.token
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", "modal_sandbox.py")],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "hello from linux\n" in out
    assert "stderr: oops\n" in out
    assert "exit code: 0\n" in out
    assert "written through sb.open\n" in out
    assert out.count("streamed: tick") == 3
    assert "returncode after terminate: 137\n" in out
    assert "main command printed: 45\n" in out


def test_modal_style_image_example(server):
    env = server.env()
    env["SBX_TOKEN"] = server.token
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", "modal_image.py")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["weekly numbers", "mean=7.25 stdev=4.35",
                                     "from the snapshot: mean=2.00 stdev=1.00"]
    assert "add " in r.stderr  # the build log, shown by enable_output()


def test_modal_functions_example_with_sbx_run(server):
    """`sbx run` of a Modal functions program, as `modal run` would run it."""
    env = server.env()
    env["SBX_TOKEN"] = server.token
    r = subprocess.run([sys.executable, "-m", "sandbox_service.cli", "run",
                        os.path.join(REPO, "examples", "modal_functions.py")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ("local: 1000000", "remote: 1000000", "sum of squares: 2646700",
                 "spawned: 144", "hi agent!", "letters: modal", "flaky: ok after a retry",
                 "remote error: TypeError"):
        assert line + "\n" in out, (line, out)
    assert "hello 0\n" in out and "world 1\n" in r.stderr  # the containers' output streams here
    with server.api() as api:
        apps = api.get("/v1/apps").json()["apps"]
        assert apps and all(a["state"] != "ephemeral" for a in apps)  # the run's app stopped
        assert api.get("/v1/containers").json()["containers"] == []


def test_agent_inference_example_with_sbx_run(server):
    """The agent + inference endpoint example: a real model (VADER, from its PyPI wheel)
    behind an @app.cls web endpoint, loaded once, called over HTTP; code run in a sandbox."""
    env = server.env()
    env["SBX_TOKEN"] = server.token
    r = subprocess.run([sys.executable, "-m", "sandbox_service.cli", "run",
                        os.path.join(REPO, "examples", "agent_inference.py")],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert f"endpoint: {server.url}/web/agent-inference-sentiment-score-dev/" in out, out
    lines = {line.split("  ", 1)[1]: float(line.split()[0]) for line in out.splitlines()
             if line[:1] in "+-" and "  " in line}
    assert lines["The sandbox booted fast and the docs were great!"] > 0.5
    assert lines["Setup was confusing and the error messages were useless."] < -0.3
    assert "model loads: 1\n" in out
    assert "sandbox: mean " in out and "positive 2/4" in out, out
