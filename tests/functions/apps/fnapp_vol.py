"""The app of tests/functions/test_volumes.py: functions that share a Volume of their
owner, mounted at /data (and read-only at /ro)."""

from __future__ import annotations

import errno
import io
import os

import sandbox_service as modal

app = modal.App("fn-vol")
vol = modal.Volume.from_name("fn-vol-test", create_if_missing=True)


@app.function(volumes={"/data": vol}, max_containers=4)
def write(path, text):
    full = os.path.join("/data", path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    vol.commit()
    return os.environ.get("MODAL_TASK_ID") or os.getpid()


@app.function(volumes={"/data": vol}, max_containers=4)
def read(path):
    vol.reload()
    with open(os.path.join("/data", path)) as f:
        return f.read()


@app.function(volumes={"/data": vol}, max_containers=4, timeout=120)
def writer(worker, n):
    """Concurrent writers: each its own file, line by line, and one line each in a log."""
    with open(f"/data/own-{worker}.txt", "w") as f:
        for i in range(n):
            f.write(f"{worker}:{i}\n")
            f.flush()
    os.makedirs("/data/logs", exist_ok=True)
    with open(f"/data/logs/{worker}.done", "w") as f:
        f.write("done")
    vol.commit()
    return sorted(os.listdir("/data/logs"))


@app.function(volumes={"/ro": vol.read_only()})
def write_read_only():
    try:
        with open("/ro/nope.txt", "w") as f:
            f.write("x")
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)), sorted(os.listdir("/ro"))
    return "written", []


@app.function(volumes={"/data": vol}, timeout=120)
def fill():
    """Write until the principal's quota stops it; the container lives on."""
    written, err = 0, None
    try:
        with open("/data/fill.bin", "wb") as f:
            while True:
                f.write(b"\0" * (1 << 20))
                written += 1 << 20
                f.flush()
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    os.remove("/data/fill.bin")
    with open("/data/after-fill.txt", "w") as f:
        f.write("still writable")
    return err, written


@app.function()
def upload_from_inside(name):
    """The API from inside a container (no mount): upload, list, read back."""
    v = modal.Volume.from_name(name)
    with v.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"from inside"), "inside/hello.txt")
    return [e.path for e in v.listdir("/inside")], b"".join(v.read_file("inside/hello.txt"))


@app.cls(volumes={"/data": vol})
class Reader:
    @modal.enter()
    def load(self):
        self.names = sorted(os.listdir("/data"))  # a model loaded from a volume, once

    @modal.method()
    def names_at_start(self):
        return self.names
