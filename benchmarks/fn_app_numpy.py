"""A function whose module imports numpy at top level (benchmarks/bench_functions.py's
cold start with a heavy import). Shipped into its container like fn_app.py.

The host's venv need not have numpy: the import is tried here too, and the function checks
that the container really had it. Two apps, so that running one builds only its image:
`app` (pip_install("numpy"), the Modal way) and `apt_app` (Debian's python3-numpy, the
fallback when pip cannot build).
"""

import sandbox_service as modal

try:  # top level: the container imports numpy when the runner imports this module
    import numpy
except ImportError:  # on the host (the benchmark's venv has no numpy)
    numpy = None

PIP_IMAGE = modal.Image.debian_slim().pip_install("numpy")
APT_IMAGE = modal.Image.debian_slim().apt_install("python3-numpy")
app = modal.App("bench-fn-numpy")
apt_app = modal.App("bench-fn-numpy-apt")


def _version():
    if numpy is None:
        raise RuntimeError("numpy is not importable in the function's container")
    return numpy.__version__


@app.function(image=PIP_IMAGE, max_containers=1)
def np_version(x):
    return _version()


@apt_app.function(image=APT_IMAGE, max_containers=1)
def np_version_apt(x):
    return _version()
