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
