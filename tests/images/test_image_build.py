"""The layered image builder against a real server: layer reuse, invalidation, failing steps,
concurrent builds, config in sandboxes, whiteouts, stripping, build egress policy, gc."""

from __future__ import annotations

import glob
import json
import os
import threading
import uuid

import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("server")]


def build_events(api, steps, force_build=False):
    """POST /v1/images; (log lines, final event)."""
    lines, final = [], None
    with api.stream("POST", "/v1/images", json={"steps": steps, "force_build": force_build},
                    timeout=600) as r:
        assert r.status_code == 200, r.read()
        for raw in r.iter_lines():
            if not raw.strip():
                continue
            ev = json.loads(raw)
            if ev["type"] == "log":
                lines.append(ev["line"])
            else:
                final = ev
    assert final is not None
    return lines, final


BASE = {"kind": "debian_slim", "python_version": None}


def run_step(*cmds):
    return {"kind": "run", "commands": list(cmds)}


def sh(sb, script):
    p = sb.exec("sh", "-c", script)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


def layers_dir(server):
    return os.path.join(server.home, "images", "layers")


def test_unchanged_prefix_is_never_rebuilt(api):
    marker = uuid.uuid4().hex
    steps = [BASE, run_step(f"echo {marker} > /a"), run_step("echo 2 > /b")]
    lines, final = build_events(api, steps)
    assert final["type"] == "done", final
    assert final["image"]["built_layers"] == 2
    _, again = build_events(api, steps)
    assert again["image"]["image_id"] == final["image"]["image_id"]
    assert again["image"]["built_layers"] == 0
    # a new last step reuses both earlier layers
    lines, third = build_events(api, steps + [run_step("echo 3 > /c")])
    assert third["image"]["built_layers"] == 1
    assert sum("cached" in line for line in lines) == 2


def test_changed_local_file_rebuilds_only_its_layer_and_later(tmp_path, server):
    f = tmp_path / "data.txt"
    f.write_text("v1\n")
    marker = uuid.uuid4().hex

    def recipe():
        return (sbx.Image.debian_slim().run_commands(f"echo {marker} > /first")
                .add_local_file(str(f), "/data/data.txt").run_commands("cat /data/data.txt > /copy"))

    img1 = recipe()
    img1.build()
    f.write_text("v2\n")
    img2 = recipe()
    img2.build()
    assert img1.object_id != img2.object_id
    with server.api() as api:
        info1 = api.get(f"/v1/images/{img1.object_id}").json()
        info2 = api.get(f"/v1/images/{img2.object_id}").json()
    assert info1["layers"] == info2["layers"] == 4
    sb = sbx.Sandbox.create(image=img2)
    try:
        assert sh(sb, "cat /data/data.txt /copy /first")[1] == f"v2\nv2\n{marker}\n"
    finally:
        sb.terminate()


def test_failing_step_reports_output_and_leaves_nothing(server):
    marker = uuid.uuid4().hex
    img = sbx.Image.debian_slim().run_commands(f"echo out-{marker}; echo err-{marker} >&2; exit 3")
    with pytest.raises(sbx.ImageBuildError) as ei:
        img.build()
    msg = str(ei.value)
    assert "exited with code 3" in msg and f"out-{marker}" in msg and f"err-{marker}" in msg
    assert not glob.glob(os.path.join(layers_dir(server), ".tmp-*"))
    with open("/proc/mounts") as f:
        assert layers_dir(server) not in f.read()
    runtime = os.path.join(server.home, "runtime", "sandboxes")
    assert not [d for d in os.listdir(runtime) if d.startswith("bd-")]
    # the failed recipe builds fine once fixed, and earlier layers were kept
    sbx.Image.debian_slim().run_commands(f"echo out-{marker}").build()


def test_concurrent_identical_builds_run_the_step_once(api, server):
    marker = uuid.uuid4().hex
    steps = [BASE, run_step(f"sleep 1; echo RAN-{marker}")]
    results = []

    def one():
        with server.api() as c:
            results.append(build_events(c, steps))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    ids = {final["image"]["image_id"] for _, final in results}
    assert len(ids) == 1
    ran = sum(any(line.strip() == f"RAN-{marker}" for line in lines) for lines, _ in results)
    assert ran == 1
    assert sum(final["image"]["built_layers"] for _, final in results) == 1


