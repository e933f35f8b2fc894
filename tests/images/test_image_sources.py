"""Image sources end to end: from_registry (a real docker-registry on loopback, with and
without credentials), from_dockerfile, dockerfile_commands and local files, each built by the
real server and checked inside a real sandbox booted from it."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time

import pytest
from registry import Registry, busybox_rootfs, push_rootfs, start_registry

import sandbox_service as sbx

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.usefixtures("server"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("skopeo", "umoci", "docker-registry")),
        reason="needs skopeo, umoci and docker-registry (apt-get install skopeo umoci "
               "docker-registry)"),
]

BB_ENV = {"FOO": "bar", "PATH": "/bin"}
BB_ENTRYPOINT = ["/bin/sh", "-c"]
BB_CMD = ["echo hello"]


def run(sb, *argv: str, **kw) -> tuple[int, str, str]:
    p = sb.exec(*argv, **kw)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


def sh(sb, script: str) -> str:
    code, out, err = run(sb, "sh", "-c", script)
    assert code == 0, (script, out, err)
    return out


class LogLines(logging.Handler):
    """Collects the build log the SDK streams (logger sandbox_service.image)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def build_logged(img: sbx.Image) -> tuple[sbx.Image, list[str]]:
    logger = logging.getLogger("sandbox_service.image")
    handler, old_level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        img.build()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return img, handler.lines


