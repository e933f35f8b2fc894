"""The stateful code interpreter against a real server and real runsc: persistent Python
contexts inside a sandbox (state, last-expression values, structured errors, streaming,
interrupts and timeouts that keep the context, output caps, rich results, matplotlib PNGs),
their REST routes, and who may use them."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest

import sandbox_service as sbx

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("server")]


def test_state_persists_across_calls(sandbox):
    ctx = sandbox.create_context()
    assert ctx.context_id.startswith("cx-") and ctx.alive and ctx.python
    first = sandbox.run_code("import math, os\nx = 21\nos.chdir('/tmp')", context=ctx)
    assert first.error is None and first.results == [] and first.text is None
    ex = sandbox.run_code("x * 2", context=ctx)
    assert ex.text == "42" and ex.error is None and ex.context_alive
    ex = sandbox.run_code("def f(n):\n    return n + x\nf(1), os.getcwd(), round(math.pi, 2)",
                          context=ctx)
    assert ex.text == "(22, '/tmp', 3.14)"
    # `_` is the last value, like Jupyter; a trailing semicolon hides the value
    assert sandbox.run_code("_[0]", context=ctx).text == "22"
    assert sandbox.run_code("x;", context=ctx).results == []


def test_default_context_needs_no_create(sandbox):
    assert "".join(sandbox.run_code("y = 5\nprint('hi')").logs.stdout) == "hi\n"
    assert sandbox.run_code("y + 1").text == "6"
    assert [c.context_id for c in sandbox.list_contexts()] == ["default"]


def test_context_cwd_and_env(sandbox):
    ctx = sandbox.create_context(cwd="/tmp", env={"SBX_CTX_VAR": "yes"})
    ex = sandbox.run_code("import os\nos.getcwd(), os.environ['SBX_CTX_VAR']", context=ctx)
    assert ex.text == "('/tmp', 'yes')"
    assert ctx.cwd == "/tmp"
    with pytest.raises(sbx.InvalidRequestError, match="No such file or directory: /no/such/dir"):
        sandbox.create_context(cwd="/no/such/dir")


def test_exception_comes_back_structured_and_the_context_survives(sandbox):
    ctx = sandbox.create_context()
    sandbox.run_code("kept = [1, 2]", context=ctx)
    ex = sandbox.run_code("print('before')\ndef f():\n    raise ValueError('boom')\nf()",
                          context=ctx)
    assert "".join(ex.logs.stdout) == "before\n"
    assert (ex.error.name, ex.error.value) == ("ValueError", "boom")
    tb = ex.error.traceback
    assert "Traceback" in tb and "<cell 2>" in tb and "in f" in tb and "raise ValueError('boom')" in tb
    assert "sbxagent" not in tb and "kernel.py" not in tb  # the driver's frames are hidden
    syn = sandbox.run_code("def broken(:\n    pass", context=ctx)
    assert syn.error.name == "SyntaxError" and "broken" in syn.error.traceback
    assert sandbox.run_code("import sys\nsys.exit(3)", context=ctx).error.name == "SystemExit"
    assert sandbox.run_code("kept", context=ctx).text == "[1, 2]"


def test_output_streams_while_the_cell_runs_in_order(sandbox):
    """The cell waits for a file the test writes only when its first line has arrived:
    without streaming, it would wait its full 60 s and say so."""
    ctx = sandbox.create_context()
    seen: list[tuple[str, str]] = []
    writer: list[threading.Thread] = []

    def on_stdout(text):
        seen.append(("out", text))
        if "waiting" in text and not writer:
            t = threading.Thread(target=sandbox.filesystem.write_text, args=("go", "/tmp/go"))
            writer.append(t)
            t.start()

    code = ("import os, sys, time\n"
            "print('waiting')\n"
            "for _ in range(600):\n"
            "    if os.path.exists('/tmp/go'):\n"
            "        break\n"
            "    time.sleep(0.1)\n"
            "print('released' if os.path.exists('/tmp/go') else 'never released')\n"
            "print('to stderr', file=sys.stderr)\n"
            "time.sleep(0.3)\n"
            "print('last')\n")
    ex = sandbox.run_code(code, context=ctx, on_stdout=on_stdout,
                          on_stderr=lambda t: seen.append(("err", t)))
    writer[0].join()
    assert ex.error is None
    assert "".join(ex.logs.stdout) == "waiting\nreleased\nlast\n"
    assert "".join(ex.logs.stderr) == "to stderr\n"
    merged: list[list[str]] = []  # consecutive chunks of one stream, joined
    for kind, text in seen:
        if merged and merged[-1][0] == kind:
            merged[-1][1] += text
        else:
            merged.append([kind, text])
    lines = [(k, line) for k, t in merged for line in t.splitlines()]
    assert lines == [("out", "waiting"), ("out", "released"), ("err", "to stderr"), ("out", "last")]


def test_two_contexts_are_independent(sandbox):
    a, b = sandbox.create_context(), sandbox.create_context()
    sandbox.run_code("v = 'a'", context=a)
    sandbox.run_code("v = 'b'\nimport json", context=b)
    assert sandbox.run_code("v", context=a).text == "'a'"
    assert sandbox.run_code("v", context=b.context_id).text == "'b'"
    assert sandbox.run_code("json", context=a).error.name == "NameError"
    pids = {c.context_id: c.pid for c in sandbox.list_contexts()}
    assert pids[a.context_id] != pids[b.context_id]


def test_timeout_interrupts_the_cell_and_keeps_the_context(sandbox):
    ctx = sandbox.create_context()
    sandbox.run_code("keep = 'yes'", context=ctx)
    ex = sandbox.run_code("n = 0\nwhile True:\n    n += 1", context=ctx, timeout=1)
    assert ex.timed_out and ex.interrupted and ex.context_alive
    assert ex.error.name == "KeyboardInterrupt" and "timeout of 1s" in ex.error.value
    assert sandbox.run_code("keep, n > 0", context=ctx).text == "('yes', True)"


def test_interrupt_by_request(sandbox):
    ctx = sandbox.create_context()
    assert sandbox.interrupt_context(ctx) is False  # nothing running
    box = {}
    t = threading.Thread(target=lambda: box.setdefault(
        "ex", sandbox.run_code("import time\ntime.sleep(120)", context=ctx, timeout=None)))
    t.start()
    for _ in range(600):
        if any(c.busy for c in sandbox.list_contexts() if c.context_id == ctx.context_id):
            break
        time.sleep(0.05)
    with pytest.raises(sbx.ConflictError, match="running another cell"):
        sandbox.run_code("1", context=ctx)
    assert sandbox.interrupt_context(ctx) is True
    t.join(60)
    ex = box["ex"]
    assert ex.interrupted and not ex.timed_out and ex.context_alive
    assert ex.error.name == "KeyboardInterrupt" and "time.sleep(120)" in ex.error.traceback
    assert sandbox.run_code("2", context=ctx).text == "2"


def test_a_client_that_goes_away_interrupts_its_cell(server, sandbox):
    ctx = sandbox.create_context()
    sandbox.run_code("kept = 1", context=ctx)
    url = f"/v1/sandboxes/{sandbox.object_id}/contexts/{ctx.context_id}/run"
    with server.api() as c:
        with c.stream("POST", url, json={"code": "print('started', flush=True)\n"
                                                 "import time\ntime.sleep(300)",
                                         "timeout_s": None}) as r:
            assert json.loads(next(r.iter_lines())) == {"type": "stdout", "text": "started\n"}
    # the run's connection is gone: the cell is interrupted, the context is free again
    for _ in range(600):
        if not [c for c in sandbox.list_contexts() if c.context_id == ctx.context_id][0].busy:
            break
        time.sleep(0.05)
    assert sandbox.run_code("kept", context=ctx).text == "1"


def test_a_cell_that_ignores_interrupts_loses_its_context(sandbox):
    ctx = sandbox.create_context()
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    ex = sandbox.run_code(code, context=ctx, timeout=0.5)
    assert ex.timed_out and not ex.context_alive
    assert ex.error.name == "ContextDied" and "create a new context" in ex.error.value
    with pytest.raises(sbx.ConflictError, match="Create a new context"):
        sandbox.run_code("1", context=ctx)
    assert [c.alive for c in sandbox.list_contexts() if c.context_id == ctx.context_id] == [False]
    # a process that exits on its own is reported the same way
    other = sandbox.create_context()
    ex = sandbox.run_code("import os\nos._exit(7)", context=other)
    assert ex.error.name == "ContextDied" and "exit code 7" in ex.error.value


def test_output_is_capped_with_a_marker(sandbox):
    ex = sandbox.run_code("print('x' * 200_000)\nprint('y' * 10, file=__import__('sys').stderr)"
                          "\n'done'", max_output_bytes=10_000)
    out = "".join(ex.logs.stdout)
    assert ex.stdout_truncated and not ex.stderr_truncated
    assert out.startswith("x" * 10_000) and "x" * 10_001 not in out
    assert "stdout truncated" in out and len(out) < 10_200
    assert ex.text == "'done'"
    big = sandbox.run_code("'z' * 1_000_000")  # a huge value's repr is capped too
    assert big.text.endswith("[truncated: 1000002 characters in all]")
    assert len(big.text) < 200_000


def test_rich_results_and_display(sandbox):
    code = ("class Table:\n"
            "    def _repr_html_(self):\n"
            "        return '<table><tr><td>1</td></tr></table>'\n"
            "    def __repr__(self):\n"
            "        return 'Table()'\n"
            "display('shown first')\n"
            "Table()")
    ex = sandbox.run_code(code)
    assert [r.is_main_result for r in ex.results] == [False, True]
    assert ex.results[0].text == "'shown first'"
    main = ex.results[1]
    assert main.text == "Table()" and main.html.startswith("<table>")
    assert set(main.formats()) == {"text/plain", "text/html"}
    ex = sandbox.run_code("import asyncio\nawait asyncio.sleep(0.01)\n'awaited'")
    assert ex.text == "'awaited'"  # top-level await, like Jupyter


def test_delete_and_unknown_contexts(sandbox):
    ctx = sandbox.create_context()
    sandbox.run_code("z = 1", context=ctx)
    sandbox.delete_context(ctx)
    assert ctx.context_id not in [c.context_id for c in sandbox.list_contexts()]
    with pytest.raises(sbx.NotFoundError, match="create_context"):
        sandbox.run_code("z", context=ctx)
    with pytest.raises(sbx.NotFoundError):
        sandbox.run_code("1", context="../../etc")
    with pytest.raises(sbx.NotFoundError):
        sandbox.delete_context(ctx)


def test_contexts_of_a_terminated_sandbox(server):
    sb = sbx.Sandbox.create()
    ctx = sb.create_context()
    sb.terminate()
    with pytest.raises(sbx.SandboxTerminatedError):
        sb.run_code("1", context=ctx)


def _ndjson(resp):
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def test_rest_sandbox_token_may_use_contexts_another_principal_may_not(server, api):
    def key(name):
        r = api.post("/v1/tokens", json={"scope": "user", "principal": f"{name}-{uuid.uuid4().hex[:6]}"})
        assert r.status_code == 201, r.text
        return httpx.Client(base_url=server.url, timeout=120,
                            headers={"Authorization": f"Bearer {r.json()['token']}"})

    with key("alice") as alice, key("bob") as bob:
        sid = alice.post("/v1/sandboxes", json={}).json()["sandbox_id"]
        try:
            tok = alice.post("/v1/tokens", json={"scope": "sandbox", "sandbox_id": sid}).json()
            base = f"/v1/sandboxes/{sid}/contexts"
            with httpx.Client(base_url=server.url, timeout=120,
                              headers={"Authorization": f"Bearer {tok['token']}"}) as t:
                r = t.post(base, json={})
                assert r.status_code == 201, r.text
                cid = r.json()["context_id"]
                secret = "do-not-log-" + uuid.uuid4().hex
                r = t.post(f"{base}/{cid}/run", json={"code": f"s = {secret!r}\nprint(len(s))\n7*6"})
                assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
                events = _ndjson(r)
                assert "".join(e["text"] for e in events if e["type"] == "stdout") == f"{len(secret)}\n"
                assert [e["type"] for e in events if e["type"] != "stdout"] == ["result", "end"]
                assert events[-2]["data"] == {"text/plain": "42"}
                assert [c["context_id"] for c in t.get(base).json()["contexts"]] == [cid]
                assert t.post(f"{base}/{cid}/interrupt").json() == {"context_id": cid,
                                                                     "interrupted": False}
                # bob: the sandbox and its contexts do not exist
                for resp in (bob.post(base, json={}), bob.get(base),
                             bob.post(f"{base}/{cid}/run", json={"code": "s"}),
                             bob.delete(f"{base}/{cid}")):
                    assert resp.status_code == 404, resp.text
                r = t.post(f"{base}/cx-{'0' * 20}/run", json={"code": "1"})
                assert r.status_code == 404 and "create" in r.json()["error"]["message"]
                assert t.post(f"{base}/{cid}/run", json={"code": "1", "timeout_s": -1}).status_code == 400
                assert t.delete(f"{base}/{cid}").json()["deleted"] is True
            # the audit log has the run, its size, never its code
            for _ in range(50):
                recs = api.get("/v1/audit", params={"object": sid, "action": "context.run"}).json()["records"]
                if recs:
                    break
                time.sleep(0.05)
            assert recs and recs[0]["detail"]["context_id"] == cid
            assert recs[0]["detail"]["code_bytes"] > len(secret)
            assert secret not in json.dumps(api.get("/v1/audit", params={"object": sid}).json())
        finally:
            alice.delete(f"/v1/sandboxes/{sid}")


def test_async_api(sandbox):
    import asyncio

    async def go():
        ctx = await sandbox.create_context.aio()
        await sandbox.run_code.aio("a = 40", context=ctx)
        return await sandbox.run_code.aio("a + 2", context=ctx)

    assert asyncio.run(go()).text == "42"


@pytest.fixture(scope="module")
def matplotlib_image():
    img = sbx.Image.debian_slim().pip_install("matplotlib")
    try:
        img.build()
    except sbx.ImageBuildError as e:
        text = str(e).lower()
        if any(w in text for w in ("network", "connection", "resolve", "timed out", "proxy",
                                   "certificate", "no matching distribution")):
            pytest.skip(f"matplotlib could not be installed from PyPI (network): {e}")
        raise
    return img


@pytest.mark.timeout(900)
def test_matplotlib_figures_come_back_as_png(matplotlib_image):
    sb = sbx.Sandbox.create(image=matplotlib_image)
    try:
        ctx = sb.create_context()
        ex = sb.run_code("import matplotlib.pyplot as plt\n"
                         "plt.plot([1, 3, 2])\n"
                         "plt.title('hello')\n"
                         "plt.show()\n"
                         "fig2 = plt.figure()\n"
                         "plt.bar(['a', 'b'], [1, 2])\n"
                         "'two figures'", context=ctx)
        assert ex.error is None, ex.error
        assert ex.text == "'two figures'"
        pngs = [r.png for r in ex.results if r.png]
        assert len(pngs) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
        assert not any("Warning" in s for s in ex.logs.stderr), ex.logs.stderr
        # figures were closed: the next cell shows only what it draws
        assert [r.png for r in sb.run_code("1 + 1", context=ctx).results if r.png] == []
        assert sb.run_code("import os\nos.environ['MPLBACKEND']", context=ctx).text == "'Agg'"
    finally:
        sb.terminate()


def test_contexts_run_as_the_sandboxes_user_in_its_workdir(server):
    img = (sbx.Image.debian_slim().run_commands("useradd --create-home alice")
           .dockerfile_commands("USER alice", "WORKDIR /home/alice")
           .env({"SBX_IMAGE_VAR": "from-image"}))
    sb = sbx.Sandbox.create(image=img, env={"SBX_SANDBOX_VAR": "from-sandbox"})
    try:
        ex = sb.run_code("import os, getpass\n"
                         "open('note.txt', 'w').write('mine')\n"
                         "(getpass.getuser(), os.getcwd(), os.environ['SBX_IMAGE_VAR'],\n"
                         " os.environ['SBX_SANDBOX_VAR'], os.environ['HOME'])")
        assert ex.error is None, ex.error
        assert ex.text == ("('alice', '/home/alice', 'from-image', 'from-sandbox', "
                           "'/home/alice')")
    finally:
        sb.terminate()


def test_a_context_survives_a_server_restart(server):
    sb = sbx.Sandbox.create(timeout=300)
    try:
        ctx = sb.create_context()
        sb.run_code("survivor = 'still here'", context=ctx)
        server.restart(kill=True)
        assert sb.run_code("survivor", context=ctx).text == "'still here'"
        assert [c.context_id for c in sb.list_contexts()] == [ctx.context_id]
    finally:
        sb.terminate()
