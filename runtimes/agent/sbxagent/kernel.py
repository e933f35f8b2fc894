"""The driver of one interpreter context: a long-lived python3 process, like a Jupyter kernel.

Runs INSIDE the sandbox as the sandbox's exec user, in the image's own python3 (with its
site-packages), started by `contexts.py`. Stdlib only, Python 3.9+; must not import anything
outside this package, and never imports matplotlib itself (it only looks in sys.modules).

Protocol (both fds are pipes to the agent, passed as argv):
  requests  JSON lines in: {"code": str}
  events    JSON lines out: {"type": "ready", ...}, then per cell any of
            {"type": "result", "data": {mime: value}}   the last expression's value
            {"type": "display", "data": {mime: value}}  display() calls, matplotlib figures
            {"type": "error", "name", "value", "traceback"}
            and always {"type": "done"} last.
stdout and stderr (fd 1 and 2) are pipes the agent reads and streams as they are written.
SIGINT interrupts a running cell (KeyboardInterrupt); between cells it is ignored.
"""

import ast
import base64
import builtins
import io
import json
import linecache
import os
import platform
import signal
import sys
import traceback
import types

MAX_TEXT = 100 * 1024  # characters of a text representation
MAX_BINARY = 8 * 1024 * 1024  # bytes of an image
MAX_TRACEBACK = 64 * 1024
# rich representations looked up on the value's class, like IPython's display formatter
MIME_METHODS = (
    ("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"), ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"), ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
)
CO_COROUTINE = 0x80


def _cap(text, limit=MAX_TEXT):
    if len(text) <= limit:
        return text
    return text[:limit] + "\n... [truncated: %d characters in all]" % len(text)


def _ignore(signum, frame):
    pass


def _safe(fn, default=""):
    try:
        return fn()
    except Exception as e:  # a broken __repr__ must not break the context
        return default or "<repr failed: %s: %s>" % (type(e).__name__, e)


class Kernel:
    def __init__(self, req_fd, ev_fd):
        self.requests = os.fdopen(req_fd, "rb")
        self.ev_fd = ev_fd
        self.main = types.ModuleType("__main__")
        self.main.__dict__["__builtins__"] = builtins
        self.main.__dict__["display"] = self.display
        sys.modules["__main__"] = self.main  # so pickle finds classes defined in cells
        self.ns = self.main.__dict__
        self.count = 0
        self.loop = None

    # ---- events -------------------------------------------------------------------------
    def emit(self, obj):
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.ev_fd, view):]

    def bundle(self, value):
        """The value's representations by MIME type, each capped."""
        data = {"text/plain": _cap(_safe(lambda: repr(value)))}
        cls = type(value)
        for mime, meth in MIME_METHODS:
            if getattr(cls, meth, None) is None:
                continue
            try:
                out = getattr(value, meth)()
            except Exception:
                continue
            if isinstance(out, tuple) and out:  # (data, metadata)
                out = out[0]
            if out is None:
                continue
            if mime in ("image/png", "image/jpeg"):
                if isinstance(out, str):
                    out = out.encode("ascii", "replace")
                if isinstance(out, bytes) and len(out) <= MAX_BINARY:
                    data[mime] = base64.b64encode(out).decode("ascii")
            elif mime == "application/json":
                try:
                    data[mime] = json.loads(json.dumps(out))
                except (TypeError, ValueError):
                    pass
            elif isinstance(out, str):
                data[mime] = _cap(out, MAX_BINARY if mime == "image/svg+xml" else MAX_TEXT)
        return data

    def display(self, *objs):
        """Show objects in the cell's results (like IPython's display())."""
        for obj in objs:
            self.emit({"type": "display", "data": self.bundle(obj)})

    def error(self, e):
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
            tb = tb.tb_next  # the driver's own frames are noise to the user
        if isinstance(e, SyntaxError) and tb is None:
            lines = traceback.format_exception_only(type(e), e)
        else:
            lines = traceback.format_exception(type(e), e, tb)
        self.emit({"type": "error", "name": type(e).__name__,
                   "value": _cap(_safe(lambda: str(e)), MAX_TEXT),
                   "traceback": _cap("".join(lines), MAX_TRACEBACK)})

    def figures(self):
        """Open matplotlib figures as PNG displays, then closed (only if the user's code
        imported pyplot: the driver never imports it)."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        try:
            for num in plt.get_fignums():
                fig = plt.figure(num)
                buf = io.BytesIO()
                fig.savefig(buf, format="png", bbox_inches="tight")
                png = buf.getvalue()
                data = {"text/plain": _safe(lambda: repr(fig))}
                if len(png) <= MAX_BINARY:
                    data["image/png"] = base64.b64encode(png).decode("ascii")
                self.emit({"type": "display", "data": data})
            plt.close("all")
        except Exception as e:
            sys.stderr.write("sbx: could not render matplotlib figures: %s: %s\n"
                             % (type(e).__name__, e))

    # ---- cells --------------------------------------------------------------------------
    def _eval(self, code):
        value = eval(code, self.ns)
        if code.co_flags & CO_COROUTINE:  # top-level await
            if self.loop is None:
                import asyncio

                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            value = self.loop.run_until_complete(value)
        return value

    def run_cell(self, source):
        self.count += 1
        name = "<cell %d>" % self.count
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        flags = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            tree = ast.parse(source, name, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            if tree.body:
                self._eval(compile(tree, name, "exec", flags, dont_inherit=True))
            if last is not None:
                value = self._eval(compile(last, name, "eval", flags, dont_inherit=True))
                if value is not None and not source.rstrip().endswith(";"):
                    self.ns["_"] = value
                    self.emit({"type": "result", "data": self.bundle(value)})
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: the context lives on
            signal.signal(signal.SIGINT, _ignore)
            self.error(e)
        finally:
            signal.signal(signal.SIGINT, _ignore)
        for stream in (sys.stdout, sys.stderr):
            _safe(stream.flush)
        self.figures()

    def serve(self):
        while True:
            try:
                line = self.requests.readline()
                if not line:
                    return  # the agent closed the pipe: the context is being deleted
                req = json.loads(line)
                self.run_cell(req["code"])
            except KeyboardInterrupt:  # a late interrupt between cells
                pass
            except Exception as e:
                self.error(e)
            try:
                self.emit({"type": "done"})
            except KeyboardInterrupt:
                self.emit({"type": "done"})


def main():
    req_fd, ev_fd = int(sys.argv[1]), int(sys.argv[2])
    for fd in (req_fd, ev_fd):
        os.set_inheritable(fd, False)  # the cell's subprocesses do not get the protocol
    signal.signal(signal.SIGINT, _ignore)
    sys.argv = [""]
    agent_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if agent_dir in sys.path:
        sys.path.remove(agent_dir)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass
    kernel = Kernel(req_fd, ev_fd)
    kernel.emit({"type": "ready", "pid": os.getpid(), "python": platform.python_version(),
                 "cwd": os.getcwd()})
    kernel.serve()