def test_image_config_reaches_the_sandbox():
    img = (sbx.Image.debian_slim()
           .run_commands("useradd -m -u 1234 appuser")
           .env({"GREETING": "hi there", "PATH": "/opt/tools:/usr/local/bin:/usr/bin:/bin"})
           .workdir("/srv/app")
           .dockerfile_commands("USER appuser", "RUN id -u > /home/appuser/built-by"))
    sb = sbx.Sandbox.create(image=img)
    try:
        code, out, _ = sh(sb, 'echo "$GREETING"; pwd; id -u; cat ~/built-by; echo $PATH')
        assert code == 0
        assert out.splitlines() == ["hi there", "/srv/app", "1234", "1234",
                                    "/opt/tools:/usr/local/bin:/usr/bin:/bin"]
        # a sandbox's own env still wins over the image's
        sb2 = sbx.Sandbox.create(image=img, env={"GREETING": "override"})
        try:
            assert sh(sb2, 'echo "$GREETING"')[1] == "override\n"
        finally:
            sb2.terminate()
    finally:
        sb.terminate()


def test_deletions_and_stripping_stay_in_the_layer(server):
    img = sbx.Image.debian_slim().run_commands(
        "rm -rf /usr/share/doc /etc/debian_version",
        "cp /bin/ls /ls-suid && chmod 4755 /ls-suid",
        "mknod /node c 1 5 || true",
        "ln -s /etc /etc-link")
    sb = sbx.Sandbox.create(image=img)
    base = sbx.Sandbox.create()
    try:
        code, out, _ = sh(sb, "ls /usr/share/doc 2>&1; test -e /etc/debian_version && echo HAS;"
                              " stat -c %a /ls-suid; test -e /node && echo NODE; readlink /etc-link")
        assert "No such file" in out and "HAS" not in out and "NODE" not in out
        assert "755\n" in out and "/etc\n" in out
        # the shared layers below were not touched
        assert sh(base, "test -d /usr/share/doc && cat /etc/debian_version")[0] == 0
    finally:
        sb.terminate()
        base.terminate()
    for path in glob.glob(os.path.join(layers_dir(server), "*", "diff", "ls-suid")):
        assert not os.stat(path).st_mode & 0o6000


def test_build_steps_have_egress_but_not_to_private_ranges_or_the_host(server):
    port = server.url.rsplit(":", 1)[1]
    probe = (
        "import socket, sys\n"
        "def gw():\n"
        "    for line in open('/proc/net/route').read().splitlines()[1:]:\n"
        "        f = line.split()\n"
        "        if f[1] == '00000000':\n"
        "            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])\n"
        f"for host, port in [(gw(), {port}), ('169.254.169.254', 80), ('10.0.0.1', 80), ('127.0.0.1', {port})]:\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port)); print('OPEN', host, port)\n"
        "    except OSError as e:\n"
        "        print('BLOCKED', host, port, type(e).__name__)\n"
        "print('DNS', socket.getaddrinfo('deb.debian.org', 80)[0][4][0])\n")
    steps = [BASE, {"kind": "run", "commands": ["python3 -c \"$P\""],
                    "secret_env": {"P": probe}, "force_build": True}]
    with server.api() as api:
        lines, final = build_events(api, steps)
    text = "\n".join(lines)
    assert final["type"] == "done", text
    assert "OPEN" not in text, text
    assert text.count("BLOCKED") == 4, text
    assert "DNS " in text, text


def test_secret_values_stay_out_of_logs_and_keys(server):
    secret = sbx.Secret.from_dict({"TOKEN": "s3cr3t-" + uuid.uuid4().hex})
    img = sbx.Image.debian_slim().run_commands('test -n "$TOKEN" && echo token-seen', secrets=[secret])
    img.build()
    assert secret._env["TOKEN"] not in server.tail(200_000)
    sb = sbx.Sandbox.create(image=img)
    try:
        assert sh(sb, 'echo "[$TOKEN]"')[1] == "[]\n"  # build-time only, never in the image
    finally:
        sb.terminate()


def test_python_version_outside_what_debian_serves_is_a_clear_error():
    with pytest.raises(sbx.ImageBuildError, match=r"3\.11.*3\.13"):
        sbx.Image.debian_slim(python_version="3.8").build()


def test_python_312_gets_debian_13s_python_with_a_warning(server, caplog):
    """Modal programs often pin 3.12, which Debian does not ship: they get 3.13 (which runs
    3.12 code) and the build log says so."""
    import logging

    with caplog.at_level(logging.INFO, logger="sandbox_service"):
        img = sbx.Image.debian_slim(python_version="3.12").run_commands(
            "python3 -c 'import sys; print(sys.version_info[:2])' > /v").build()
    assert "Debian ships no Python 3.12" in caplog.text
    sb = sbx.Sandbox.create(image=img)
    try:
        assert sh(sb, "cat /v")[1] == "(3, 13)\n"
    finally:
        sb.terminate()


