"""Interpreter contexts of this sandbox: the registry and the ctx_* operations (create,
list, get, run, interrupt, delete). Each context is a `kernels.Context`.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

import threading

from .kernels import Context, ContextError
from .proto import RESP

MAX_CONTEXTS = 32
CONTEXTS = {}
REGISTRY = threading.Lock()


def _get(req):
    ctx = CONTEXTS.get(req.get("ctx_id"))
    if ctx is None:
        raise ContextError("no_context", "no context %r in this sandbox" % (req.get("ctx_id"),))
    return ctx


def handle_context(conn, req):
    op = req["op"]
    try:
        if op == "ctx_create":
            ctx_id = req.get("ctx_id")
            if not isinstance(ctx_id, str) or not 0 < len(ctx_id) <= 64:
                raise ContextError("bad_request", "ctx_id must be a short string")
            with REGISTRY:
                if ctx_id in CONTEXTS:
                    raise ContextError("conflict", "context %s already exists" % ctx_id)
                if len(CONTEXTS) >= MAX_CONTEXTS:
                    raise ContextError("too_many_contexts", "this sandbox already has %d "
                                       "contexts: delete some first" % MAX_CONTEXTS)
                ctx = CONTEXTS[ctx_id] = Context(ctx_id)
            try:
                ctx.start(req)
            except BaseException:
                with REGISTRY:
                    CONTEXTS.pop(ctx_id, None)
                ctx.close()
                raise
            conn.send_json(RESP, ctx.describe())
        elif op == "ctx_list":
            with REGISTRY:
                ctxs = list(CONTEXTS.values())
            conn.send_json(RESP, {"contexts": [c.describe() for c in ctxs]})
        elif op == "ctx_get":
            conn.send_json(RESP, _get(req).describe())
        elif op == "ctx_run":
            _get(req).run(conn, req)
        elif op == "ctx_interrupt":
            conn.send_json(RESP, {"interrupted": _get(req).interrupt()})
        elif op == "ctx_delete":
            with REGISTRY:
                ctx = _get(req)
                del CONTEXTS[ctx.id]
            ctx.close()
            conn.send_json(RESP, {"deleted": True})
        else:
            raise ContextError("bad_request", "unknown op %r" % op)
    except ContextError as e:
        conn.send_json(RESP, {"error": e.code, "message": e.message})
