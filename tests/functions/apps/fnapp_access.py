"""The app of tests/functions/test_fn_access.py: functions that call the service from inside
their containers, one that may not, and the network a function container gets."""

from __future__ import annotations

import socket

import sandbox_service as modal

app = modal.App("fn-access")


@app.function(max_containers=1)
def square(x):
    return x * x


@app.function(max_containers=1)
def caller(x):
    """Calls another function of its app from inside its container."""
    return square.remote(x) + 1


@app.function(max_containers=1)
def caller_many(xs):
    return {"map": list(square.map(xs)),
            "spawn": square.spawn(xs[0]).get(timeout=60),
            "local": modal.is_local()}


def _call_through_the_service(x):
    """A call that must reach the server (a lookup), whatever the SDK knows locally."""
    return modal.Function.from_name("fn-access-no-such-app", "square").remote(x)


@app.function(max_containers=1, restrict_modal_access=True)
def restricted(x):
    return _call_through_the_service(x)


@app.function(max_containers=1)
def unrestricted(x):
    return _call_through_the_service(x)


def _network():
    names = sorted(name for _, name in socket.if_nameindex())
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1.5).close()
        reach = "connected"
    except OSError as e:
        reach = type(e).__name__
    return {"interfaces": names, "reach": reach}


@app.function(max_containers=1, block_network=True)
def offline(x):
    return x * 3, _network()


@app.function(max_containers=1)
def online(x):
    return x * 3, _network()


@app.function(max_containers=1, timeout=180)
def agent_tool(code):
    """What an agent's tool does: run code in a fresh sandbox and stream its output back."""
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        p = sb.exec("python3", "-c", code)
        out, err = p.stdout.read(), p.stderr.read()
        rc = p.wait()
        cat = sb.exec("cat")
        cat.stdin.write(b"through stdin")
        cat.stdin.write_eof()
        cat.stdin.drain()
        echoed = cat.stdout.read()
        lines = list(sb.exec("sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done").stdout)
        return {"out": out, "err": err, "rc": rc, "echoed": echoed, "lines": lines,
                "sandboxes": len(list(modal.Sandbox.list(app_id=app.app_id)))}
    finally:
        sb.terminate()


@app.function(max_containers=1, timeout=120)
def port_forward():
    """A port forward from a function container into a sandbox it made (a WebSocket over
    the runner's channel, spliced to a local TCP connection)."""
    sb = modal.Sandbox.create(app=app, timeout=60, encrypted_ports=[7000])
    try:
        sb.exec("python3", "-c", "import socket\ns=socket.socket()\n"
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                "s.bind(('127.0.0.1', 7000)); s.listen()\nc,_=s.accept()\n"
                "c.sendall(b'hello from ' + c.recv(100))\nc.close()")
        import time

        with sb.forward_port(7000) as fwd:
            for _ in range(100):
                try:
                    conn = socket.create_connection(("127.0.0.1", fwd.local_port), timeout=10)
                    conn.sendall(b"the function")
                    data = conn.recv(100)
                    conn.close()
                    if data:
                        return data.decode()
                except OSError:
                    pass
                time.sleep(0.1)
        return "no answer"
    finally:
        sb.terminate()


@app.function(max_containers=1)
def ids(_x=None):
    return modal.current_function_call_id(), modal.current_input_id()
