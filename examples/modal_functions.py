"""A Modal functions program; only the import line differs from Modal's own examples.

    sbx serve &                               # once
    sbx run examples/modal_functions.py       # like `modal run`
    sbx deploy examples/modal_functions.py    # like `modal deploy`, then:
    python -c "import sandbox_service as modal; print(modal.Function.from_name('example-functions', 'f').remote(3))"
"""

import sys

import sandbox_service as modal

app = modal.App("example-functions")


@app.function()
def f(i):
    if i % 2 == 0:
        print("hello", i)
    else:
        print("world", i, file=sys.stderr)
    return i * i


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.1))
def flaky(path: str) -> str:
    import os

    if not os.path.exists(path):  # fails once per container, then works
        open(path, "w").close()
        raise RuntimeError("first try fails")
    return "ok after a retry"


@app.cls(scaledown_window=5)
class Greeter:
    greeting: str = modal.parameter(default="hello")

    @modal.enter()
    def setup(self):
        self.suffix = "!"  # runs once per container

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting} {name}{self.suffix}"

    @modal.method()
    def letters(self, word: str):
        yield from word


@app.local_entrypoint()
def main():
    print("local:", f.local(1000))
    print("remote:", f.remote(1000))
    total = 0
    for ret in f.map(range(200)):
        total += ret
    print("sum of squares:", total)
    call = f.spawn(12)
    print("spawned:", call.get())
    print(Greeter(greeting="hi").greet.remote("agent"))
    print("letters:", "".join(Greeter().letters.remote_gen("modal")))
    print("flaky:", flaky.remote("/tmp/flaky-marker"))
    try:
        f.remote("not a number")
    except TypeError as e:
        print("remote error:", type(e).__name__)
