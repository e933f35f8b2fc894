"""Test helper (not a test module): a real docker-registry (distribution 2.8) on loopback,
and images built with umoci and pushed with skopeo, for the registry-pull tests."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

TOOL_TIMEOUT_S = 60
_BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "env", "id", "sleep")


class Registry:
    """A running registry; `host` is "127.0.0.1:PORT"."""

    def __init__(self, proc: subprocess.Popen, host: str, workdir: str, *,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None):
        self.proc, self.host, self.workdir = proc, host, workdir
        self.username, self.password, self.ca_file = username, password, ca_file

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], cwd: str | None = None) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                         timeout=TOOL_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def _make_cert(workdir: str) -> tuple[str, str]:
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
          "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
          "-addext", "subjectAltName=IP:127.0.0.1"])
    return cert, key


def start_registry(workdir: str, *, auth: bool = False, tls: bool = False) -> Registry:
    """Start docker-registry on a free loopback port; auth implies tls (distribution
    refuses basic auth over plain http)."""
    tls = tls or auth
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
             f"    rootdirectory: {os.path.join(workdir, 'data')}", "http:",
             f"  addr: 127.0.0.1:{port}", f"  secret: {secrets.token_hex(16)}"]
    cert = None
    if tls:
        cert, key = _make_cert(workdir)
        lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
    username = password = None
    if auth:
        username, password = "sbx-test", secrets.token_urlsafe(18)
        htpasswd = os.path.join(workdir, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write(_run(["htpasswd", "-Bbn", username, password]).strip() + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: sbx-test", f"    path: {htpasswd}"]
    config = os.path.join(workdir, "config.yml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, "registry.log"), "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", config], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    reg = Registry(proc, f"127.0.0.1:{port}", workdir, username=username, password=password,
                   ca_file=cert)
    try:
        _wait_up(reg, auth)
    except BaseException:
        reg.stop()
        raise
    return reg


def _wait_up(reg: Registry, auth: bool, timeout_s: float = 15) -> None:
    scheme = "https" if reg.ca_file else "http"
    ctx = ssl.create_default_context(cafile=reg.ca_file) if reg.ca_file else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{scheme}://{reg.host}/v2/", timeout=2, context=ctx):
                return
        except urllib.error.HTTPError as e:
            if e.code == 401 and auth:
                return
        except OSError:
            pass
        time.sleep(0.05)
    with open(os.path.join(reg.workdir, "registry.log"), errors="replace") as f:
        tail = f.read()[-2000:]
    raise RuntimeError(f"docker-registry on {reg.host} did not come up: {tail}")


def push_rootfs(registry: Registry, rootfs: str, repo_tag: str, *,
                env: dict[str, str] | None = None, entrypoint: list[str] | None = None,
                cmd: list[str] | None = None, workdir: str | None = None,
                user: str | None = None, layers: list[str] | None = None) -> str:
    """Build an OCI image from `rootfs` (plus one layer per directory in `layers`, where a
    file `.wh.NAME` deletes NAME) and push it as HOST/REPO_TAG; returns the manifest digest."""
    with tempfile.TemporaryDirectory(prefix="sbx-push-") as tmp:
        image = "oci:latest"   # relative to cwd=tmp: no ':' from the path in the reference
        _run(["umoci", "init", "--layout", "oci"], cwd=tmp)
        _run(["umoci", "new", "--image", image], cwd=tmp)
        for layer in [rootfs, *(layers or [])]:
            _add_layer(tmp, image, layer)
        _run(["umoci", "config", "--image", image, *_config_args(env, entrypoint, cmd, workdir, user)],
             cwd=tmp)
        argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--digestfile", "digest"]
        argv += ["--dest-tls-verify=false"]
        if registry.auth:
            argv += ["--dest-creds", f"{registry.username}:{registry.password}"]
        _run([*argv, f"oci:{image}", f"docker://{registry.host}/{repo_tag}"], cwd=tmp)
        with open(os.path.join(tmp, "digest")) as f:
            return f.read().strip()


def push_multiarch(registry: Registry, rootfs_by_arch: dict[str, str], repo_tag: str) -> str:
    """Push an OCI image index with one linux/ARCH image per entry; returns the index digest."""
    with tempfile.TemporaryDirectory(prefix="sbx-push-") as tmp:
        _run(["umoci", "init", "--layout", "oci"], cwd=tmp)
        for arch, rootfs in rootfs_by_arch.items():
            _run(["umoci", "new", "--image", f"oci:{arch}"], cwd=tmp)
            _add_layer(tmp, f"oci:{arch}", rootfs)
            _run(["umoci", "config", "--image", f"oci:{arch}", "--os", "linux",
                  "--architecture", arch], cwd=tmp)
        index_path = os.path.join(tmp, "oci", "index.json")
        with open(index_path) as f:
            top = json.load(f)
        tags = {d["annotations"]["org.opencontainers.image.ref.name"]: d for d in top["manifests"]}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{**{k: tags[a][k] for k in ("mediaType", "digest", "size")},
                                "platform": {"architecture": a, "os": "linux"}}
                               for a in rootfs_by_arch]}
        raw = json.dumps(index).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        with open(os.path.join(tmp, "oci", "blobs", "sha256", digest[7:]), "wb") as f:
            f.write(raw)
        top["manifests"].append({"mediaType": index["mediaType"], "digest": digest,
                                 "size": len(raw), "annotations":
                                 {"org.opencontainers.image.ref.name": "multi"}})
        with open(index_path, "w") as f:
            json.dump(top, f)
        _run(["skopeo", "--insecure-policy", "copy", "--quiet", "--all", "--dest-tls-verify=false",
              *(["--dest-creds", f"{registry.username}:{registry.password}"] if registry.auth else []),
              "oci:oci:multi", f"docker://{registry.host}/{repo_tag}"], cwd=tmp)
        return digest


def _config_args(env: dict[str, str] | None, entrypoint: list[str] | None,
                 cmd: list[str] | None, workdir: str | None, user: str | None) -> list[str]:
    args = [f"--config.env={k}={v}" for k, v in (env or {}).items()]
    args += [f"--config.entrypoint={a}" for a in entrypoint or []]
    args += [f"--config.cmd={a}" for a in cmd or []]
    if workdir:
        args.append(f"--config.workingdir={workdir}")
    if user:
        args.append(f"--config.user={user}")
    return args


def _add_layer(tmp: str, image: str, layer: str) -> None:
    """One more layer: unpack, copy `layer` over it (cp -a keeps device nodes and setuid
    bits; a file ".wh.NAME" deletes NAME), repack (umoci writes the deletions as whiteouts).
    (Not `umoci insert`: 0.4.7 writes a layer tar without its end-of-archive blocks.)"""
    _run(["umoci", "unpack", "--image", image, "bundle"], cwd=tmp)
    root = os.path.join(tmp, "bundle", "rootfs")
    _run(["cp", "-a", "--", os.path.join(os.path.abspath(layer), "."), root])
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".wh."):
                os.unlink(os.path.join(dirpath, name))
                victim = os.path.join(dirpath, name[len(".wh."):])
                if os.path.isdir(victim) and not os.path.islink(victim):
                    shutil.rmtree(victim)
                elif os.path.lexists(victim):
                    os.unlink(victim)
    _run(["umoci", "repack", "--image", image, "bundle"], cwd=tmp)
    shutil.rmtree(os.path.join(tmp, "bundle"))


def busybox_rootfs(dest: str) -> str:
    """A tiny rootfs: static busybox with a few applet links, and root plus "app" (1000)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    os.makedirs(os.path.join(dest, "bin"), exist_ok=True)
    os.makedirs(os.path.join(dest, "etc"), exist_ok=True)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    for applet in _BUSYBOX_APPLETS:
        os.symlink("busybox", os.path.join(dest, "bin", applet))
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\napp:x:1000:\n")
    return dest
