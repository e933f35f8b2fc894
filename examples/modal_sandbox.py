"""A Modal sandbox program; only the import line differs from Modal's docs.

    sbx serve &            # once
    python examples/modal_sandbox.py
"""

import sandbox_service as modal

app = modal.App.lookup("example-app", create_if_missing=True)

with modal.enable_output():
    sb = modal.Sandbox.create(app=app, image=modal.Image.debian_slim(), timeout=120)

p = sb.exec("python3", "-c", "import sys; print('hello from', sys.platform); print('oops', file=sys.stderr)")
print(p.stdout.read(), end="")
print("stderr:", p.stderr.read(), end="")
print("exit code:", p.wait())

with sb.open("/tmp/notes.txt", "w") as f:
    f.write("written through sb.open\n")
print(sb.filesystem.read_text("/tmp/notes.txt"), end="")

p = sb.exec("bash", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done", bufsize=1)
for line in p.stdout:
    print("streamed:", line, end="")
p.wait()

sb.terminate()
print("returncode after terminate:", sb.returncode)

# A sandbox that runs one command and ends with it
sb = modal.Sandbox.create("python3", "-c", "print(sum(range(10)))", app=app)
sb.wait()
print("main command printed:", sb.stdout.read(), end="")
