#!/usr/bin/env bash
# Fetch pydantic_core wheels (the SDK's one compiled dependency) for the Pythons that
# function images may have besides the server's own (Debian 12: 3.11, Debian 13: 3.13;
# 3.12 for registry images), at the version installed in the venv, into $SBX_WHEEL_CACHE
# (default /var/cache/sandbox-service/wheels). The server adds them to the SDK it mounts
# into function containers, so code in a 3.13 image can call the service too.
# Usage: scripts/fetch-sdk-wheels.sh [python]   (the venv's python; default .venv/bin/python)
# Offline, or with no such wheel on the index, it warns and exits 0: only calls to the
# service from those images then fail, with an error that says so.
set -uo pipefail
PY="${1:-.venv/bin/python}"
DEST="${SBX_WHEEL_CACHE:-/var/cache/sandbox-service/wheels}"
version="$("$PY" -c 'import importlib.metadata as m; print(m.version("pydantic-core"))')" || exit 0
mkdir -p "$DEST" || exit 0
for pyver in 3.11 3.12 3.13; do
    tag="cp${pyver/./}"
    if ls "$DEST"/pydantic_core-"$version"-"$tag"-*manylinux*x86_64*.whl >/dev/null 2>&1; then
        continue
    fi
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
        --implementation cp --abi "$tag" --platform manylinux_2_17_x86_64 \
        -d "$DEST" "pydantic-core==$version" >/dev/null 2>&1 \
        || echo "fetch-sdk-wheels: no pydantic-core $version wheel for Python $pyver (offline?)" >&2
done
exit 0