def test_gc_never_removes_a_layer_in_use(server, api):
    marker = uuid.uuid4().hex
    img = sbx.Image.debian_slim().run_commands(f"echo {marker} > /m")
    img.build()
    assert api.get(f"/v1/images/{img.object_id}").status_code == 200
    sb = sbx.Sandbox.create(image=img)
    try:
        assert api.delete(f"/v1/images/{img.object_id}").status_code == 200
        assert api.get(f"/v1/images/{img.object_id}").status_code == 404
        r = api.post("/v1/images/gc")
        assert r.status_code == 200
        assert sh(sb, "cat /m")[1] == marker + "\n"
    finally:
        sb.terminate()
    keys_before = set(os.listdir(layers_dir(server)))
    r = api.post("/v1/images/gc").json()
    assert r["removed_layers"] >= 1
    keys_after = set(os.listdir(layers_dir(server)))
    assert keys_after < keys_before
    with pytest.raises(sbx.NotFoundError):
        sbx.Sandbox.create(image=sbx.Image.from_id(img.object_id))


def test_bad_recipes_are_typed_errors(api):
    r = api.post("/v1/images", json={"steps": [run_step("true")]})
    ev = [json.loads(x) for x in r.text.splitlines() if x.strip()][-1]
    assert ev["type"] == "error" and ev["error"]["code"] == "image_build_failed"
    assert "starts with" in ev["error"]["message"]
    r = api.post("/v1/images", json={"steps": [BASE, {"kind": "nope"}]})
    assert r.status_code == 400
    r = api.post("/v1/images", json={"steps": [BASE, {"kind": "files", "entries": [
        {"path": "/x", "sha256": "0" * 64}]}]})
    ev = [json.loads(x) for x in r.text.splitlines() if x.strip()][-1]
    assert ev["type"] == "error" and "not uploaded" in ev["error"]["message"]
    r = api.put("/v1/blobs/" + "0" * 64, content=b"not matching")
    assert r.status_code == 400 and "sha256" in r.json()["error"]["message"]


def test_images_survive_a_server_restart(server, api):
    marker = uuid.uuid4().hex
    img = sbx.Image.debian_slim().run_commands(f"echo {marker} > /m").env({"R": "1"})
    img.build()
    server.restart(kill=False)
    with server.api() as c:
        info = c.get(f"/v1/images/{img.object_id}")
        assert info.status_code == 200 and info.json()["env"] == {"R": "1"}
    # the same recipe resolves to the same image, all cached
    again = sbx.Image.debian_slim().run_commands(f"echo {marker} > /m").env({"R": "1"})
    again.build()
    assert again.object_id == img.object_id
    sb = sbx.Sandbox.create(image=sbx.Image.from_id(img.object_id))
    try:
        assert sh(sb, 'cat /m; echo "$R"')[1] == f"{marker}\n1\n"
    finally:
        sb.terminate()


@pytest.fixture
def host_dir():
    """A host directory outside /tmp (a sandbox's /tmp is a tmpfs over the image's)."""
    import shutil

    path = f"/var/tmp/sbx-test-{uuid.uuid4().hex}"
    os.mkdir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_files_steps_never_write_through_symlinks_on_the_host(api, host_dir):
    import hashlib

    content = b"hostile " + uuid.uuid4().hex.encode()
    digest = hashlib.sha256(content).hexdigest()
    assert api.put(f"/v1/blobs/{digest}", content=content).status_code == 200
    target = host_dir
    # a link to a host directory, then a file "below" it in the same step: refused
    lines, final = build_events(api, [BASE, {"kind": "files", "entries": [
        {"path": "/evil", "type": "symlink", "target": str(target)},
        {"path": "/evil/pwned", "sha256": digest}]}])
    assert final["type"] == "error" and "below the symbolic link" in final["error"]["message"]
    # the link in one layer, the file in the next: resolved inside the image, never the host
    _, final = build_events(api, [BASE,
                                  {"kind": "files", "entries": [
                                      {"path": "/evil", "type": "symlink", "target": str(target)}]},
                                  {"kind": "files", "entries": [
                                      {"path": "/evil/pwned", "sha256": digest}]}])
    assert final["type"] == "done", final
    assert not os.listdir(target)
    sb = sbx.Sandbox.create(image=sbx.Image.from_id(final["image"]["image_id"]))
    try:
        assert sh(sb, f"cat {target}/pwned")[1] == content.decode()
    finally:
        sb.terminate()
    _, final = build_events(api, [BASE, {"kind": "files", "entries": [
        {"path": "/tmp/..", "type": "dir"}]}])
    assert final["type"] == "error" and "'.' or '..'" in final["error"]["message"]


def test_entrypoint_resets_only_an_inherited_cmd(api):
    _, final = build_events(api, [BASE, {"kind": "cmd", "argv": ["serve"]},
                                  {"kind": "entrypoint", "argv": ["/app"]}])
    assert final["type"] == "done"
    assert (final["image"]["entrypoint"], final["image"]["cmd"]) == (["/app"], ["serve"])