# ---- registries and pushed images -----------------------------------------------------------
@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(str(tmp_path_factory.mktemp("src-plain-registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(str(tmp_path_factory.mktemp("src-secured-registry")), auth=True,
                         tls=True)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def bb_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = busybox_rootfs(str(tmp_path_factory.mktemp("src-bb") / "rootfs"))
    os.mkdir(os.path.join(root, "work"))
    return root


@pytest.fixture(scope="module")
def bb_ref(plain: Registry, bb_root: str) -> str:
    push_rootfs(plain, bb_root, "busybox:1", env=BB_ENV, entrypoint=BB_ENTRYPOINT,
                cmd=BB_CMD, workdir="/work")
    return f"{plain.host}/busybox:1"


@pytest.fixture(scope="module")
def pybase_ref(server, plain: Registry) -> str:
    """The server's own base rootfs (Debian with python3) pushed to the registry."""
    roots = glob.glob(os.path.join(server.home, "images", "im-*", "rootfs"))
    assert roots, "the session server has no base image rootfs"
    push_rootfs(plain, roots[0], "pybase:1",
                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    return f"{plain.host}/pybase:1"


# ---- from_registry ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bb_image(bb_ref: str) -> sbx.Image:
    img = sbx.Image.from_registry(bb_ref).run_commands("echo hi > /hi.txt")
    img.build()
    return img


def test_from_registry_round_trip(server, bb_image: sbx.Image):
    assert bb_image.object_id.startswith("im-")
    with sbx.Sandbox.create(image=bb_image, timeout=300) as sb:
        assert run(sb, "cat", "/hi.txt") == (0, "hi\n", "")
        assert sh(sb, "echo $FOO; pwd") == "bar\n/work\n"
    with server.api() as c:
        r = c.get(f"/v1/images/{bb_image.object_id}")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["image_id"] == bb_image.object_id
    assert info["env"] == BB_ENV
    assert info["workdir"] == "/work"
    assert info["entrypoint"] == BB_ENTRYPOINT
    assert info["cmd"] == BB_CMD
    assert info["source"] == "registry"
    assert info["layers"] == 2
    assert info["python"] is None


def test_from_registry_rebuild_is_cached(bb_ref: str, bb_image: sbx.Image):
    again = sbx.Image.from_registry(bb_ref).run_commands("echo hi > /hi.txt")
    t0 = time.monotonic()
    _, lines = build_logged(again)
    assert again.object_id == bb_image.object_id
    assert any(line.strip() == "cached" for line in lines), lines
    assert not any(line.startswith("pulling ") for line in lines), lines
    assert time.monotonic() - t0 < 30


def test_from_registry_missing_workdir_is_created(plain: Registry, tmp_path):
    root = busybox_rootfs(str(tmp_path / "rootfs"))
    push_rootfs(plain, root, "nowork:1", env={"PATH": "/bin"}, workdir="/missing/dir")
    img = sbx.Image.from_registry(f"{plain.host}/nowork:1").run_commands("pwd > /built-in")
    img.build()
    with sbx.Sandbox.create(image=img, timeout=300) as sb:
        assert run(sb, "cat", "/built-in") == (0, "/missing/dir\n", "")
        assert sh(sb, "pwd") == "/missing/dir\n"


def test_from_registry_python_image_add_local_file(server, pybase_ref: str, tmp_path):
    local = tmp_path / "hello.txt"
    content = "from the client: " + os.urandom(8).hex() + "\n"
    local.write_text(content)
    img = sbx.Image.from_registry(pybase_ref).add_local_file(local, "/opt/data/hello.txt")
    img.build()
    with server.api() as c:
        info = c.get(f"/v1/images/{img.object_id}").json()
    assert info["python"], info
    assert info["source"] == "registry"
    with sbx.Sandbox.create(image=img, timeout=300) as sb:
        with sb.open("/opt/data/hello.txt") as f:
            assert f.read() == content
        assert sh(sb, "stat -c %a /opt/data/hello.txt") == "644\n"


# ---- credentials --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured_ref(secured: Registry, bb_root: str) -> str:
    push_rootfs(secured, bb_root, "private/bb:1", env={"PATH": "/bin", "SECURED": "yes"})
    return f"{secured.host}/private/bb:1"


def _full_log(server) -> str:
    return server.tail(n=1 << 30)


def test_registry_without_credentials_is_refused(server, secured: Registry, secured_ref: str):
    with pytest.raises(sbx.ImageBuildError) as ei:
        sbx.Image.from_registry(secured_ref).build()
    msg = str(ei.value)
    assert "credentials" in msg, msg
    assert secured.host in msg, msg
    assert secured.password not in msg


def test_registry_wrong_password_is_refused_and_not_shown(server, secured: Registry,
                                                          secured_ref: str):
    wrong = "wrong-" + os.urandom(12).hex()
    secret = sbx.Secret.from_dict({"REGISTRY_USERNAME": secured.username,
                                   "REGISTRY_PASSWORD": wrong})
    with pytest.raises(sbx.ImageBuildError) as ei:
        sbx.Image.from_registry(secured_ref, secret=secret).build()
    msg = str(ei.value)
    assert "refused the credentials" in msg, msg
    assert wrong not in msg and secured.password not in msg
    assert wrong not in _full_log(server)


def test_registry_with_credentials_builds(server, secured: Registry, secured_ref: str):
    secret = sbx.Secret.from_dict({"REGISTRY_USERNAME": secured.username,
                                   "REGISTRY_PASSWORD": secured.password})
    img = sbx.Image.from_registry(secured_ref, secret=secret).run_commands(
        "echo secured:$SECURED > /s.txt")
    img, lines = build_logged(img)
    assert img.object_id.startswith("im-")
    assert not any(secured.password in line for line in lines)
    with sbx.Sandbox.create(image=img, timeout=300) as sb:
        assert run(sb, "cat", "/s.txt") == (0, "secured:yes\n", "")
    assert secured.password not in _full_log(server)
    with server.api() as c:
        listed = c.get("/v1/images").text
        one = c.get(f"/v1/images/{img.object_id}").text
    assert secured.password not in listed and secured.password not in one


@pytest.mark.parametrize("ref", ["10.0.0.1:5000/x:1", "192.168.7.7:5000/team/app:2",
                                 "localhost:1/x", "[::1]:5000/x:1"])
def test_private_registry_is_refused(ref: str):
    t0 = time.monotonic()
    with pytest.raises(sbx.ImageBuildError) as ei:
        sbx.Image.from_registry(ref).build()
    msg = str(ei.value)
    assert "SBX_PRIVATE_REGISTRIES" in msg, msg
    assert ref.split("/", 1)[0] in msg, msg
    assert time.monotonic() - t0 < 10  # refused up front, no connection attempt


# ---- from_dockerfile ----------------------------------------------------------------------
DOCKERFILE = """\
FROM {base}
ARG GREETING=hello
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
COPY app/ ./
COPY --chmod=755 run.sh /usr/local/bin/run.sh
RUN echo "$GREETING" > /greeting && ls
USER nobody
ENTRYPOINT ["run.sh"]
CMD ["x"]
"""


@pytest.fixture(scope="module")
def df_context(tmp_path_factory: pytest.TempPathFactory, pybase_ref: str) -> str:
    ctx = tmp_path_factory.mktemp("df-context")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=pybase_ref))
    (ctx / "app" / "pkg").mkdir(parents=True)
    (ctx / "app" / "main.py").write_text("print('main')\n")
    (ctx / "app" / "pkg" / "data.txt").write_text("data\n")
    os.chmod(ctx / "app" / "main.py", 0o600)
    (ctx / "run.sh").write_text('#!/bin/sh\necho "run $* as $(id -u) in $(pwd)"\n')
    os.chmod(ctx / "run.sh", 0o644)
    return str(ctx)


@pytest.fixture(scope="module")
def df_image(df_context: str) -> tuple[sbx.Image, list[str]]:
    return build_logged(sbx.Image.from_dockerfile(os.path.join(df_context, "Dockerfile")))


@pytest.fixture(scope="module")
def df_sandbox(df_image):
    sb = sbx.Sandbox.create(image=df_image[0], timeout=600)
    yield sb
    sb.terminate()


def test_dockerfile_user_cwd_env(df_sandbox):
    assert sh(df_sandbox, "id -u; pwd; echo $APP_HOME") == "65534\n/srv/app\n/srv/app\n"
    # ARG values reach RUN only, never the image's environment
    assert sh(df_sandbox, 'echo "[$GREETING]"') == "[]\n"


def test_dockerfile_arg_reaches_run(df_sandbox, df_image):
    assert run(df_sandbox, "cat", "/greeting") == (0, "hello\n", "")
    # RUN ran in the WORKDIR, after the COPY: its `ls` listed the copied files
    _, lines = df_image
    listed = [line.strip() for line in lines]
    assert "main.py" in listed and "pkg" in listed, lines


def test_dockerfile_copies_files_and_modes(df_sandbox):
    out = sh(df_sandbox, "cd /srv/app && find . | sort; cat pkg/data.txt; "
                         "stat -c '%a %U' main.py /usr/local/bin/run.sh")
    assert out == ".\n./main.py\n./pkg\n./pkg/data.txt\ndata\n600 root\n755 root\n", out


def test_dockerfile_entrypoint_script_runs(df_sandbox):
    # COPY --chmod=755 made it executable, and /usr/local/bin is on PATH
    assert run(df_sandbox, "run.sh", "x") == (0, "run x as 65534 in /srv/app\n", "")


def test_dockerfile_config(server, df_image):
    img, _ = df_image
    with server.api() as c:
        info = c.get(f"/v1/images/{img.object_id}").json()
    assert info["user"] == "nobody"
    assert info["workdir"] == "/srv/app"
    assert info["entrypoint"] == ["run.sh"]
    assert info["cmd"] == ["x"]
    assert info["env"]["APP_HOME"] == "/srv/app"
    assert "GREETING" not in info["env"]


def test_dockerfile_build_args_override(df_context: str, df_image):
    img = sbx.Image.from_dockerfile(os.path.join(df_context, "Dockerfile"),
                                    build_args={"GREETING": "hey"})
    img.build()
    assert img.object_id != df_image[0].object_id
    with sbx.Sandbox.create(image=img, timeout=300) as sb:
        assert run(sb, "cat", "/greeting") == (0, "hey\n", "")
        assert sh(sb, "id -u") == "65534\n"


def test_dockerfile_multi_stage_is_rejected_client_side(tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:1/a:1 AS b\nRUN true\nFROM b\n"
                                         "RUN echo two\n")
    # from_dockerfile sends nothing; point the SDK nowhere to be sure no server is needed
    monkeypatch.setenv("SBX_URL", "http://127.0.0.1:9")
    with pytest.raises(sbx.InvalidRequestError) as ei:
        sbx.Image.from_dockerfile(str(tmp_path / "Dockerfile"))
    msg = str(ei.value)
    assert "line 3" in msg and "multi-stage" in msg, msg


# ---- debian_slim + dockerfile_commands + local files --------------------------------------
PKG = "sbx_srcpkg_under_test"


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("local-tree")
    d = root / "dir"
    (d / "sub" / "__pycache__").mkdir(parents=True)
    (d / "__pycache__").mkdir()
    (d / "a.py").write_text("A = 1\n")
    (d / "a.pyc").write_bytes(b"\0pyc")
    (d / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0pyc")
    (d / "sub" / "b.txt").write_text("b\n")
    (d / "sub" / "c.pyc").write_bytes(b"\0pyc")
    (d / "sub" / "__pycache__" / "x.pyc").write_bytes(b"\0pyc")
    pkg = root / "py" / PKG
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .inner import VALUE\n")
    (pkg / "inner.py").write_text("VALUE = 'pkg-value-42'\n")
    (pkg / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"\0pyc")
    (root / "x.txt").write_text("through the symlink\n")
    return str(root)


@pytest.fixture(scope="module")
def slim_image(local_tree: str) -> sbx.Image:
    sys.path.insert(0, os.path.join(local_tree, "py"))
    try:
        img = (sbx.Image.debian_slim()
               .dockerfile_commands("RUN echo x > /x", "ENV Y=1")
               .add_local_dir(os.path.join(local_tree, "dir"), "/opt/tree",
                              ignore=["*.pyc", "__pycache__"])
               .add_local_python_source(PKG)
               .dockerfile_commands("COPY x.txt /lib/sbxtest/x.txt", context_dir=local_tree))
        img.build()
    finally:
        sys.path.remove(os.path.join(local_tree, "py"))
        sys.modules.pop(PKG, None)
    return img


@pytest.fixture(scope="module")
def slim_sandbox(slim_image: sbx.Image):
    sb = sbx.Sandbox.create(image=slim_image, timeout=600)
    yield sb
    sb.terminate()


def test_dockerfile_commands_on_debian_slim(slim_sandbox):
    assert run(slim_sandbox, "cat", "/x") == (0, "x\n", "")
    assert sh(slim_sandbox, "echo $Y") == "1\n"


def test_add_local_dir_honours_ignore(slim_sandbox):
    out = sh(slim_sandbox, "cd /opt/tree && find . | sort")
    assert out == ".\n./a.py\n./sub\n./sub/b.txt\n", out
    assert run(slim_sandbox, "cat", "/opt/tree/a.py") == (0, "A = 1\n", "")


def test_add_local_python_source_is_importable(slim_sandbox):
    code, out, err = run(slim_sandbox, "python3", "-B", "-c",
                         f"import {PKG}; print({PKG}.VALUE); print({PKG}.__file__)")
    assert code == 0, err
    assert out == f"pkg-value-42\n/root/{PKG}/__init__.py\n"
    # the default ignore keeps __pycache__ out
    assert sh(slim_sandbox, f"cd /root/{PKG} && find . | sort") == \
        ".\n./__init__.py\n./inner.py\n"


def test_copy_under_symlinked_dir_follows_the_image(slim_sandbox):
    assert sh(slim_sandbox, "readlink /lib") == "usr/lib\n"
    assert run(slim_sandbox, "cat", "/usr/lib/sbxtest/x.txt") == (0, "through the symlink\n", "")
    assert run(slim_sandbox, "cat", "/lib/sbxtest/x.txt") == (0, "through the symlink\n", "")
    # the rest of /usr/lib is still there (the symlink was not replaced by a new directory)
    assert sh(slim_sandbox, "test -d /lib/x86_64-linux-gnu -o -d /lib/aarch64-linux-gnu "
                            "&& echo ok") == "ok\n"
