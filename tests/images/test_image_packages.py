"""Package steps with real package registries (PyPI, Debian's mirror), through the build
sandboxes' egress, and a second Python from another Debian release. These reach the
registries this machine is allowed to use; nothing else."""

from __future__ import annotations

import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("server")]


def sh(sb, script):
    p = sb.exec("sh", "-c", script)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


def test_pip_install_requests_and_uv():
    img = (sbx.Image.debian_slim().pip_install("requests==2.32.3")
           .uv_pip_install("six==1.16.0"))
    img.build()
    sb = sbx.Sandbox.create(image=img)
    try:
        code, out, err = sh(sb, "python3 -c 'import requests, six; print(requests.__version__, six.__version__)'")
        assert (code, out) == (0, "2.32.3 1.16.0\n"), err
        # the build-time CA settings are not part of the image
        assert sh(sb, 'echo "[$PIP_CERT]"')[1] == "[]\n"
    finally:
        sb.terminate()


def test_pip_install_of_a_missing_package_fails_with_pips_message():
    with pytest.raises(sbx.ImageBuildError, match="No matching distribution"):
        sbx.Image.debian_slim().pip_install("sbx-this-package-does-not-exist-4242").build()


def test_apt_install():
    img = sbx.Image.debian_slim().apt_install("jq")
    sb = sbx.Sandbox.create(image=img)
    try:
        code, out, _ = sh(sb, "echo '{\"a\": 41}' | jq '.a + 1'")
        assert (code, out) == (0, "42\n")
        # apt's lists are not left in the layer
        assert sh(sb, "ls /var/lib/apt/lists | grep -c Packages || true")[1] == "0\n"
    finally:
        sb.terminate()


def test_option_injection_in_package_names_is_refused():
    with pytest.raises(sbx.ImageBuildError, match="not a package name"):
        sbx.Image.debian_slim().apt_install("--allow-unauthenticated").build()


def test_debian_slim_python_313():
    img = sbx.Image.debian_slim(python_version="3.13").run_commands("python3 --version > /v")
    sb = sbx.Sandbox.create(image=img)
    try:
        code, out, _ = sh(sb, "cat /v; python3 -c 'import sys; print(sys.version_info[:2])'")
        assert code == 0 and out.startswith("Python 3.13") and "(3, 13)" in out
    finally:
        sb.terminate()
