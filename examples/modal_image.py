"""A Modal-style program using images: build an environment in Python, run code in it,
snapshot a sandbox and boot another from the snapshot. Change the import to `modal` and
it runs on Modal too (Modal calls `Image.pip_install` the same way).

    python examples/modal_image.py
"""

import os
import tempfile

import sandbox_service as modal

app = modal.App.lookup("image-example", create_if_missing=True)

workdir = tempfile.mkdtemp()
with open(os.path.join(workdir, "analyze.py"), "w") as f:
    f.write("import statistics, sys\n"
            "nums = [float(x) for x in sys.argv[1:]]\n"
            "print(f'mean={statistics.mean(nums):.2f} stdev={statistics.stdev(nums):.2f}')\n")

image = (
    modal.Image.debian_slim()
    .run_commands("useradd -m analyst")
    .env({"REPORT_TITLE": "weekly numbers"})
    .workdir("/home/analyst/app")
    .add_local_dir(workdir, "/home/analyst/app")
)

with modal.enable_output():  # shows the build log
    sb = modal.Sandbox.create(app=app, image=image, timeout=300)

p = sb.exec("sh", "-c", 'echo "$REPORT_TITLE"; python3 analyze.py 3 5 8 13')
print(p.stdout.read(), end="")
p.wait()

# keep what this sandbox produced as an image, and start a new sandbox from it
sb.exec("sh", "-c", "python3 analyze.py 1 2 3 > result.txt").wait()
snapshot = sb.snapshot_filesystem()
sb.terminate()

sb2 = modal.Sandbox.create(app=app, image=snapshot, timeout=300)
p = sb2.exec("cat", "result.txt")
print("from the snapshot:", p.stdout.read(), end="")
sb2.terminate()
