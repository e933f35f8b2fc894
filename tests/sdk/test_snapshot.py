"""sb.snapshot_filesystem(): a running sandbox's writes become an Image new sandboxes boot
from; the sandbox keeps running; chains of snapshots; the image's config carries over."""

from __future__ import annotations

import uuid

import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]


def sh(sb, script):
    p = sb.exec("sh", "-c", script)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


def test_snapshot_round_trip_and_chain(api):
    marker = uuid.uuid4().hex
    sb = sbx.Sandbox.create()
    try:
        code, _, err = sh(sb, f"mkdir -p /work/deep && echo {marker} > /work/deep/f && "
                              "rm -rf /usr/share/doc && ln -s /work/deep/f /link && "
                              "chmod 600 /etc/hostname && pip --version > /work/pipv")
        assert code == 0, err
        img = sb.snapshot_filesystem()
        assert img.object_id.startswith("im-")
        # the original keeps running and keeps its own state
        assert sh(sb, "cat /work/deep/f")[1] == marker + "\n"
        info = api.get(f"/v1/images/{img.object_id}").json()
        assert info["source"].startswith("snapshot:")
        sb2 = sbx.Sandbox.create(image=img)
        try:
            code, out, _ = sh(sb2, "cat /work/deep/f; readlink /link; test -e /usr/share/doc || "
                                   "echo NODOC; stat -c %a /etc/hostname")
            assert out.splitlines() == [marker, "/work/deep/f", "NODOC", "600"]
            # a snapshot of a snapshot sandbox stacks another layer
            sh(sb2, "echo second > /work/second && rm /work/deep/f")
            img2 = sb2.snapshot_filesystem()
            info2 = api.get(f"/v1/images/{img2.object_id}").json()
            assert info2["layers"] == info["layers"] + 1
        finally:
            sb2.terminate()
        sb3 = sbx.Sandbox.create(image=img2)
        try:
            assert sh(sb3, "cat /work/second; test -e /work/deep/f || echo GONE")[1] == "second\nGONE\n"
        finally:
            sb3.terminate()
    finally:
        sb.terminate()
    # the base image itself was never touched
    base = sbx.Sandbox.create()
    try:
        assert sh(base, "test -d /usr/share/doc && test ! -e /work && echo CLEAN")[1] == "CLEAN\n"
    finally:
        base.terminate()


def test_snapshot_keeps_the_image_config():
    img = sbx.Image.debian_slim().env({"SNAP_ENV": "kept"}).workdir("/srv")
    sb = sbx.Sandbox.create(image=img)
    try:
        sh(sb, "echo data > /srv/data")
        snap = sb.snapshot_filesystem()
    finally:
        sb.terminate()
    sb2 = sbx.Sandbox.create(image=snap)
    try:
        assert sh(sb2, 'echo "$SNAP_ENV"; pwd; cat data')[1] == "kept\n/srv\ndata\n"
    finally:
        sb2.terminate()


def test_snapshot_of_a_finished_sandbox_is_a_clear_error():
    sb = sbx.Sandbox.create()
    sb.terminate()
    with pytest.raises(sbx.SandboxError) as ei:
        sb.snapshot_filesystem()
    assert ei.value.code in ("sandbox_terminated", "conflict")
