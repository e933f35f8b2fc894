#!/usr/bin/env bash
# The real-GPU check (docs/gpu.md): one script for a GPU machine that reaches no network.
#
#   here, with a network:  bash scripts/gpu-check.sh prepare
#       puts the runsc package and the pure-Python wheels the runtime layer needs into
#       .gpu-carry/ (ignored by git; ~7.5 MB)
#   on the GPU machine, as root, from the repo root, with .gpu-carry carried along:
#       bash scripts/gpu-check.sh            (writes gpu-check.log under $OUT or /tmp)
#
# It records the host (kernel, driver, GPUs), the runsc and the drivers its nvproxy
# supports, then runs scripts/gpu_check.py: the project's own runtime boots a gVisor
# sandbox with a GPU through nvproxy and runs nvidia-smi, a CUDA program and torch in it,
# or prints the exact refusal. When the refusal is an unsupported driver, it also tries,
# as a labelled experiment, nvproxy with the ABI of the newest driver this runsc knows.
set -u
CARRY=.gpu-carry

if [ "${1:-}" = prepare ]; then
    mkdir -p "$CARRY"
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
    deb=$(ls /var/cache/apt/archives/runsc_0.0~2024*_amd64.deb 2>/dev/null | tail -1)
    if [ -n "$deb" ]; then cp "$deb" "$CARRY/"; else (cd "$CARRY" && apt-get download runsc/trixie); fi
    python3 -m pip download -q --no-deps -d "$CARRY" dnspython nvidia-ml-py
    ls -la "$CARRY"
    exit 0
fi

out=${OUT:-/tmp}
exec > >(tee "$out/gpu-check.log") 2>&1
echo "== host: $(uname -r); $(. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME")"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,mig.mode.current --format=csv || true
ls -l /dev/nvidia* || true
deb=$(ls "$CARRY"/runsc_*.deb 2>/dev/null | tail -1)
if [ -n "$deb" ]; then
    rm -rf /tmp/runsc-root && dpkg-deb -x "$deb" /tmp/runsc-root 2>/dev/null \
        || (mkdir -p /tmp/runsc-root && cd /tmp/runsc-root && ar p "$OLDPWD/$deb" data.tar.xz | tar xJ)
    export SBX_RUNSC=/tmp/runsc-root/usr/bin/runsc
else
    export SBX_RUNSC=$(command -v runsc)
fi
echo "== runsc: $SBX_RUNSC: $("$SBX_RUNSC" --version 2>&1 | head -1)"
echo "== nvproxy supports: $("$SBX_RUNSC" nvproxy list-supported-drivers 2>&1 | tr '\n' ' ')"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sbx-site "$CARRY"/*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/sbx-site PYTHONUNBUFFERED=1
timeout 300 python3 scripts/gpu_check.py
rc=$?
echo "== gpu_check.py exit $rc"
if [ $rc = 3 ]; then
    newest=$("$SBX_RUNSC" nvproxy list-supported-drivers 2>/dev/null | sort -V | tail -1)
    echo "== experiment: the same with --nvproxy-driver-version=$newest"
    timeout 200 python3 scripts/gpu_check.py --force-abi="$newest"
    echo "== experiment exit $?"
fi
exit $rc
